"""Every write appends to the hash-chained change log in its own transaction."""

from __future__ import annotations

import json

import sqlalchemy as sa
from conftest import AMINATA, Api

from shared.storage import schema as t
from shared.sync.changelog import GENESIS_HASH, Change


async def _changes(api: Api) -> list[Change]:
    async with api.store.read() as conn:
        rows = (await conn.execute(sa.select(t.change_log).order_by(t.change_log.c.seq))).all()
    return [Change(**row._mapping) for row in rows]


async def test_every_write_appends_a_chained_change(api: Api) -> None:
    a = await api.register(**AMINATA)
    b = await api.register(first_name="Aminata", last_name="Diallo", date_of_birth="1995-03-15", force_create=True)
    await api.patch(f"/mpi/{a}", {"phone_number": "+221779876543"})
    c = await api.register(first_name="Moussa", last_name="Traore", date_of_birth="1980-01-02")
    status, _ = await api.post(f"/mpi/{c}/link-dhis2", {"dhis2_uid": "xyzDEF123gh"})
    assert status == 200
    await api.post(f"/mpi/{a}/programmes", {"programme_type": "nutrition"})
    _, card = await api.post(f"/mpi/{a}/card", {"campaign_id": "c1", "programme_type": "vaccination"})
    await api.post(f"/mpi/{a}/card/revoke", {}, role="supervisor")
    status, _ = await api.post("/mpi/merge", {"source_mpi_id": b, "target_mpi_id": a, "reason": "dup"}, role="supervisor")
    assert status == 200
    changes = await _changes(api)
    kinds = [c.kind for c in changes]
    for kind in ("identity.create", "review.open", "identity.set", "external_id.add", "programme.add",
                 "card.issue", "card.revoke", "identity.merge"):
        assert kind in kinds, kind
    assert [c.seq for c in changes] == list(range(1, len(changes) + 1))
    assert changes[0].prev_hash == GENESIS_HASH
    for prev, cur in zip(changes, changes[1:], strict=False):
        assert cur.prev_hash == prev.hash and cur.hlc > prev.hlc
    assert all(c.verify_hash() for c in changes)
    created = json.loads(changes[0].payload)
    assert created["first_name"] == "Aminata" and created["mpi_id"] == a
    assert card["qr_token"] not in "".join(c.payload for c in changes)  # only the hash travels


async def test_a_refused_write_leaves_no_change(api: Api) -> None:
    await api.register(**AMINATA)
    before = await _changes(api)
    status, _ = await api.post("/mpi/register", {**AMINATA, "external_ids": {}})
    assert status == 409
    status, _ = await api.post("/mpi/register", {**AMINATA, "first_name": "Other", "force_create": True})
    assert status == 409  # the dhis2 uid is taken
    assert await _changes(api) == before
    mpi_id = await api.register(first_name="Moussa", last_name="Traore", date_of_birth="1980-01-02")
    after = await _changes(api)
    assert after[-1].seq == before[-1].seq + 1 and after[-1].mpi_id == mpi_id
