"""shared/api package."""
