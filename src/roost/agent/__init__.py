"""The agent on a file server: receives jobs, snapshots the sources, runs the engine, reports."""
