"""The node's storage: one SQLite file in its data directory."""

from __future__ import annotations

from pathlib import Path

from shared.settings import Settings
from shared.storage.dialects import SqliteDialect
from shared.storage.store import Store

__all__ = ["DB_NAME", "KEY_NAME", "node_store"]

DB_NAME = "mpi.sqlite3"
KEY_NAME = "node.key"


def node_store(settings: Settings) -> Store:
    path = Path(settings.data_dir) / DB_NAME
    return Store(SqliteDialect(str(path), settings.sqlite_synchronous), audit_flush_seconds=settings.audit_flush_seconds)
