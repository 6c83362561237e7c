"""A change the hub cannot apply is set aside with its reason; the node's sync goes on."""

from __future__ import annotations

import asyncio
from pathlib import Path

from cluster import Hub, Node, cli, identities

from shared.settings import Settings
from shared.storage.dialects import SqliteDialect
from shared.storage.store import Store


async def _craft(data: Path, mpi_id: str) -> None:
    """A change PostgreSQL refuses (a NUL in text), written straight into the node's change log."""
    store = Store(SqliteDialect(str(data / "mpi.sqlite3")), audit_flush_seconds=Settings().audit_flush_seconds)
    await store.open()
    try:
        async with store.write("test") as tx:
            tx.change("identity.set", mpi_id, {"phone_number": "+22177\x00123"})
    finally:
        await store.close()


def test_an_unappliable_change_is_set_aside_and_later_changes_arrive(hub: Hub, tmp_path: Path) -> None:
    a = Node(tmp_path / "a", hub.enroll("a", "DKR", tmp_path / "a.json", hub.url))
    a.start()
    try:
        awa = a.register(first_name="Awa", last_name="Ndiaye", date_of_birth="1990-01-02", gender="F")
    finally:
        a.stop()
    asyncio.run(_craft(a.data, awa))
    a.start()
    try:
        moussa = a.register(first_name="Moussa", last_name="Sow", date_of_birth="1985-05-06", gender="M")
        status, answer = a.call("POST", "/sync/now")
        assert status == 200, answer
        status, state = a.call("GET", "/sync/status")
        assert state["pending_changes"] == 0 and state["refused"] == [], state
        held = identities(hub)
        assert awa in held and moussa in held and held[awa][7] is None
        status, listing = hub.call("GET", "/sync/nodes")
        aside = listing["nodes"][0]["set_aside"]
        crafted = a.sql("SELECT seq FROM change_log WHERE kind = 'identity.set'")[0][0]
        assert [(x["seq"], x["kind"], x["mpi_id"]) for x in aside] == [(crafted, "identity.set", awa)], aside
        assert "NUL" in aside[0]["reason"] or "0x00" in aside[0]["reason"], aside
        # Later changes still arrive; the node's round stays green.
        assert a.call("PATCH", f"/mpi/{moussa}", {"phone_number": "+221770000002"})[0] == 200
        assert "pushed 1 change(s)" in a.sync().stdout
        assert identities(hub)[moussa][7] == "+221770000002"
    finally:
        a.stop()
    assert '"set_aside": [{' in cli("hub", "node", "list", "--database-url", hub.database_url).stdout
