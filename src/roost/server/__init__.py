"""The control plane: catalog, HTTP API, scheduler, dispatcher and dashboard.

Request flow, one module per step::

    api/admin_sets.py (backup now) or scheduler/loop.py (schedule)  -> a job row, `queued`
    dispatch.py (agent long-poll claims it)                          -> `dispatched`
    api/agent.py + jobs.py (agent reports events)                    -> `running` -> final state
    retention.py (after a successful backup, and nightly)            -> forget old snapshots
"""
