"""The hub's storage: PostgreSQL through psycopg 3, and its signing key sealed in it."""

from __future__ import annotations

from nacl.signing import SigningKey

from shared.crypto import SEALED_META, open_signing_key, sealing_key
from shared.settings import Settings, SettingsError
from shared.storage.dialects import PostgresDialect
from shared.storage.store import Store

__all__ = ["hub_signing_key", "hub_store"]


def hub_store(settings: Settings) -> Store:
    if not settings.database_url:
        raise SettingsError("the hub needs --database-url or MPI_DATABASE_URL (postgresql://...)")
    try:
        dialect = PostgresDialect(settings.database_url)
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
    return Store(dialect, audit_flush_seconds=settings.audit_flush_seconds)


def hub_signing_key(meta: dict[str, str], settings: Settings) -> SigningKey:
    """The hub's signing key, opened with the sealing key of the environment or the key file."""
    sealing = sealing_key(settings.hub_key_secret, settings.hub_key_file)[0] if SEALED_META in meta else None
    return open_signing_key(meta, sealing)
