"""A push racing a revocation, and replayed envelopes, against a real hub store (SQLite and PostgreSQL).

The hub here is ``HubSync`` on a real store; the node is a real key enrolled and registered
through the hub's own enrolment, whose change sets are built and signed as a node builds them.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import make_store
from nacl.signing import SigningKey

from shared.cli import registry_for
from shared.crypto import key_id
from shared.ids import MAX_NODE_NUMBER, mint
from shared.settings import Settings
from shared.storage import schema as t
from shared.storage.store import Store
from shared.sync.changelog import GENESIS_HASH, Change, canonical_json, change_hash
from shared.sync.changeset import seal_changes
from shared.sync.enrolment import enrolment_key, enrolment_proof, registration_request
from shared.sync.errors import RevokedKey
from shared.sync.hlc import Hlc
from shared.sync.hub import HubSync


class _Node:
    """A node's key and chain, enough to sign change sets the hub accepts."""

    def __init__(self, name: str, number: int) -> None:
        self.name, self.number = name, number
        self.node_id = f"node-{uuid.uuid4().hex[:16]}"
        self.key = SigningKey.generate()
        self.key_id = key_id(self.key.verify_key)
        self.seq, self.hash, self.hlc = 0, GENESIS_HASH, Hlc()
        self.counter = 0

    def create(self) -> Change:
        self.counter += 1
        mpi_id = mint("SN", "DKR", 26, self.number, self.counter)
        payload = canonical_json({"first_name": f"Awa{self.counter}", "last_name": "Ndiaye", "gender": "F",
                                  "date_of_birth": "1990-01-02", "region_code": "DKR", "country_code": "SN"})
        self.seq += 1
        hlc = self.hlc.tick()
        digest = change_hash(self.hash, self.node_id, self.seq, hlc, "identity.create", mpi_id, payload)
        change = Change(self.node_id, self.seq, hlc, self.key_id, "identity.create", mpi_id, payload, self.hash, digest)
        self.hash = digest
        return change

    def seal(self, changes: list[Change], *, after: int, sent_at: int) -> bytes:
        return seal_changes(changes, self.key, node_id=self.node_id, key_id=self.key_id, next_seq=self.seq + 1,
                            prev_hash=self.hash, sent_at=sent_at, pull={"after": after, "limit": 0})


async def _hub(store: Store) -> HubSync:
    await store.connect()
    await store.migrate()
    await store.initialise({"role": "hub", "node_id": f"hub-{uuid.uuid4().hex[:16]}", "node_number": str(MAX_NODE_NUMBER),
                            "country": "SN", "region": "HUB", "key_id": "test"})
    await store.load_state()
    hub = HubSync(store, registry_for(store, Settings()))
    hub.start(SigningKey.generate())
    return hub


async def _enrolled(hub: HubSync, name: str) -> _Node:
    enrolment = await hub.enrol(name, "DKR", "http://hub", [])
    node = _Node(name, enrolment.node_number)
    proof = enrolment_proof(name, node.node_id, bytes(node.key.verify_key).hex())
    signature = enrolment_key(enrolment.secret).sign(proof).signature.hex()
    await hub.register(registration_request(name, node.node_id, node.key, signature))
    return node


async def _row(store: Store, name: str) -> Any:
    async with store.read() as conn:
        return (await conn.execute(sa.select(t.sync_node).where(t.sync_node.c.name == name))).one()


async def _count(store: Store, table: sa.Table) -> int:
    async with store.read() as conn:
        return int((await conn.execute(sa.select(sa.func.count()).select_from(table))).scalar_one())


@pytest.fixture(params=["sqlite", "postgres"])
async def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """Stores on one hub database: the serving hub's, then those of commands (``mpi-hub node revoke``)."""
    made: list[Store] = []

    def new() -> Store:
        made.append(make_store(request.param, tmp_path, request)[0])
        return made[-1]

    yield new
    for store in made:
        if hasattr(store, "writer"):  # opened
            await store.close()


async def test_a_push_racing_a_revocation_does_not_apply_after_it(stores: Any) -> None:
    store = stores()
    hub = await _hub(store)
    node = await _enrolled(hub, "a")
    other = stores()
    await other.open()
    command = HubSync(other, registry_for(other, Settings()))
    raw = node.seal([node.create(), node.create()], after=0, sent_at=int(time.time() * 1000))
    authenticate = hub._authenticate

    async def authenticated_then_revoked(env: Any) -> Any:
        found = await authenticate(env)
        # The revocation commits (another process) after the push was authenticated, before it applies.
        assert await command.revoke("a") == 1
        return found

    hub._authenticate = authenticated_then_revoked  # type: ignore[method-assign]
    with pytest.raises(RevokedKey):
        await hub.receive(raw)
    assert await _count(store, t.identity) == 0
    assert await _count(store, t.change_log) == 0
    row = await _row(store, "a")
    assert row.status == "revoked" and row.acked_seq == 0


async def test_a_replayed_envelope_moves_no_cursor_back(stores: Any) -> None:
    store = stores()
    hub = await _hub(store)
    node = await _enrolled(hub, "a")
    old = int(time.time() * 1000) - 60_000
    first = node.seal([node.create(), node.create(), node.create()], after=0, sent_at=old)
    await hub.receive(first)
    second = node.seal([node.create()], after=3, sent_at=int(time.time() * 1000))
    await hub.receive(second)
    seen = await _row(store, "a")
    assert seen.pull_pos == 3 and seen.acked_seq == 4 and seen.seen_at is not None
    # Anyone holding a copy of the first envelope replays it, and a pull request signed before the second.
    await hub.receive(first)
    stale_pull = node.seal([], after=1, sent_at=old + 1)
    await hub.receive(stale_pull)
    replayed = await _row(store, "a")
    assert (replayed.pull_pos, replayed.seen_at, replayed.acked_seq) == (3, seen.seen_at, 4)
    assert await _count(store, t.identity) == 4
    # A node's cursor beyond the feed's end is taken as the end.
    await hub.receive(node.seal([], after=10**9, sent_at=int(time.time() * 1000)))
    assert (await _row(store, "a")).pull_pos == 4
