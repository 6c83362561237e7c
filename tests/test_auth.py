"""Roles: registrar < supervisor < admin, metrics beside them; verify is public; reads and writes are audited."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa
from conftest import AMINATA, Api

from shared.errors import Unauthorized
from shared.storage import schema as t


async def test_each_role_can_register(api: Api) -> None:
    for role in ("registrar", "supervisor", "admin"):
        status, _ = await api.post(
            "/mpi/register", {**AMINATA, "first_name": f"Awa{role}", "external_ids": {}, "force_create": True}, role=role
        )
        assert status == 201


async def test_a_revoked_token_stops_working(api: Api) -> None:
    from shared.auth import Auth

    auth = Auth(api.store)
    token = await auth.create_token("registrar", "temp")
    headers = {"Authorization": f"Bearer {token}"}
    status, _ = await api.call("GET", "/mpi/qr-config", role=None, headers=headers)
    assert status == 200
    await auth.revoke_token("temp")
    with pytest.raises(Unauthorized):
        await auth.authenticate(token)


async def test_reads_and_writes_are_audited(api: Api) -> None:
    mpi_id = await api.register(**AMINATA)
    await api.get(f"/mpi/{mpi_id}")
    await api.get("/mpi/search", params={"q": "diallo"})
    await api.patch(f"/mpi/{mpi_id}", {"gender": "F", "region_code": "THI"})
    await asyncio.sleep(0.3)  # reads are written in batches every audit_flush_seconds
    async with api.store.read() as conn:
        rows = (await conn.execute(sa.select(t.audit_log.c.action, t.audit_log.c.actor, t.audit_log.c.mpi_id))).all()
    actions = [r.action for r in rows]
    assert {"register", "read", "search", "patch"} <= set(actions)
    assert all(r.actor == "registrar:test-registrar" for r in rows if r.action != "token_create")
    assert any(r.action == "read" and r.mpi_id == mpi_id for r in rows)


async def test_health_and_openapi_are_public(api: Api) -> None:
    status, body = await api.get("/health", role=None)
    assert status == 200 and body["status"] == "ok"
    from shared.matching import default_model

    assert body["matcher"] == default_model().version
    status, doc = await api.get("/openapi.json", role=None)
    assert status == 200 and doc["openapi"].startswith("3.")
    from shared.routes import ROUTES

    for route in ROUTES:
        assert route.method.lower() in doc["paths"][route.path]
    assert doc["paths"]["/mpi/verify/{token}"]["get"]["security"] == []


def test_the_metrics_role_stands_beside_the_others() -> None:
    from shared.auth import ROLES, Principal

    may = {(who, what): Principal("x", who).may(what) for who in ROLES for what in ROLES}
    assert {what for (who, what), ok in may.items() if who == "metrics" and ok} == {"metrics"}
    assert {who for (who, what), ok in may.items() if what == "metrics" and ok} == {"metrics", "admin"}
    assert may["admin", "registrar"] and may["supervisor", "registrar"] and not may["registrar", "supervisor"]


async def test_a_metrics_token_reads_no_person(api: Api) -> None:
    from shared.auth import Auth

    mpi_id = await api.register(**AMINATA)
    headers = {"Authorization": f"Bearer {await Auth(api.store).create_token('metrics', 'prometheus')}"}
    for path in (f"/mpi/{mpi_id}", "/mpi/search?q=diallo", "/mpi/qr-config", "/audit"):
        status, body = await api.call("GET", path, role=None, headers=headers)
        assert status == 403 and body["status"] == "forbidden", (path, body)
    async with api.client.get("/metrics", headers=headers) as response:
        assert response.status == 200 and response.content_type == "text/plain"
        assert mpi_id not in await response.text()


async def test_closing_a_store_mid_flush_loses_no_read_audit(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """close() stops the periodic flush while it may be inside BEGIN IMMEDIATE: the flush ends
    cleanly, close() writes the rest, and every read recorded before close() is in the log
    (a cancel inside the BEGIN once left the write lock held and close() failed "locked")."""
    import random

    from conftest import initialise

    from shared.storage.dialects import SqliteDialect
    from shared.storage.store import Store

    path = str(tmp_path / "mpi.sqlite3")
    first = Store(SqliteDialect(path))
    await initialise(first)
    await first.close()
    rng = random.Random(5)
    recorded = 0
    for _ in range(60):
        store = Store(SqliteDialect(path), audit_flush_seconds=0.001)
        await store.open()
        for _ in range(10):
            store.audit_read("test", "read")
            recorded += 1
            await asyncio.sleep(rng.random() * 0.002)
        await asyncio.wait_for(store.close(), 20)
    last = Store(SqliteDialect(path))
    await last.connect()
    async with last.read() as conn:
        written = (await conn.execute(sa.select(sa.func.count()).where(t.audit_log.c.action == "read"))).scalar()
    await last.writer.dispose()
    assert written == recorded
