"""Roost: centrally managed, deduplicated, encrypted backup for file servers."""

__version__ = "0.1.0"
