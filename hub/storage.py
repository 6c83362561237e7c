"""The hub's storage: PostgreSQL through psycopg 3."""

from __future__ import annotations

from shared.settings import Settings, SettingsError
from shared.storage.dialects import PostgresDialect
from shared.storage.store import Store

__all__ = ["hub_store"]


def hub_store(settings: Settings) -> Store:
    if not settings.database_url:
        raise SettingsError("the hub needs --database-url or MPI_DATABASE_URL (postgresql://...)")
    try:
        dialect = PostgresDialect(settings.database_url)
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
    return Store(dialect, audit_flush_seconds=settings.audit_flush_seconds)
