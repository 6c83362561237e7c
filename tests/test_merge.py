"""Merges: the source redirects to the target forever; programmes, ids and cards move."""

from __future__ import annotations

from conftest import AMINATA, Api


async def _pair(api: Api) -> tuple[str, str]:
    target = await api.register(**AMINATA)
    source = await api.register(
        first_name="Aminata", last_name="Diallo", date_of_birth="1995-03-15", gender="F", force_create=True
    )
    return source, target


async def test_merge_moves_programmes_and_redirects(api: Api) -> None:
    source, target = await _pair(api)
    await api.post(f"/mpi/{source}/programmes", {"programme_type": "nutrition"})
    await api.post(f"/mpi/{source}/programmes", {"programme_type": "vaccination"})
    await api.post(f"/mpi/{target}/programmes", {"programme_type": "vaccination"})
    status, body = await api.post(
        "/mpi/merge",
        {"source_mpi_id": source, "target_mpi_id": target, "reason": "Confirmed duplicate", "keep_target": True},
        role="supervisor",
    )
    assert status == 200
    assert body["canonical_mpi_id"] == target and body["merged_mpi_id"] == source
    assert body["programmes_migrated"] == 1 and body["merged_at"].endswith("Z")
    status, ident = await api.get(f"/mpi/{source}")
    assert status == 200
    assert ident["mpi_id"] == target and ident["merged_from"] == source
    assert sorted(p["programme_type"] for p in ident["programmes"]) == ["nutrition", "vaccination"]
    status, found = await api.get("/mpi/search", params={"q": "diallo"})
    assert [i["mpi_id"] for i in found["items"]] == [target]


async def test_writes_to_a_merged_id_land_on_the_canonical_one(api: Api) -> None:
    source, target = await _pair(api)
    await api.post("/mpi/merge", {"source_mpi_id": source, "target_mpi_id": target, "reason": "dup"}, role="supervisor")
    status, body = await api.patch(f"/mpi/{source}", {"phone_number": "+221779876543"})
    assert status == 200 and body["mpi_id"] == target and body["phone_number"] == "+221779876543"


async def test_merge_into_itself_is_400_also_through_a_redirect(api: Api) -> None:
    source, target = await _pair(api)
    status, body = await api.post(
        "/mpi/merge", {"source_mpi_id": target, "target_mpi_id": target, "reason": "x"}, role="supervisor"
    )
    assert status == 400 and body["status"] == "same_identity"
    await api.post("/mpi/merge", {"source_mpi_id": source, "target_mpi_id": target, "reason": "dup"}, role="supervisor")
    status, body = await api.post(
        "/mpi/merge", {"source_mpi_id": source, "target_mpi_id": target, "reason": "again"}, role="supervisor"
    )
    assert status == 400 and body["status"] == "same_identity"


async def test_merge_needs_a_supervisor(api: Api) -> None:
    source, target = await _pair(api)
    status, body = await api.post("/mpi/merge", {"source_mpi_id": source, "target_mpi_id": target, "reason": "x"})
    assert status == 403 and body["status"] == "forbidden"


async def test_merge_with_two_different_dhis2_uids_is_refused(api: Api) -> None:
    target = await api.register(**AMINATA)
    source = await api.register(
        first_name="Aminata", last_name="Diallo", date_of_birth="1995-03-15", external_ids={"dhis2_uid": "zzzDEF123gh"},
        force_create=True,
    )
    status, body = await api.post(
        "/mpi/merge", {"source_mpi_id": source, "target_mpi_id": target, "reason": "x"}, role="supervisor"
    )
    assert status == 409 and body["status"] == "conflicting_external_ids"


async def test_keep_target_false_takes_the_source_demographics(api: Api) -> None:
    target = await api.register(first_name="Awa", last_name="Ndiaye", date_of_birth="1990-01-01", gender="F")
    source = await api.register(first_name="Awa", last_name="Ndiaye", date_of_birth="1990-06-12", gender="F", force_create=True)
    status, _ = await api.post(
        "/mpi/merge", {"source_mpi_id": source, "target_mpi_id": target, "reason": "x", "keep_target": False},
        role="supervisor",
    )
    assert status == 200
    _, ident = await api.get(f"/mpi/{target}")
    assert ident["date_of_birth"] == "1990-06-12" and ident["mpi_id"] == target


async def test_merge_of_unknown_id_is_404(api: Api) -> None:
    target = await api.register(**AMINATA)
    from shared import ids

    status, body = await api.post(
        "/mpi/merge", {"source_mpi_id": ids.mint("SN", "DKR", 26, 9, 9), "target_mpi_id": target, "reason": "x"},
        role="supervisor",
    )
    assert status == 404
