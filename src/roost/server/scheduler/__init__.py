"""Scheduler: pure policy decisions (schedule, window, dispatch, level, retries) and its loop."""
