"""The node's storage: one SQLite file in its data directory."""

from __future__ import annotations

from pathlib import Path

from nacl.signing import SigningKey

from shared.crypto import key_id, load_key_file
from shared.settings import Settings
from shared.storage.dialects import SqliteDialect
from shared.storage.store import Store

__all__ = ["DB_NAME", "KEY_NAME", "keep_private", "load_keys", "node_store"]

DB_NAME = "mpi.sqlite3"
KEY_NAME = "node.key"


def keep_private(folder: Path) -> None:
    """The node's folder is its user's alone (0700), and so are the database and its journals (0600).

    The process runs with umask 077 (``node.cli.main``), so what it creates is private from
    the start; this also closes a folder made by an older version or by hand.
    """
    if folder.is_dir():
        folder.chmod(0o700)
        for path in folder.glob(DB_NAME + "*"):
            if path.is_file() and not path.is_symlink():
                path.chmod(0o600)


def node_store(settings: Settings) -> Store:
    folder = Path(settings.data_dir)
    keep_private(folder)
    path = folder / DB_NAME
    return Store(SqliteDialect(str(path), settings.sqlite_synchronous), audit_flush_seconds=settings.audit_flush_seconds)


def load_keys(data_dir: str) -> dict[str, SigningKey]:
    """Every signing key of the node (``node.key`` and those it rotated away from), by key id."""
    keys = {}
    for path in sorted(Path(data_dir).glob(KEY_NAME + "*")):
        if path.suffix == ".tmp":
            continue
        key = load_key_file(path)
        keys[key_id(key.verify_key)] = key
    return keys
