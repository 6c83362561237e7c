"""The node's own routes: sync status and sync-now."""
