"""Control plane: API, scheduler, dispatcher, catalog and dashboard."""
