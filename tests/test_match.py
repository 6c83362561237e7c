"""POST /mpi/match through the real matcher and the blocking index."""

from __future__ import annotations

from conftest import AMINATA, Api


async def test_match_finds_a_misspelt_identity(api: Api) -> None:
    mpi_id = await api.register(**AMINATA)
    await api.register(first_name="Moussa", last_name="Traore", date_of_birth="1980-01-02", gender="M")
    status, body = await api.post(
        "/mpi/match",
        {"first_name": "Aminata", "last_name": "Dialo", "date_of_birth": "1995-03-15", "gender": "F", "region_code": "DKR"},
    )
    assert status == 200
    assert body["matches"], body
    best = body["matches"][0]
    assert set(best) == {"mpi_id", "similarity_score", "matched_fields", "confidence", "date_of_birth_estimated"}
    assert best["mpi_id"] == mpi_id
    assert best["confidence"] in ("certain", "probable", "possible")
    assert 0.70 <= best["similarity_score"] <= 1
    assert "date_of_birth" in best["matched_fields"]
    assert all(m["mpi_id"] != mpi_id for m in body["matches"][1:])


async def test_match_with_nothing_to_match_on_is_400(api: Api) -> None:
    status, body = await api.post("/mpi/match", {"date_of_birth": "1995-03-15", "gender": "F"})
    assert status == 400 and body["status"] == "validation_error"
    assert "nothing to match on" in body["error"]


async def test_match_on_an_empty_registry_is_empty(api: Api) -> None:
    status, body = await api.post("/mpi/match", {"first_name": "Awa", "last_name": "Ndiaye"})
    assert status == 200 and body == {"matches": []}


async def test_match_does_not_return_merged_identities(api: Api) -> None:
    a = await api.register(**AMINATA)
    b = await api.register(**{**AMINATA, "external_ids": {}, "phone_number": None, "force_create": True})
    status, _ = await api.post("/mpi/merge", {"source_mpi_id": b, "target_mpi_id": a, "reason": "same"}, role="supervisor")
    assert status == 200
    status, body = await api.post("/mpi/match", {k: AMINATA[k] for k in ("first_name", "last_name", "date_of_birth")})
    assert [m["mpi_id"] for m in body["matches"]] == [a]
