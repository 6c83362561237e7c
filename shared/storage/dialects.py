"""What differs between SQLite (nodes) and PostgreSQL (hub): engines, pragmas, upserts, JSON aggregates.

Nothing else in the code base asks which database it talks to; node/storage.py picks
``SqliteDialect`` and hub/storage.py picks ``PostgresDialect``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.sql.elements import ColumnElement

__all__ = ["Dialect", "PostgresDialect", "SqliteDialect", "read_json_rows"]

_COPY_OVER = 1000  # rows: more go by COPY on PostgreSQL (a bulk import's batches), fewer by one INSERT


class Dialect(Protocol):
    name: str

    def create_engines(self) -> tuple[AsyncEngine, AsyncEngine]:
        """(writer, reader): the writer takes one write at a time, the reader many reads."""
        ...

    def insert_ignore(self, table: sa.Table) -> Any:
        """An INSERT that skips rows whose primary or unique key exists already."""
        ...

    async def bulk_insert(self, conn: AsyncConnection, table: sa.Table, rows: Sequence[dict[str, Any]]) -> None:
        """Insert many rows (dicts with the same keys) the fastest way this database has."""
        ...

    async def insert_returning_pks(self, conn: AsyncConnection, table: sa.Table, rows: Sequence[dict[str, Any]]) -> list[int]:
        """Insert rows of a table with an autoincrement ``pk``; their new pks, in the rows' order."""
        ...

    def json_rows(self, columns: dict[str, ColumnElement[Any]]) -> ColumnElement[Any]:
        """An aggregate: the JSON array of one object ``{name: column}`` per row (no order promised).

        Over no rows it is ``[]`` or NULL, depending on the database; read it with ``read_json_rows``.
        """
        ...


def _pairs(columns: dict[str, ColumnElement[Any]]) -> list[ColumnElement[Any]]:
    # Names are the code's own constants, written as SQL literals: a bound parameter would
    # have no type for PostgreSQL's json_build_object(VARIADIC "any").
    return [x for name, column in columns.items() for x in (sa.literal_column(f"'{name}'"), column)]


def read_json_rows(value: Any) -> list[dict[str, Any]]:
    """What ``Dialect.json_rows`` gave: text on SQLite, decoded already by psycopg, NULL over no rows."""
    if value is None:
        return []
    if isinstance(value, (str, bytes)):
        return list(json.loads(value))
    return list(value)


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
            hide_parameters=True,  # an error's text must not carry names, birth dates, phones
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
            # Blocking keys are random 64-bit integers: a registration touches a dozen leaf
            # pages all over the index. 64 MiB of page cache per connection, and reads through
            # a shared memory map, keep those pages in memory at a million identities.
            cursor.execute("PRAGMA cache_size=-65536")
            cursor.execute("PRAGMA mmap_size=268435456")
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

    async def bulk_insert(self, conn: AsyncConnection, table: sa.Table, rows: Sequence[dict[str, Any]]) -> None:
        if rows:  # sqlite3's executemany loops in C
            await conn.execute(sa.insert(table), list(rows))

    async def insert_returning_pks(self, conn: AsyncConnection, table: sa.Table, rows: Sequence[dict[str, Any]]) -> list[int]:
        return await _insert_returning(conn, table, rows)

    def json_rows(self, columns: dict[str, ColumnElement[Any]]) -> ColumnElement[Any]:
        return sa.func.json_group_array(sa.func.json_object(*_pairs(columns)))


class PostgresDialect:
    """PostgreSQL through psycopg 3; writers and readers share one pool."""

    name = "postgresql"

    def __init__(self, url: str) -> None:
        self.url = _async_url(url)

    def create_engines(self) -> tuple[AsyncEngine, AsyncEngine]:
        engine = create_async_engine(self.url, pool_size=8, max_overflow=4, pool_pre_ping=True, hide_parameters=True)
        return engine, engine

    def insert_ignore(self, table: sa.Table) -> Any:
        return postgresql.insert(table).on_conflict_do_nothing()

    async def bulk_insert(self, conn: AsyncConnection, table: sa.Table, rows: Sequence[dict[str, Any]]) -> None:
        """COPY, in the transaction of ``conn``: several times faster than INSERTs for a backlog."""
        if not rows:
            return
        columns = list(rows[0])
        raw = (await conn.get_raw_connection()).driver_connection
        assert raw is not None
        names = ", ".join(f'"{c}"' for c in columns)
        async with raw.cursor() as cursor, cursor.copy(f'COPY "{table.name}" ({names}) FROM STDIN') as copy:
            for row in rows:
                await copy.write_row([row[c] for c in columns])

    async def insert_returning_pks(self, conn: AsyncConnection, table: sa.Table, rows: Sequence[dict[str, Any]]) -> list[int]:
        """A few rows: one INSERT ... RETURNING. Many (a bulk import): their pks from the
        sequence in one statement, then COPY."""
        if len(rows) <= _COPY_OVER:
            return await _insert_returning(conn, table, rows)
        pks = list(
            (
                await conn.execute(
                    sa.text("SELECT nextval(pg_get_serial_sequence(:table, 'pk')) FROM generate_series(1, :n)"),
                    {"table": table.name, "n": len(rows)},
                )
            ).scalars()
        )
        await self.bulk_insert(conn, table, [{"pk": pk, **row} for pk, row in zip(pks, rows, strict=True)])
        return [int(pk) for pk in pks]

    def json_rows(self, columns: dict[str, ColumnElement[Any]]) -> ColumnElement[Any]:
        return sa.func.json_agg(sa.func.json_build_object(*_pairs(columns)))


async def _insert_returning(conn: AsyncConnection, table: sa.Table, rows: Sequence[dict[str, Any]]) -> list[int]:
    if not rows:
        return []
    result = await conn.execute(sa.insert(table).returning(table.c.pk, sort_by_parameter_order=True), list(rows))
    return [int(pk) for pk in result.scalars().all()]


def _async_url(url: str) -> str:
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    raise ValueError(f"not a PostgreSQL URL: {url!r}")
