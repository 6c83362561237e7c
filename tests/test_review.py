"""The hub's dedup and review queue: auto-merge, queue, decisions, not_same remembered."""

from __future__ import annotations

import sqlalchemy as sa
from conftest import AMINATA, Api

from shared.dedup import Dedup
from shared.keys import registry_key
from shared.storage import schema as t


def _dedup(api: Api) -> Dedup:
    return Dedup(api.client.app[registry_key], auto_merge=0.95)


async def _pks(api: Api, *mpi_ids: str) -> list[int]:
    async with api.store.read() as conn:
        rows = await conn.execute(sa.select(t.identity.c.pk).where(t.identity.c.mpi_id.in_(mpi_ids)))
        return [r[0] for r in rows]


async def test_certain_pair_is_merged_into_the_older_registration(api: Api) -> None:
    older = await api.register(**AMINATA)
    newer = await api.register(**{**AMINATA, "external_ids": {}, "force_create": True})
    # force_create queued the pair already; dedup merges it anyway when it is certain.
    stats = await _dedup(api).check(await _pks(api, newer))
    assert stats.merged == 1 and stats.queued == 0
    status, body = await api.get(f"/mpi/{newer}")
    assert status == 200 and body["mpi_id"] == older and body["merged_from"] == newer
    async with api.store.read() as conn:
        audit = (await conn.execute(sa.select(t.audit_log.c.detail).where(t.audit_log.c.action == "merge"))).scalars().all()
    assert len(audit) == 1 and "automatic merge" in audit[0]


async def test_probable_pair_goes_to_the_review_queue(api: Api) -> None:
    a = await api.register(first_name="Aminata", last_name="Diallo", date_of_birth="1995-03-15", gender="F")
    b = await api.register(
        first_name="Aminata", last_name="Diallo", date_of_birth="1995-03-15", gender="F", region_code="THI", force_create=True
    )
    dedup = Dedup(api.client.app[registry_key], auto_merge=1.01)  # above any score: nothing merges alone
    stats = await dedup.check(await _pks(api, a, b))
    assert stats.merged == 0
    status, body = await api.get("/review", role="supervisor")
    assert status == 200
    assert body["total"] == 1 and sum(body["counts"].values()) == 1
    item = body["items"][0]
    assert set(item["mpi_ids"]) == {a, b} and item["similarity_score"] >= 0.85
    assert {"id", "mpi_ids", "similarity_score", "matched_fields", "reason"} <= set(item)
    status, again = await api.get("/review", role="supervisor", params={"region_code": "THI"})
    assert again["total"] == 1
    status, none = await api.get("/review", role="supervisor", params={"region_code": "ZIG"})
    assert none["total"] == 0


async def test_not_same_is_remembered_and_never_raised_again(api: Api) -> None:
    a = await api.register(first_name="Awa", last_name="Ndiaye", date_of_birth="1990-01-01", gender="F")
    b = await api.register(first_name="Awa", last_name="Ndiaye", date_of_birth="1990-01-01", gender="F", force_create=True)
    status, body = await api.get("/review", role="supervisor")
    item = body["items"][0]
    status, decided = await api.post(f"/review/{item['id']}/decision", {"decision": "not_same", "reason": "twins"}, role="supervisor")
    assert status == 200 and decided["status"] == "decided"
    status, body = await api.get("/review", role="supervisor")
    assert body["total"] == 0
    stats = await _dedup(api).check(await _pks(api, a, b))
    assert stats.merged == 0 and stats.queued == 0
    status, body = await api.get("/review", role="supervisor")
    assert body["total"] == 0
    _, ga = await api.get(f"/mpi/{a}")
    _, gb = await api.get(f"/mpi/{b}")
    assert ga["mpi_id"] == a and gb["mpi_id"] == b
    async with api.store.read() as conn:
        kinds = (await conn.execute(sa.select(t.change_log.c.kind))).scalars().all()
    assert "review.not_same" in kinds
    status, again = await api.post(f"/review/{item['id']}/decision", {"decision": "merge"}, role="supervisor")
    assert status == 409 and again["status"] == "already_decided"


async def test_merge_decision_merges_the_newer_into_the_older(api: Api) -> None:
    a = await api.register(**AMINATA)
    b = await api.register(first_name="Aminata", last_name="Diallo", date_of_birth="1995-03-15", force_create=True)
    _, body = await api.get("/review", role="supervisor")
    status, decided = await api.post(f"/review/{body['items'][0]['id']}/decision", {"decision": "merge"}, role="supervisor")
    assert status == 200 and decided["canonical_mpi_id"] == a and decided["merged_mpi_id"] == b


async def test_review_needs_a_supervisor_and_valid_input(api: Api) -> None:
    status, body = await api.get("/review")
    assert status == 403
    status, body = await api.get("/review", role="supervisor", params={"band": "sure"})
    assert status == 400 and body["status"] == "validation_error"
    status, body = await api.post("/review/abc/decision", {"decision": "merge"}, role="supervisor")
    assert status == 400 and body["status"] == "invalid_review_id"
    status, body = await api.post("/review/999/decision", {"decision": "merge"}, role="supervisor")
    assert status == 404
    status, body = await api.post("/review/1/decision", {"decision": "maybe"}, role="supervisor")
    assert status == 400 and body["status"] == "validation_error"


async def test_sweep_is_resumable_and_finds_every_pair(api: Api) -> None:
    people = [("Moussa", "Traore", "1980-01-02"), ("Khady", "Sarr", "1975-06-30"), ("Cheikh", "Fall", "2001-11-09")]
    for first, last, dob in people:
        await api.register(first_name=first, last_name=last, date_of_birth=dob, gender="M")
    for first, last, dob in people:
        await api.register(first_name=first, last_name=last, date_of_birth=dob, gender="M", force_create=True)
    dedup = _dedup(api)
    seen: list[int] = []
    stats = await dedup.sweep(batch=2, progress=lambda s, last: seen.append(last))
    assert stats.merged == 3 and stats.checked >= 3
    assert seen == sorted(seen) and len(seen) >= 2
    async with api.store.read() as conn:
        active = (
            await conn.execute(sa.select(sa.func.count()).select_from(t.identity).where(t.identity.c.status == "active"))
        ).scalar_one()
        job = (await conn.execute(sa.select(t.dedup_progress))).one()
    assert active == 3 and job.finished_at is not None
    again = await dedup.sweep(batch=2)
    assert again.merged == 0


async def test_enqueued_identities_are_checked_once(api: Api) -> None:
    from shared.dedup import enqueue

    older = await api.register(**AMINATA)
    newer = await api.register(**{**AMINATA, "external_ids": {}, "force_create": True})
    async with api.store.write("test") as tx:
        await enqueue(tx, await _pks(api, newer, older))
    dedup = _dedup(api)
    stats = await dedup.drain(batch=1)
    assert stats.merged == 1
    assert (await dedup.drain()).checked == 0
    async with api.store.read() as conn:
        left = (await conn.execute(sa.select(sa.func.count()).select_from(t.dedup_pending))).scalar_one()
    assert left == 0
