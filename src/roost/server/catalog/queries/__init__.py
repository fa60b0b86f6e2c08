"""Every SQL statement of the server, grouped by what it is about. Nothing here commits."""
