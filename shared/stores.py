"""Where each role keeps its data: the node's SQLite file and key files, the hub's PostgreSQL and sealed key.

``store_of`` is what the composition root (``shared/compose.py``) opens; ``node/storage.py``
and ``hub/storage.py`` re-export the role's own names.
"""

from __future__ import annotations

from pathlib import Path

from nacl.signing import SigningKey

from .crypto import SEALED_META, key_id, load_key_file, open_signing_key, sealing_key
from .settings import Settings, SettingsError
from .storage.dialects import PostgresDialect, SqliteDialect
from .storage.store import Store

__all__ = [
    "DB_NAME", "KEY_NAME", "ROLES", "hub_signing_key", "hub_store", "keep_private", "load_keys", "node_store", "store_of",
]

ROLES = ("node", "hub")
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
    """The node's store: one SQLite file in its data directory."""
    folder = Path(settings.data_dir)
    keep_private(folder)
    path = folder / DB_NAME
    return Store(SqliteDialect(str(path), settings.sqlite_synchronous), audit_flush_seconds=settings.audit_flush_seconds)


def hub_store(settings: Settings) -> Store:
    """The hub's store: PostgreSQL through psycopg 3."""
    if not settings.database_url:
        raise SettingsError("the hub needs --database-url or MPI_DATABASE_URL (postgresql://...)")
    try:
        dialect = PostgresDialect(settings.database_url)
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
    return Store(dialect, audit_flush_seconds=settings.audit_flush_seconds)


def store_of(settings: Settings, role: str) -> Store:
    """The role's store (not connected yet)."""
    if role == "node":
        return node_store(settings)
    if role == "hub":
        return hub_store(settings)
    raise ValueError(f"unknown role {role!r}: {' or '.join(ROLES)}")


def load_keys(data_dir: str) -> dict[str, SigningKey]:
    """Every signing key of the node (``node.key`` and those it rotated away from), by key id."""
    keys = {}
    for path in sorted(Path(data_dir).glob(KEY_NAME + "*")):
        if path.suffix == ".tmp":
            continue
        key = load_key_file(path)
        keys[key_id(key.verify_key)] = key
    return keys


def hub_signing_key(meta: dict[str, str], settings: Settings) -> SigningKey:
    """The hub's signing key, opened with the sealing key of the environment or the key file."""
    sealing = sealing_key(settings.hub_key_secret, settings.hub_key_file)[0] if SEALED_META in meta else None
    return open_signing_key(meta, sealing)
