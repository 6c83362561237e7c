"""Migrations build the schema of schema.py on SQLite and PostgreSQL alike, and run once."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import make_store

from shared.storage import schema
from shared.storage.migrations import MIGRATIONS


def _reflect(conn: sa.Connection) -> dict[str, set[str]]:
    inspector = sa.inspect(conn)
    return {name: {c["name"] for c in inspector.get_columns(name)} for name in inspector.get_table_names()}


async def test_migrations_build_schema_py(store_kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    store, _ = make_store(store_kind, tmp_path, request)
    await store.connect()
    try:
        applied = await store.migrate()
        assert applied == [f"{v:04d}_{name}" for v, name, _ in MIGRATIONS]
        assert await store.migrate() == []  # a second run does nothing
        async with store.writer.connect() as conn:
            tables = await conn.run_sync(_reflect)
    finally:
        await store.close()
    expected = {name: {c.name for c in table.columns} for name, table in schema.metadata.tables.items()}
    assert {k: v for k, v in tables.items() if k != "schema_migrations"} == expected
