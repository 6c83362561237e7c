"""Register, search, get and patch, on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from typing import Any

from conftest import AMINATA, Api

from shared import ids

ISO_SECONDS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


async def test_register_returns_201_with_a_valid_id(api: Api) -> None:
    status, body = await api.post("/mpi/register", AMINATA)
    assert status == 201
    assert set(body) == {"mpi_id", "status", "confidence", "created_at"}
    assert body["status"] == "created" and body["confidence"] == "new_identity"
    assert ISO_SECONDS.match(body["created_at"])
    parsed = ids.parse(body["mpi_id"])
    assert (parsed.country, parsed.region) == ("SN", "DKR")


async def test_register_duplicate_returns_409(api: Api) -> None:
    first = await api.register(**AMINATA)
    again = {**AMINATA, "external_ids": {}}
    status, body = await api.post("/mpi/register", again)
    assert status == 409
    assert body["status"] == "duplicate_detected"
    assert body["existing_mpi_id"] == first
    assert body["action"] == "use_existing_or_review"
    assert body["similarity_score"] >= 0.95
    assert {"first_name", "date_of_birth"} <= set(body["matched_fields"])
    assert isinstance(body["error"], str)


async def test_force_create_registers_and_opens_a_review_item(api: Api) -> None:
    first = await api.register(**AMINATA)
    status, body = await api.post("/mpi/register", {**AMINATA, "external_ids": {}, "force_create": True})
    assert status == 201 and body["mpi_id"] != first
    import sqlalchemy as sa

    from shared.storage import schema as t

    async with api.store.read() as conn:
        rows = (await conn.execute(sa.select(t.review_item.c.reason, t.review_item.c.mpi_ids))).all()
        audit = (await conn.execute(sa.select(t.audit_log.c.action).where(t.audit_log.c.mpi_id == body["mpi_id"]))).all()
    assert [r.reason for r in rows] == ["force_create"]
    assert first in rows[0].mpi_ids and body["mpi_id"] in rows[0].mpi_ids
    assert {"register", "force_create_override"} <= {a.action for a in audit}


async def test_get_returns_the_full_identity(api: Api) -> None:
    mpi_id = await api.register(**AMINATA)
    status, body = await api.get(f"/mpi/{mpi_id}")
    assert status == 200
    assert body["mpi_id"] == mpi_id
    for field in ("first_name", "last_name", "date_of_birth", "gender", "region_code", "country_code", "phone_number"):
        assert body[field] == AMINATA[field]
    assert body["external_ids"] == {"dhis2_uid": "abcDEF123gh"}
    assert body["programmes"] == [] and body["status"] == "active"
    assert ISO_SECONDS.match(body["created_at"]) and ISO_SECONDS.match(body["updated_at"])


async def test_get_unknown_id_is_404_and_typo_is_400(api: Api) -> None:
    unknown = ids.mint("SN", "DKR", 26, 5, 77)
    status, body = await api.get(f"/mpi/{unknown}")
    assert status == 404 and body["status"] == "not_found"
    mpi_id = await api.register(**AMINATA)
    typo = mpi_id[:-2] + ("A" if mpi_id[-2] != "A" else "B") + mpi_id[-1]
    status, body = await api.get(f"/mpi/{typo}")
    assert status == 400 and body["status"] == "invalid_check_character"
    assert "invalid check character" in body["error"]


async def test_patch_updates_and_returns_the_identity(api: Api) -> None:
    mpi_id = await api.register(**AMINATA)
    status, body = await api.patch(f"/mpi/{mpi_id}", {"phone_number": "+221779876543", "region_code": "THI"})
    assert status == 200
    assert body["phone_number"] == "+221779876543" and body["region_code"] == "THI"
    assert body["first_name"] == "Aminata"
    status, again = await api.get(f"/mpi/{mpi_id}")
    assert again["region_code"] == "THI"
    status, found = await api.get("/mpi/search", params={"region_code": "THI"})
    assert [i["mpi_id"] for i in found["items"]] == [mpi_id]


async def test_patch_can_clear_an_optional_field_but_not_a_required_one(api: Api) -> None:
    mpi_id = await api.register(**AMINATA)
    status, body = await api.patch(f"/mpi/{mpi_id}", {"phone_number": None})
    assert status == 200 and body["phone_number"] is None
    status, body = await api.patch(f"/mpi/{mpi_id}", {"last_name": None})
    assert status == 400 and body["status"] == "validation_error"


async def test_patch_with_a_dhis2_uid_of_another_identity_is_409(api: Api) -> None:
    await api.register(**AMINATA)
    other = await api.register(first_name="Moussa", last_name="Traore", date_of_birth="1980-01-02", gender="M")
    status, body = await api.patch(f"/mpi/{other}", {"external_ids": {"dhis2_uid": "abcDEF123gh"}})
    assert status == 409 and body["status"] == "external_id_in_use"


async def test_search_is_case_and_accent_insensitive(api: Api) -> None:
    sene = await api.register(first_name="Ndèye Fatou", last_name="Sène", date_of_birth="1990-05-01", gender="F")
    await api.register(first_name="Moussa", last_name="Traore", date_of_birth="1980-01-02", gender="M")
    for q in ("sene", "SÈNE", "ndeye", "Fatou Sene", "sen"):
        status, body = await api.get("/mpi/search", params={"q": q})
        assert status == 200
        assert [i["mpi_id"] for i in body["items"]] == [sene], q
        assert body["total"] == 1
    item = body["items"][0]
    assert set(item) == {
        "mpi_id", "first_name", "last_name", "date_of_birth", "date_of_birth_estimated", "gender", "region_code",
        "programme_count", "created_at",
    }
    assert item["first_name"] == "Ndèye Fatou" and item["programme_count"] == 0


async def test_search_filters_and_pagination(api: Api) -> None:
    made = [
        await api.register(first_name=f"Awa{c}", last_name="Ndiaye", date_of_birth=f"19{70 + i}-02-0{1 + i % 8}", gender="F")
        for i, c in enumerate("ABCDE")
    ]
    status, body = await api.get("/mpi/search", params={"q": "ndiaye", "limit": "2", "offset": "1"})
    assert status == 200 and body["total"] == 5 and len(body["items"]) == 2
    status, body = await api.get("/mpi/search", params={"date_of_birth": "1972-02-03"})
    assert [i["mpi_id"] for i in body["items"]] == [made[2]]
    status, body = await api.get("/mpi/search", params={"mpi_id": made[4]})
    assert body["total"] == 1 and body["items"][0]["mpi_id"] == made[4]
    await api.post(f"/mpi/{made[1]}/programmes", {"programme_type": "nutrition"})
    status, body = await api.get("/mpi/search", params={"program": "nutrition"})
    assert [i["mpi_id"] for i in body["items"]] == [made[1]] and body["items"][0]["programme_count"] == 1
    status, body = await api.get("/mpi/search", params={"q": "nobody"})
    assert body == {"total": 0, "items": []}


async def test_programme_enrolment_feeds_get_and_is_idempotent(api: Api) -> None:
    mpi_id = await api.register(**AMINATA)
    status, body = await api.post(
        f"/mpi/{mpi_id}/programmes", {"programme_type": "vaccination", "linked_at": "2026-01-10T00:00:00Z"}
    )
    assert status == 201
    assert body == {"mpi_id": mpi_id, "programme_type": "vaccination", "linked_at": "2026-01-10T00:00:00Z", "programme_count": 1}
    status, body = await api.post(f"/mpi/{mpi_id}/programmes", {"programme_type": "vaccination"})
    assert status == 200 and body["programme_count"] == 1
    await api.post(f"/mpi/{mpi_id}/programmes", {"programme_type": "nutrition"})
    status, body = await api.get(f"/mpi/{mpi_id}")
    assert [p["programme_type"] for p in body["programmes"]] == ["vaccination", "nutrition"]
    assert body["programmes"][0]["linked_at"] == "2026-01-10T00:00:00Z"


async def test_search_words_are_whole_but_the_last_may_be_a_beginning(api: Api) -> None:
    fatou = await api.register(first_name="Fatou", last_name="Diallo", date_of_birth="1990-05-01", gender="F")
    fatoumata = await api.register(first_name="Fatoumata", last_name="Diallo", date_of_birth="1970-05-01", gender="F")
    for q, expected in [
        ("fatou dia", {fatou}),
        ("diallo fatou", {fatou, fatoumata}),
        ("diallo fatoumata", {fatoumata}),
        ("fatou", {fatou, fatoumata}),
        ("fat diallo", set()),
    ]:
        status, body = await api.get("/mpi/search", params={"q": q})
        assert status == 200 and {i["mpi_id"] for i in body["items"]} == expected, q
        assert body["total"] == len(expected)


async def test_name_counts_survive_a_restart(api: Api, tmp_path: Any) -> None:
    """Counts read at start-up hold the same fields as those added later: a patch after a restart works."""
    from shared.keys import registry_key

    mpi_id = await api.register(**AMINATA)
    registry = api.client.app[registry_key]
    registry.frequencies.__init__()  # as after a restart
    await registry.load_frequencies()
    status, body = await api.patch(f"/mpi/{mpi_id}", {"first_name": "Aminatou"})
    assert status == 200 and body["first_name"] == "Aminatou"
    assert registry.frequencies.first_name_share("AMINATOU") == 1.0


async def test_get_of_a_merged_id_reads_one_statement_and_search_one(api: Api) -> None:
    from sqlalchemy import event

    kept = await api.register(**AMINATA)
    gone = await api.register(**{**AMINATA, "first_name": "Penda", "date_of_birth": "1970-01-02", "external_ids": {}})
    await api.post(f"/mpi/{kept}/programmes", {"programme_type": "vaccination"})
    await api.post(f"/mpi/{gone}/programmes", {"programme_type": "nutrition"})
    status, _ = await api.post("/mpi/merge", {"source_mpi_id": gone, "target_mpi_id": kept, "reason": "test"},
                               role="supervisor")
    assert status == 200
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "WITH")):  # not BEGIN
            statements.append(statement)

    engine = api.store.reader.sync_engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        status, body = await api.get(f"/mpi/{gone}")
        reads = len(statements)
        statements.clear()
        search_status, found = await api.get("/mpi/search?q=aminata+diallo")
        searches = len(statements)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert status == 200 and body["mpi_id"] == kept and body["merged_from"] == gone
    assert sorted(p["programme_type"] for p in body["programmes"]) == ["nutrition", "vaccination"]
    assert body["external_ids"] == AMINATA["external_ids"]
    assert reads == 1, statements
    assert search_status == 200 and [i["mpi_id"] for i in found["items"]] == [kept]
    assert found["items"][0]["programme_count"] == 2
    assert searches == 1
