"""shared/sync package."""
