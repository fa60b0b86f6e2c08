"""Wire schemas shared by the server and the agent (JSON over HTTPS)."""
