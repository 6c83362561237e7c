"""The node's storage: one SQLite file in its data directory, and its key files (``shared/stores.py``)."""

from __future__ import annotations

from shared.stores import DB_NAME, KEY_NAME, keep_private, load_keys, node_store

__all__ = ["DB_NAME", "KEY_NAME", "keep_private", "load_keys", "node_store"]
