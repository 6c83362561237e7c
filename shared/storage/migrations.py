"""Schema migrations: one ordered list, each applied in the same transaction as its record.

A migration is a function of a synchronous Connection (run through ``run_sync``) so the same
code serves SQLite and PostgreSQL. Migration 1 creates the tables of version 1 of
``schema.py``; every later change to ``schema.py`` gets its own numbered migration here,
written as explicit DDL, never by editing an applied one.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from . import schema

__all__ = ["MIGRATIONS", "applied", "migrate"]

_migrations_table = sa.Table(
    "schema_migrations",
    sa.MetaData(),
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("name", sa.String(100), nullable=False),
)

_V1_TABLES = [
    schema.identity,
    schema.name_token,
    schema.blocking_key,
    schema.external_id,
    schema.programme,
    schema.card,
    schema.api_token,
    schema.audit_log,
    schema.change_log,
    schema.node_meta,
    schema.review_item,
    schema.import_progress,
]


def _v1_initial(conn: Connection) -> None:
    schema.metadata.create_all(conn, tables=_V1_TABLES)


_V2_TABLES = [
    schema.card_status,
    schema.merge_link,
    schema.sync_node,
    schema.sync_key,
    schema.sync_batch,
    schema.sync_fork,
    schema.sync_feed,
    schema.sync_refusal,
]


def _v2_sync(conn: Connection) -> None:
    schema.metadata.create_all(conn, tables=_V2_TABLES)


MIGRATIONS: list[tuple[int, str, Callable[[Connection], None]]] = [
    (1, "initial", _v1_initial),
    (2, "sync", _v2_sync),
]


def _applied(conn: Connection) -> set[int]:
    _migrations_table.create(conn, checkfirst=True)
    return {row[0] for row in conn.execute(sa.select(_migrations_table.c.version))}


async def applied(engine: AsyncEngine) -> set[int]:
    """Versions already applied to this database."""
    async with engine.begin() as conn:
        return await conn.run_sync(_applied)


async def migrate(engine: AsyncEngine) -> list[str]:
    """Apply what is missing, each migration in its own transaction; returns what was applied."""
    done: list[str] = []
    for version, name, step in MIGRATIONS:
        async with engine.begin() as conn:
            if version in await conn.run_sync(_applied):
                continue
            await conn.run_sync(step)
            await conn.execute(sa.insert(_migrations_table).values(version=version, name=name))
            done.append(f"{version:04d}_{name}")
    return done
