"""What differs between SQLite (nodes) and PostgreSQL (hub): engines, pragmas, upserts.

Nothing else in the code base asks which database it talks to; node/storage.py picks
``SqliteDialect`` and hub/storage.py picks ``PostgresDialect``.
"""

from __future__ import annotations

from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

__all__ = ["Dialect", "PostgresDialect", "SqliteDialect"]


class Dialect(Protocol):
    name: str

    def create_engines(self) -> tuple[AsyncEngine, AsyncEngine]:
        """(writer, reader): the writer takes one write at a time, the reader many reads."""
        ...

    def insert_ignore(self, table: sa.Table) -> Any:
        """An INSERT that skips rows whose primary or unique key exists already."""
        ...


class SqliteDialect:
    """One SQLite file in WAL mode: one writer beginning with BEGIN IMMEDIATE, several readers."""

    name = "sqlite"

    def __init__(self, path: str, synchronous: str = "FULL") -> None:
        self.path = path
        self.synchronous = synchronous.upper()

    def _engine(self, *, immediate: bool, pool_size: int) -> AsyncEngine:
        engine = create_async_engine(
            f"sqlite+aiosqlite:///{self.path}",
            pool_size=pool_size,
            max_overflow=0,
            connect_args={"timeout": 30},
        )
        synchronous = self.synchronous

        @event.listens_for(engine.sync_engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            # Take transaction control from the driver so that BEGIN is ours to choose.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA synchronous={synchronous}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA cache_size=-32000")
            cursor.execute("PRAGMA temp_store=MEMORY")
            cursor.close()

        begin = "BEGIN IMMEDIATE" if immediate else "BEGIN"

        @event.listens_for(engine.sync_engine, "begin")
        def _on_begin(conn: Any) -> None:
            conn.exec_driver_sql(begin)

        return engine

    def create_engines(self) -> tuple[AsyncEngine, AsyncEngine]:
        return self._engine(immediate=True, pool_size=1), self._engine(immediate=False, pool_size=4)

    def insert_ignore(self, table: sa.Table) -> Any:
        return sqlite.insert(table).on_conflict_do_nothing()


class PostgresDialect:
    """PostgreSQL through psycopg 3; writers and readers share one pool."""

    name = "postgresql"

    def __init__(self, url: str) -> None:
        self.url = _async_url(url)

    def create_engines(self) -> tuple[AsyncEngine, AsyncEngine]:
        engine = create_async_engine(self.url, pool_size=8, max_overflow=4, pool_pre_ping=True)
        return engine, engine

    def insert_ignore(self, table: sa.Table) -> Any:
        return postgresql.insert(table).on_conflict_do_nothing()


def _async_url(url: str) -> str:
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    raise ValueError(f"not a PostgreSQL URL: {url!r}")
