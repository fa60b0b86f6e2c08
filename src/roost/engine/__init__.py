"""Backup engine: pure decision logic shared by the agent, server and CLI."""
