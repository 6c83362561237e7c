"""Upgrades: every committed fixture database (tests/fixtures/upgrade, made by
scripts/make_upgrade_fixture.py at some schema version) migrates to today's schema, and its
data reads back through a node serving it exactly as the API answered when it was written.

A fixture is never remade: a later migration that cannot carry an old database forward fails here.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from cluster import Server, call, cli, free_port
from conftest import pg_url

from shared.storage import schema
from shared.storage.dialects import PostgresDialect, SqliteDialect
from shared.storage.migrations import MIGRATIONS
from shared.storage.store import Store

FIXTURES = sorted((Path(__file__).resolve().parent / "fixtures" / "upgrade").glob("node-v*.sqlite3"))


def _shape(conn: sa.Connection) -> dict[str, Any]:
    """Tables with their columns (name, type, nullable, default), primary key, indexes and uniques."""
    inspector = sa.inspect(conn)
    out: dict[str, Any] = {}
    for table in inspector.get_table_names():
        out[table] = {
            "columns": [(c["name"], str(c["type"]), c["nullable"], str(c.get("default"))) for c in inspector.get_columns(table)],
            "pk": inspector.get_pk_constraint(table)["constrained_columns"],
            "indexes": sorted((i["name"], tuple(i["column_names"]), bool(i["unique"])) for i in inspector.get_indexes(table)),
            "uniques": sorted(tuple(u["column_names"]) for u in inspector.get_unique_constraints(table)),
        }
    return out


async def _migrated_shape(path: Path) -> tuple[list[str], dict[str, Any]]:
    store = Store(SqliteDialect(str(path)), audit_flush_seconds=0.05)
    await store.connect()
    try:
        applied = await store.migrate()
        async with store.writer.connect() as conn:
            return applied, await conn.run_sync(_shape)
    finally:
        await store.close()


def test_there_is_a_fixture() -> None:
    assert FIXTURES, "tests/fixtures/upgrade holds no fixture: run scripts/make_upgrade_fixture.py"


@pytest.mark.parametrize("fixture", FIXTURES, ids=lambda p: p.stem)
async def test_a_fixture_migrates_to_the_schema_of_today(fixture: Path, tmp_path: Path) -> None:
    expected = json.loads(fixture.with_suffix(".json").read_text())
    shutil.copyfile(fixture, tmp_path / "old.sqlite3")
    applied, old = await _migrated_shape(tmp_path / "old.sqlite3")
    assert applied == [f"{v:04d}_{name}" for v, name, _ in MIGRATIONS if v > expected["schema_version"]]
    _, fresh = await _migrated_shape(tmp_path / "fresh.sqlite3")  # every migration from nothing
    assert old == fresh
    declared = sa.create_engine(f"sqlite:///{tmp_path / 'declared.sqlite3'}")
    try:
        schema.metadata.create_all(declared)
        with declared.connect() as conn:
            assert _without_migrations(old) == _shape(conn)  # types, nullability, defaults, keys, indexes
    finally:
        declared.dispose()


def _without_migrations(shape: dict[str, Any]) -> dict[str, Any]:
    return {name: table for name, table in shape.items() if name != "schema_migrations"}


@pytest.mark.parametrize("fixture", FIXTURES, ids=lambda p: p.stem)
def test_a_fixtures_data_reads_back_through_a_node_and_it_writes_on(fixture: Path, tmp_path: Path) -> None:
    expected = json.loads(fixture.with_suffix(".json").read_text())
    data = tmp_path / "node"
    data.mkdir(mode=0o700)
    shutil.copyfile(fixture, data / "mpi.sqlite3")
    node = Server("node", ["--data-dir", str(data)], free_port(), token=expected["token"],
                  env={"MPI_SYNC_INTERVAL_SECONDS": "3600"})
    node.start()  # serve migrates
    try:
        status, health = call(node.url, "GET", "/health")
        assert status == 200 and health["node_id"] == expected["node_id"], health
        assert health["sync"]["pending_changes"] == expected["last_seq"]
        for mpi_id, then in expected["identities"].items():
            status, now = node.call("GET", f"/mpi/{mpi_id}")
            assert status == 200, (mpi_id, now)
            # What the API answered then, it answers now (new fields may be added, none changed).
            assert {k: now.get(k) for k in then} == then, mpi_id
        for mpi_id, then in expected["cards"].items():
            status, now = node.call("GET", f"/mpi/{mpi_id}/card")
            assert status == 200 and {k: now.get(k) for k in then} == then, (mpi_id, now)
        status, verified = call(node.url, "GET", f"/mpi/verify/{expected['verify']['token']}")
        assert status == 200 and verified["status"] == expected["verify"]["answer"]["status"], verified
        merged = expected["merged"]
        status, now = node.call("GET", f"/mpi/{merged['source']}")
        assert status == 200 and now["mpi_id"] == merged["target"] and now["merged_from"] == merged["source"]
        status, found = node.call("GET", "/mpi/search?q=diallo")
        assert status == 200 and found["total"] >= 1
        status, review = node.call("GET", "/audit?limit=1")
        assert status == 200, review
        # It writes on: a new identity, its change chained after the old ones.
        status, made = node.call("POST", "/mpi/register", {
            "first_name": "Khady", "last_name": "Fall", "date_of_birth": "2001-02-03", "gender": "F",
            "region_code": "DKR", "country_code": "SN"})
        assert status == 201, made
        status, health = call(node.url, "GET", "/health")
        assert health["sync"]["pending_changes"] > expected["last_seq"]
    finally:
        node.stop()
    db = sqlite3.connect(data / "mpi.sqlite3")
    try:
        assert db.execute("SELECT count(*) FROM review_item").fetchone()[0] == expected["review_items"] >= 1
        chain = db.execute("SELECT seq, prev_hash, hash FROM change_log ORDER BY seq").fetchall()
    finally:
        db.close()
    assert len(chain) > expected["changes"]
    assert all(chain[k][1] == chain[k - 1][2] for k in range(1, len(chain)))


# -- the hub: a pg_dump of an older schema, and a node enrolled with it -----------------------------

HUB_FIXTURES = sorted((Path(__file__).resolve().parent / "fixtures" / "upgrade").glob("hub-v*.sql"))


def _load_dump(dump: Path, url: str) -> None:
    done = subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-f", str(dump)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr


async def _pg_shape(url: str) -> tuple[list[str], dict[str, Any]]:
    store = Store(PostgresDialect(url), audit_flush_seconds=0.05)
    await store.connect()
    try:
        applied = await store.migrate()
        async with store.writer.connect() as conn:
            return applied, await conn.run_sync(_shape)
    finally:
        await store.close()


def test_there_is_a_hub_fixture() -> None:
    assert HUB_FIXTURES, "tests/fixtures/upgrade holds no hub fixture: run scripts/make_upgrade_fixture.py --hub"


@pytest.mark.parametrize("fixture", HUB_FIXTURES, ids=lambda p: p.stem)
async def test_a_hub_dump_migrates_to_the_schema_of_today(fixture: Path, pg_database: str, pg_server: str) -> None:
    expected = json.loads(fixture.with_suffix(".json").read_text())
    _load_dump(fixture, pg_database)
    applied, old = await _pg_shape(pg_database)
    assert applied == [f"{v:04d}_{name}" for v, name, _ in MIGRATIONS if v > expected["schema_version"]]
    fresh_name, declared_name = (f"mpi_test_{uuid.uuid4().hex[:12]}" for _ in range(2))
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{fresh_name}"')
        conn.execute(f'CREATE DATABASE "{declared_name}"')
    try:
        _, fresh = await _pg_shape(pg_url(fresh_name))  # every migration from nothing
        declared = sa.create_engine(pg_url(declared_name).replace("postgresql://", "postgresql+psycopg://", 1))
        try:
            schema.metadata.create_all(declared)
            with declared.connect() as conn:
                as_declared = _shape(conn)
        finally:
            declared.dispose()
    finally:
        with psycopg.connect(pg_server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{fresh_name}" WITH (FORCE)')
            conn.execute(f'DROP DATABASE IF EXISTS "{declared_name}" WITH (FORCE)')
    assert old == fresh
    assert _without_migrations(old) == as_declared  # types, nullability, defaults, keys, indexes


@pytest.mark.parametrize("fixture", HUB_FIXTURES, ids=lambda p: p.stem)
def test_an_upgraded_hub_serves_its_data_and_its_node_syncs_on(fixture: Path, pg_database: str, tmp_path: Path) -> None:
    expected = json.loads(fixture.with_suffix(".json").read_text())
    _load_dump(fixture, pg_database)
    key = tmp_path / "hub.key"
    shutil.copyfile(fixture.with_suffix(".key"), key)
    key.chmod(0o600)
    hub_env = {"MPI_HUB_KEY_FILE": str(key), "MPI_DEDUP_INTERVAL_SECONDS": "0"}
    cli("hub", "migrate", "--database-url", pg_database, env=hub_env)
    hub = Server("hub", ["--database-url", pg_database], free_port(), token=expected["hub_token"], env=hub_env)
    data = tmp_path / "node"
    data.mkdir(mode=0o700)
    shutil.copyfile(fixture.with_suffix(".node.sqlite3"), data / "mpi.sqlite3")
    shutil.copyfile(fixture.with_suffix(".node.key"), data / "node.key")
    (data / "node.key").chmod(0o600)
    db = sqlite3.connect(data / "mpi.sqlite3")
    try:  # the hub listens on another port than when the fixture was made
        with db:
            db.execute("UPDATE node_meta SET value = ? WHERE key = 'hub_url'", (hub.url,))
    finally:
        db.close()
    node = Server("node", ["--data-dir", str(data)], free_port(), token=expected["node_token"],
                  env={"MPI_SYNC_INTERVAL_SECONDS": "3600"})
    hub.start()
    try:
        for mpi_id, then in expected["identities"].items():
            status, now = hub.call("GET", f"/mpi/{mpi_id}")
            assert status == 200 and {k: now.get(k) for k in then} == then, (mpi_id, now)
        merged = expected["merged"]
        status, now = hub.call("GET", f"/mpi/{merged['source']}")
        assert status == 200 and now["mpi_id"] == merged["target"]
        status, review = hub.call("GET", "/review")
        assert status == 200 and review["counts"] == expected["review"], review
        status, nodes = hub.call("GET", "/sync/nodes")
        assert [{k: n[k] for k in expected["nodes"][0]} for n in nodes["nodes"]] == expected["nodes"]

        node.start()
        try:
            for mpi_id, then in expected["at_node"].items():
                status, now = node.call("GET", f"/mpi/{mpi_id}")
                assert status == 200 and {k: now.get(k) for k in then} == then, (mpi_id, now)
            status, made = node.call("POST", "/mpi/register", {
                "first_name": "Khady", "last_name": "Fall", "date_of_birth": "2001-02-03", "gender": "F",
                "region_code": "DKR", "country_code": "SN"})
            assert status == 201, made
            first = next(iter(expected["at_node"]))
            assert hub.call("PATCH", f"/mpi/{first}", {"phone_number": "+221779990000"})[0] == 200
            status, moved = node.call("POST", "/sync/now")
            assert status == 200, moved
            assert hub.call("GET", f"/mpi/{made['mpi_id']}")[0] == 200  # pushed
            assert node.call("GET", f"/mpi/{first}")[1]["phone_number"] == "+221779990000"  # pulled
            status, state = node.call("GET", "/sync/status")
            assert state["pending_changes"] == 0 and state["blocked"] is None, state
        finally:
            node.stop()
    finally:
        hub.stop()
