"""shared/matching package."""
