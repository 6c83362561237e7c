"""Migrations build the schema of schema.py on SQLite and PostgreSQL alike, and run once."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import initialise, make_store, registry_of

from shared.matching import index_keys, person_of
from shared.schemas import RegisterIn
from shared.storage import schema
from shared.storage.migrations import MIGRATIONS


def _reflect(conn: sa.Connection) -> dict[str, set[str]]:
    inspector = sa.inspect(conn)
    return {name: {c["name"] for c in inspector.get_columns(name)} for name in inspector.get_table_names()}


def _reflect_indexes(conn: sa.Connection) -> dict[str, set[tuple[str, tuple[str, ...]]]]:
    """Each table's named indexes (not those a primary key or a UNIQUE constraint makes), with their columns."""
    inspector = sa.inspect(conn)
    return {
        name: {
            (str(ix["name"]), tuple(str(c) for c in ix["column_names"]))
            for ix in inspector.get_indexes(name)
            if "duplicates_constraint" not in ix
        }
        for name in inspector.get_table_names()
    }


async def test_migrations_build_schema_py(store_kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    store, _ = make_store(store_kind, tmp_path, request)
    await store.connect()
    try:
        applied = await store.migrate()
        assert applied == [f"{v:04d}_{name}" for v, name, _ in MIGRATIONS]
        assert await store.migrate() == []  # a second run does nothing
        async with store.writer.connect() as conn:
            tables = await conn.run_sync(_reflect)
            indexes = await conn.run_sync(_reflect_indexes)
    finally:
        await store.close()
    expected = {name: {c.name for c in table.columns} for name, table in schema.metadata.tables.items()}
    assert {k: v for k, v in tables.items() if k != "schema_migrations"} == expected
    expected_indexes = {
        name: {(str(ix.name), tuple(c.name for c in ix.columns)) for ix in table.indexes}
        for name, table in schema.metadata.tables.items()
    }
    assert {k: v for k, v in indexes.items() if k != "schema_migrations"} == expected_indexes


async def test_migration_50_re_keys_identities_indexed_by_older_recipes(
    store_kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A database indexed with older blocking keys gets every active identity's current keys."""
    store, _ = make_store(store_kind, tmp_path, request)
    await initialise(store)
    registry = registry_of(store)
    bodies = [
        RegisterIn.model_validate(
            {"first_name": f, "last_name": "Diallo", "date_of_birth": "1990-03-11", "region_code": "DKR", "country_code": "SN"}
        )
        for f in ("Awa", "Fatou", "Moussa")
    ]
    try:
        async with store.write("test") as tx:
            await registry.insert_new(tx, [(b, registry.person(b)) for b in bodies])
        bk = schema.blocking_key
        async with store.writer.begin() as conn:
            # What an older version left: other keys, and no record of migration 50.
            await conn.execute(sa.delete(bk))
            await conn.execute(sa.insert(bk), [{"key": 12345, "identity_pk": pk} for pk in (1, 2, 3)])
            await conn.execute(sa.text("DELETE FROM schema_migrations WHERE version = 50"))
        assert await store.migrate() == ["0050_blocking_keys_v2"]
        async with store.read() as conn:
            stored = {(k, pk) for k, pk in await conn.execute(sa.select(bk.c.key, bk.c.identity_pk))}
            rows = (await conn.execute(sa.select(schema.identity))).all()
        assert stored == {(k, row.pk) for row in rows for k in index_keys(person_of(row))}
    finally:
        await store.close()
