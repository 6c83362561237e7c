"""shared/storage package."""
