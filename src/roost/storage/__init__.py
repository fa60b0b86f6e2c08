"""Storage backends: where repository objects live (local directory, memory, S3)."""
