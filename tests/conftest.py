"""Fixtures: real stores (a SQLite file under tmp_path, a fresh PostgreSQL database), real servers.

The PostgreSQL server is the one at MPI_TEST_PG (default 127.0.0.1:5432, user postgres);
when it cannot be reached every test that needs it fails, loudly: nothing is skipped.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from aiohttp.test_utils import TestClient

from shared import compose
from shared.app import build_app
from shared.auth import Auth
from shared.registry import Registry
from shared.routes import REVIEW_ROUTES
from shared.settings import Settings
from shared.storage.dialects import PostgresDialect, SqliteDialect
from shared.storage.store import Store

PG_ADMIN = os.environ.get("MPI_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def pg_url(dbname: str) -> str:
    return PG_ADMIN.rsplit("/", 1)[0] + "/" + dbname


@pytest.fixture(scope="session")
def pg_server() -> str:
    try:
        with psycopg.connect(PG_ADMIN, connect_timeout=5) as conn:
            conn.execute("select 1")
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN}: {exc}", pytrace=False)
    return PG_ADMIN


@pytest.fixture
def pg_database(pg_server: str) -> Iterator[str]:
    """A new, empty PostgreSQL database for one test, dropped afterwards."""
    name = f"mpi_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield pg_url(name)
    finally:
        with psycopg.connect(pg_server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def make_store(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> tuple[Store, Settings]:
    if kind == "sqlite":
        settings = Settings(data_dir=str(tmp_path), audit_flush_seconds=0.05)
        return Store(SqliteDialect(str(tmp_path / "mpi.sqlite3")), audit_flush_seconds=0.05), settings
    url = request.getfixturevalue("pg_database")
    settings = Settings(database_url=url, audit_flush_seconds=0.05)
    return Store(PostgresDialect(url), audit_flush_seconds=0.05), settings


async def initialise(store: Store, region: str = "DKR", node_number: int = 0) -> None:
    await store.connect()
    await store.migrate()
    await store.initialise(
        {
            "role": "node",
            "node_id": f"node-{uuid.uuid4().hex[:16]}",
            "node_number": str(node_number),
            "country": "SN",
            "region": region,
            "key_id": "test",
        }
    )
    await store.load_state()


def registry_of(store: Store, candidate_limit: int = 30) -> Registry:
    """A registry on ``store`` with its own (empty) name frequencies and the real matcher."""
    return compose.registry_of(store, Settings(matcher="learned", candidate_limit=candidate_limit))


@dataclass
class Api:
    """A client on a real server, with one token for each role."""

    client: TestClient[Any, Any]
    tokens: dict[str, str]
    store: Store

    def _headers(self, role: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"} if role else {}

    async def call(self, method: str, path: str, *, role: str | None = "registrar", **kwargs: Any) -> tuple[int, Any]:
        headers = {**self._headers(role), **kwargs.pop("headers", {})}
        async with self.client.request(method, path, headers=headers, **kwargs) as response:
            assert response.content_type == "application/json", await response.text()
            return response.status, await response.json()

    async def get(self, path: str, **kwargs: Any) -> tuple[int, Any]:
        return await self.call("GET", path, **kwargs)

    async def post(self, path: str, body: Any = None, **kwargs: Any) -> tuple[int, Any]:
        return await self.call("POST", path, json=body, **kwargs)

    async def patch(self, path: str, body: Any = None, **kwargs: Any) -> tuple[int, Any]:
        return await self.call("PATCH", path, json=body, **kwargs)

    async def register(self, **fields: Any) -> str:
        body = {"region_code": "DKR", "country_code": "SN", **fields}
        status, data = await self.post("/mpi/register", body)
        assert status == 201, data
        return str(data["mpi_id"])


@pytest.fixture(params=["sqlite", "postgres"])
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def api(store_kind: str, tmp_path: Path, request: pytest.FixtureRequest, aiohttp_client: Any) -> AsyncIterator[Api]:
    """The whole API on a real server, over SQLite and over PostgreSQL."""
    store, settings = make_store(store_kind, tmp_path, request)
    await initialise(store)
    auth = Auth(store)
    tokens = {role: await auth.create_token(role, f"test-{role}") for role in ("registrar", "supervisor", "admin")}
    await store.close()
    fresh, _ = make_store(store_kind, tmp_path, request)
    app = build_app(settings, fresh, role="node", extra_routes=REVIEW_ROUTES)
    client = await aiohttp_client(app)
    yield Api(client, tokens, fresh)
    await client.close()  # shut the app down (flushing its audit) before its database is dropped


@pytest.fixture
def hub(pg_database: str) -> Iterator[Any]:
    """A hub process on a fresh PostgreSQL database (the sync tests' cluster)."""
    from cluster import Hub

    server = Hub(pg_database)
    server.start()
    yield server
    server.stop()


AMINATA = {
    "first_name": "Aminata",
    "last_name": "Diallo",
    "date_of_birth": "1995-03-15",
    "gender": "F",
    "region_code": "DKR",
    "country_code": "SN",
    "phone_number": "+221771234567",
    "external_ids": {"dhis2_uid": "abcDEF123gh"},
}
