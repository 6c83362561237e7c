"""Unmerge restores both identities with what is their own, on SQLite and PostgreSQL."""

from __future__ import annotations

import sqlalchemy as sa
from conftest import AMINATA, Api

from shared.storage import schema as t

CARD = {"campaign_id": "camp_1", "programme_type": "vaccination"}


async def test_unmerge_restores_both_identities(api: Api) -> None:
    target = await api.register(**{**AMINATA, "external_ids": {}})
    source = await api.register(
        first_name="Aminata", last_name="Diallo", date_of_birth="1995-03-15", external_ids={"dhis2_uid": "srcDEF123gh"},
        force_create=True,
    )
    await api.post(f"/mpi/{target}/programmes", {"programme_type": "nutrition"})
    await api.post(f"/mpi/{target}/programmes", {"programme_type": "malaria"})
    await api.post(f"/mpi/{source}/programmes", {"programme_type": "malaria"})
    _, card = await api.post(f"/mpi/{source}/card", CARD)  # enrols the source in vaccination
    status, merged = await api.post(
        "/mpi/merge", {"source_mpi_id": source, "target_mpi_id": target, "reason": "looked alike"}, role="supervisor"
    )
    assert status == 200
    _, during = await api.get(f"/mpi/{target}")
    assert {p["programme_type"] for p in during["programmes"]} == {"nutrition", "malaria", "vaccination"}
    # A write to the merged ID after the merge: it belongs to the source once unmerged.
    await api.post(f"/mpi/{source}/programmes", {"programme_type": "hiv"})

    status, body = await api.post("/mpi/unmerge", {"mpi_id": source, "reason": "twins, not one person"}, role="supervisor")
    assert status == 200, body
    assert body["mpi_id"] == source and body["previous_canonical_mpi_id"] == target and body["status"] == "active"

    _, src = await api.get(f"/mpi/{source}")
    _, tgt = await api.get(f"/mpi/{target}")
    assert src["mpi_id"] == source and "merged_from" not in src and src["status"] == "active"
    assert {p["programme_type"] for p in src["programmes"]} == {"malaria", "vaccination", "hiv"}
    assert {p["programme_type"] for p in tgt["programmes"]} == {"nutrition", "malaria"}
    assert src["external_ids"] == {"dhis2_uid": "srcDEF123gh"} and tgt["external_ids"] == {}
    _, got_card = await api.get(f"/mpi/{source}/card")
    assert got_card["card_code"] == card["card_code"]
    status, _ = await api.get(f"/mpi/{target}/card")
    assert status == 404
    _, resolved = await api.get("/mpi/resolve-dhis2/srcDEF123gh")
    assert resolved["mpi_id"] == source
    _, found = await api.get("/mpi/search", params={"q": "aminata diallo"})
    assert {i["mpi_id"] for i in found["items"]} == {source, target}
    async with api.store.read() as conn:
        actions = (await conn.execute(sa.select(t.audit_log.c.action).where(t.audit_log.c.mpi_id == source))).scalars().all()
        kinds = (await conn.execute(sa.select(t.change_log.c.kind))).scalars().all()
    assert "unmerge" in actions and "identity.unmerge" in kinds


async def test_unmerge_errors(api: Api) -> None:
    a = await api.register(**AMINATA)
    status, body = await api.post("/mpi/unmerge", {"mpi_id": a, "reason": "x"}, role="supervisor")
    assert status == 409 and body["status"] == "not_merged"
    status, body = await api.post("/mpi/unmerge", {"mpi_id": a, "reason": "x"})
    assert status == 403
    status, body = await api.post("/mpi/unmerge", {"mpi_id": "SN-DKR-26-AAAAAAAA", "reason": "x"}, role="supervisor")
    assert status == 400 and body["status"] == "invalid_check_character"
    status, body = await api.post("/mpi/unmerge", {"mpi_id": a}, role="supervisor")
    assert status == 400 and body["status"] == "validation_error"


async def test_merge_again_after_unmerge(api: Api) -> None:
    a = await api.register(**AMINATA)
    b = await api.register(first_name="Aminata", last_name="Diallo", date_of_birth="1995-03-15", force_create=True)
    for _ in range(2):
        status, _ = await api.post("/mpi/merge", {"source_mpi_id": b, "target_mpi_id": a, "reason": "dup"}, role="supervisor")
        assert status == 200
        _, ident = await api.get(f"/mpi/{b}")
        assert ident["mpi_id"] == a
        status, _ = await api.post("/mpi/unmerge", {"mpi_id": b, "reason": "no"}, role="supervisor")
        assert status == 200
        _, ident = await api.get(f"/mpi/{b}")
        assert ident["mpi_id"] == b
