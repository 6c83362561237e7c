"""The campaign data model (issue 22): estimated birth dates and caregiver links, on SQLite and PostgreSQL.

Real servers (the ``api`` fixture), real stores; the matcher is the shipped one.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from conftest import Api
from fhir.resources.R4B.patient import Patient
from test_cli import node

from shared import ids
from shared.fhir.resources import BIRTH_DATE_ESTIMATED_EXTENSION, RELATED_PERSON_EXTENSION
from shared.identities.candidates import candidates
from shared.matching import Person
from shared.matching.family import estimated_birth_date

DKR = {"region_code": "DKR", "country_code": "SN"}


async def _mother(api: Api, first: str = "Awa", last: str = "Diop", dob: str = "1995-04-02") -> str:
    return await api.register(first_name=first, last_name=last, date_of_birth=dob, gender="F", phone_number="+221771112233")


def _mother_of(mpi_id: str) -> list[dict[str, str]]:
    return [{"mpi_id": mpi_id, "relationship": "mother"}]


async def _fhir(api: Api, mpi_id: str) -> tuple[int, Any]:
    async with api.client.get(f"/fhir/Patient/{mpi_id}", headers=api._headers("registrar")) as r:
        return r.status, json.loads(await r.read())


def _assert_400(status: int, body: Any, code: str = "validation_error", mentions: str | None = None) -> None:
    assert status == 400, body
    assert body["status"] == code and isinstance(body["error"], str), body
    if mentions is not None:
        assert mentions in body["error"], body


# -- estimated birth dates ----------------------------------------------------------------------


async def test_an_age_sets_an_estimated_birth_date_answered_by_get_search_and_match(api: Api) -> None:
    mpi_id = await api.register(first_name="Moussa", last_name="Ndiaye", gender="M", age_years=3)
    status, body = await api.get(f"/mpi/{mpi_id}")
    assert status == 200
    # The rule: the middle of the interval the age allows, counted from the registration date.
    assert body["date_of_birth"] == estimated_birth_date(dt.date.today(), age_years=3).isoformat()
    assert body["date_of_birth_estimated"] is True
    assert body["related_persons"] == []
    status, found = await api.get("/mpi/search", params={"q": "Moussa Ndiaye"})
    assert status == 200 and found["items"][0]["date_of_birth_estimated"] is True
    status, matched = await api.post("/mpi/match", {"first_name": "Moussa", "last_name": "Ndiaye", "age_years": 3})
    assert status == 200 and matched["matches"][0]["mpi_id"] == mpi_id
    assert matched["matches"][0]["date_of_birth_estimated"] is True
    # An estimate never counts as the same date, only as within its tolerance.
    assert "date_of_birth" not in matched["matches"][0]["matched_fields"]
    assert "date_of_birth_estimated" in matched["matches"][0]["matched_fields"]


async def test_patch_takes_an_age_or_a_date_and_sets_the_flag_to_match(api: Api) -> None:
    mpi_id = await api.register(first_name="Khady", last_name="Sarr", gender="F", date_of_birth="2019-02-03")
    status, body = await api.patch(f"/mpi/{mpi_id}", {"age_months": 30})
    assert status == 200, body
    assert body["date_of_birth_estimated"] is True
    assert body["date_of_birth"] == estimated_birth_date(dt.date.today(), age_months=30).isoformat()
    # A real date from a birth certificate replaces the estimate, and the flag goes.
    status, body = await api.patch(f"/mpi/{mpi_id}", {"date_of_birth": "2023-11-20"})
    assert status == 200 and body["date_of_birth_estimated"] is False
    status, body = await api.patch(f"/mpi/{mpi_id}", {"date_of_birth_estimated": True})
    assert status == 200 and body["date_of_birth_estimated"] is True and body["date_of_birth"] == "2023-11-20"


@pytest.mark.parametrize(
    ("extra", "mentions"),
    [
        ({"age_years": 3, "date_of_birth": "2020-01-01"}, "not both"),
        ({"age_years": 3, "age_months": 4}, "not both"),
        ({"age_years": 121}, "age_years"),
        ({"age_years": -1}, "age_years"),
        ({"age_months": 60}, "age_months"),
        ({"age_months": "many"}, "age_months"),
        ({"date_of_birth_estimated": True}, "date_of_birth_estimated"),
        ({"age_years": 2, "date_of_birth_estimated": False}, "estimate"),
    ],
)
async def test_bad_estimates_are_400_in_the_one_error_shape(api: Api, extra: dict[str, Any], mentions: str) -> None:
    status, body = await api.post("/mpi/register", {"first_name": "Ali", "last_name": "Ba", **DKR, **extra})
    _assert_400(status, body, mentions=mentions)
    assert body["details"]


async def test_patch_flag_without_any_date_is_400(api: Api) -> None:
    mpi_id = await api.register(first_name="Ali", last_name="Ba")
    status, body = await api.patch(f"/mpi/{mpi_id}", {"date_of_birth_estimated": True})
    _assert_400(status, body, mentions="date_of_birth_estimated")
    status, body = await api.patch(f"/mpi/{mpi_id}", {"age_years": 4, "date_of_birth": "2020-01-01"})
    _assert_400(status, body, mentions="not both")


# -- caregiver links ----------------------------------------------------------------------------


async def test_links_are_answered_and_a_mother_lists_her_children(api: Api) -> None:
    mother = await _mother(api)
    other = await _mother(api, "Fatou", "Fall", "1990-01-09")
    child = await api.register(
        first_name="Ibou", last_name="Diop", gender="M", age_months=14,
        related_persons=[{"mpi_id": mother.lower(), "relationship": "mother"}],
    )
    ward = await api.register(
        first_name="Maty", last_name="Fall", gender="F", age_years=4,
        related_persons=[{"mpi_id": other, "relationship": "mother"}, {"mpi_id": mother, "relationship": "guardian"}],
    )
    status, body = await api.get(f"/mpi/{child}")
    assert status == 200 and body["related_persons"] == _mother_of(mother)  # normalised ID
    status, body = await api.get("/mpi/search", params={"related_to": mother})
    assert status == 200 and body["total"] == 2
    assert {i["mpi_id"] for i in body["items"]} == {child, ward}
    status, body = await api.get("/mpi/search", params={"related_to": other})
    assert [i["mpi_id"] for i in body["items"]] == [ward]
    status, body = await api.get("/mpi/search", params={"related_to": child})
    assert status == 200 and body == {"total": 0, "items": []}
    # PATCH replaces the whole list; [] removes every link.
    status, body = await api.patch(f"/mpi/{ward}", {"related_persons": []})
    assert status == 200 and body["related_persons"] == []
    status, body = await api.get("/mpi/search", params={"related_to": mother})
    assert [i["mpi_id"] for i in body["items"]] == [child]


async def test_bad_links_are_refused_in_the_one_error_shape(api: Api) -> None:
    mother = await _mother(api)
    child = await api.register(first_name="Ibou", last_name="Diop", age_months=14, related_persons=_mother_of(mother))
    status, body = await api.post(
        "/mpi/register", {"first_name": "X", "last_name": "Y", **DKR, "related_persons": [{"mpi_id": "nope", "relationship": "mother"}]}
    )
    assert status == 400 and body["status"] in ("invalid_mpi_id", "invalid_check_character"), body
    status, search = await api.get("/mpi/search", params={"q": "Diop"})
    assert search["total"] == 2  # nothing half-written
    status, body = await api.post("/mpi/register", {"first_name": "X", "last_name": "Y", **DKR, "related_persons": [
        {"mpi_id": mother, "relationship": "aunt"}]})
    _assert_400(status, body, mentions="relationship")
    status, body = await api.patch(f"/mpi/{child}", {"related_persons": [{"mpi_id": child, "relationship": "caregiver"}]})
    _assert_400(status, body, code="related_person_self")
    # The mother's mother cannot be her own child.
    status, body = await api.patch(f"/mpi/{mother}", {"related_persons": _mother_of(child)})
    _assert_400(status, body, code="related_person_cycle")
    other = await _mother(api, "Fatou", "Fall", "1990-01-09")
    status, body = await api.patch(f"/mpi/{child}", {"related_persons": [*_mother_of(mother), *_mother_of(other)]})
    _assert_400(status, body, code="related_person_conflict")
    status, body = await api.patch(f"/mpi/{child}", {"related_persons": None})
    _assert_400(status, body, mentions="related_persons")
    status, body = await api.get("/mpi/search", params={"related_to": "SN-DKR-26-ZZ"})
    assert status == 400, body
    # An ID that parses but that nobody holds: 404 on a link, nothing listed on a search.
    nobody = ids.mint("SN", "DKR", 26, 999, 424242)
    status, body = await api.post("/mpi/register", {"first_name": "X", "last_name": "Y", **DKR, "related_persons": _mother_of(nobody)})
    assert status == 404 and body["status"] == "not_found", body
    status, body = await api.get("/mpi/search", params={"related_to": nobody})
    assert status == 200 and body == {"total": 0, "items": []}


async def test_a_newborn_without_a_given_name_needs_its_mother_and_is_named_later(api: Api) -> None:
    status, body = await api.post("/mpi/register", {"last_name": "Diop", **DKR, "age_months": 0})
    _assert_400(status, body, mentions="first_name")
    mother = await _mother(api)
    baby = await api.register(last_name="Diop", gender="F", age_months=0, related_persons=_mother_of(mother))
    status, body = await api.get(f"/mpi/{baby}")
    assert body["first_name"] == "" and body["date_of_birth_estimated"] is True
    status, fhir_body = await _fhir(api, baby)
    assert status == 200 and "given" not in fhir_body["name"][0]
    Patient.model_validate(fhir_body)
    # The same unnamed baby again, same mother: caught.
    status, body = await api.post(
        "/mpi/register", {"last_name": "Diop", "gender": "F", **DKR, "age_months": 1, "related_persons": _mother_of(mother)}
    )
    assert status == 409 and body["existing_mpi_id"] == baby, body
    status, body = await api.patch(f"/mpi/{baby}", {"first_name": "Adama"})
    assert status == 200 and body["first_name"] == "Adama"
    status, found = await api.get("/mpi/search", params={"q": "Adama Diop"})
    assert [i["mpi_id"] for i in found["items"]] == [baby]


async def test_the_same_child_with_another_estimate_is_409_a_twin_and_a_namesake_are_201(api: Api) -> None:
    mother = await _mother(api)
    other = await _mother(api, "Fatou", "Fall", "1990-01-09")
    child = {"first_name": "Moussa", "last_name": "Diop", "gender": "M", **DKR}
    first = await api.register(**child, age_months=18, related_persons=_mother_of(mother))
    status, body = await api.post("/mpi/register", {**child, "age_months": 22, "related_persons": _mother_of(mother)})
    assert status == 409 and body["existing_mpi_id"] == first, body
    assert {"mother", "date_of_birth_estimated"} <= set(body["matched_fields"])
    # Twins: same mother, same estimated date, another given name (and sex).
    status, body = await api.post(
        "/mpi/register", {**child, "first_name": "Awa", "gender": "F", "age_months": 18, "related_persons": _mother_of(mother)}
    )
    assert status == 201, body
    # A namesake: same name and age, another mother.
    status, body = await api.post("/mpi/register", {**child, "age_months": 18, "related_persons": _mother_of(other)})
    assert status == 201, body
    status, kids = await api.get("/mpi/search", params={"related_to": mother})
    assert kids["total"] == 2


async def test_merge_moves_links_to_the_canonical_identity_and_unmerge_restores_them(api: Api) -> None:
    mother = await _mother(api)
    mother_again = await api.register(
        first_name="Awa", last_name="Diop", date_of_birth="1995-04-02", gender="F", force_create=True
    )
    linked = await api.register(first_name="Ibou", last_name="Diop", gender="M", age_months=14, related_persons=_mother_of(mother))
    plain = await api.register(first_name="Ibrahima", last_name="Diop", gender="M", date_of_birth="2023-01-05")
    status, body = await api.post(
        "/mpi/merge", {"source_mpi_id": linked, "target_mpi_id": plain, "reason": "same boy", "keep_target": False},
        role="supervisor",
    )
    assert status == 200, body
    status, body = await api.get(f"/mpi/{plain}")
    assert body["related_persons"] == _mother_of(mother)
    status, kids = await api.get("/mpi/search", params={"related_to": mother})
    assert [i["mpi_id"] for i in kids["items"]] == [plain]
    # The mother merged into her duplicate: the link points at the canonical mother.
    status, body = await api.post(
        "/mpi/merge", {"source_mpi_id": mother, "target_mpi_id": mother_again, "reason": "same woman"}, role="supervisor"
    )
    assert status == 200, body
    status, body = await api.get(f"/mpi/{plain}")
    assert body["related_persons"] == _mother_of(mother_again)
    for asked in (mother, mother_again):
        status, kids = await api.get("/mpi/search", params={"related_to": asked})
        assert [i["mpi_id"] for i in kids["items"]] == [plain], asked
    status, body = await api.post("/mpi/unmerge", {"mpi_id": mother, "reason": "two women"}, role="supervisor")
    assert status == 200, body
    status, body = await api.get(f"/mpi/{plain}")
    assert body["related_persons"] == _mother_of(mother)
    status, body = await api.post("/mpi/unmerge", {"mpi_id": linked, "reason": "two boys"}, role="supervisor")
    assert status == 200, body
    status, body = await api.get(f"/mpi/{linked}")
    assert body["related_persons"] == _mother_of(mother)
    status, kids = await api.get("/mpi/search", params={"related_to": mother})
    assert linked in {i["mpi_id"] for i in kids["items"]}


async def test_fhir_patient_carries_the_estimate_and_the_links(api: Api) -> None:
    mother = await _mother(api)
    child = await api.register(first_name="Ibou", last_name="Diop", gender="M", age_months=14, related_persons=_mother_of(mother))
    status, body = await _fhir(api, child)
    assert status == 200
    patient = Patient.model_validate(body)
    assert patient.birthDate is not None
    assert body["_birthDate"]["extension"] == [{"url": BIRTH_DATE_ESTIMATED_EXTENSION, "valueBoolean": True}]
    (link,) = [e for e in body["extension"] if e["url"] == RELATED_PERSON_EXTENSION]
    assert link["extension"] == [
        {"url": "relationship", "valueCode": "mother"},
        {"url": "patient", "valueReference": {"reference": f"Patient/{mother}"}},
    ]
    status, body = await _fhir(api, mother)
    assert "_birthDate" not in body and "extension" not in body


async def test_a_fhir_client_writes_the_estimate_and_the_links_back(api: Api) -> None:
    mother = await _mother(api)
    resource = {
        "resourceType": "Patient",
        "name": [{"family": "Diop", "given": ["Ibou"]}],
        "gender": "male",
        "birthDate": "2025-02-01",
        "_birthDate": {"extension": [{"url": BIRTH_DATE_ESTIMATED_EXTENSION, "valueBoolean": True}]},
        "address": [{"state": "DKR", "country": "SN"}],
        "extension": [{"url": RELATED_PERSON_EXTENSION, "extension": [
            {"url": "relationship", "valueCode": "mother"},
            {"url": "patient", "valueReference": {"reference": f"Patient/{mother}"}},
        ]}],
    }
    headers = {**api._headers("registrar"), "Content-Type": "application/fhir+json"}
    async with api.client.post("/fhir/Patient", data=json.dumps(resource), headers=headers) as r:
        assert r.status == 201, await r.text()
        created = json.loads(await r.read())
    status, body = await api.get(f"/mpi/{created['id']}")
    assert body["date_of_birth_estimated"] is True and body["related_persons"] == _mother_of(mother)
    # A PUT of what was read keeps both; one without the extension on birthDate clears the flag.
    async with api.client.put(f"/fhir/Patient/{created['id']}", data=json.dumps(created), headers=headers) as r:
        assert r.status == 200, await r.text()
    status, body = await api.get(f"/mpi/{created['id']}")
    assert body["date_of_birth_estimated"] is True and body["related_persons"] == _mother_of(mother)
    plain = {k: v for k, v in created.items() if k != "_birthDate"}
    async with api.client.put(f"/fhir/Patient/{created['id']}", data=json.dumps(plain), headers=headers) as r:
        assert r.status == 200, await r.text()
    status, body = await api.get(f"/mpi/{created['id']}")
    assert body["date_of_birth_estimated"] is False
    bad = {**resource, "extension": [{"url": RELATED_PERSON_EXTENSION, "extension": [{"url": "relationship", "valueCode": "mother"}]}]}
    async with api.client.post("/fhir/Patient", data=json.dumps(bad), headers=headers) as r:
        assert r.status == 400, await r.text()


async def test_stored_candidates_carry_the_mother_and_the_flag_for_every_scorer(api: Api) -> None:
    """What register, match, import and the hub's dedup score: the candidates as stored, links and all."""
    mother = await _mother(api)
    child = await api.register(first_name="Ibou", last_name="Diop", gender="M", age_months=14, related_persons=_mother_of(mother))
    query = Person(first_name="Ibou", last_name="Diop", date_of_birth=estimated_birth_date(dt.date.today(), age_months=14))
    async with api.store.read() as conn:
        (found,) = await candidates(conn, [query], 30)
    (person,) = [p for row, p in found if row.mpi_id == child]
    assert person.mother_mpi_id == mother and person.date_of_birth_estimated is True


def test_an_import_takes_estimated_dates_and_refuses_links_by_line(tmp_path: Path) -> None:
    data = tmp_path / "n"
    assert node("init", "--data-dir", str(data), "--country", "SN", "--region", "DKR").returncode == 0
    jsonl = tmp_path / "children.jsonl"
    rows = [
        {"first_name": "Ibou", "last_name": "Gueye", "age_months": 14, **DKR},
        {"first_name": "Awa", "last_name": "Gueye", "age_months": 30, **DKR,
         "related_persons": [{"mpi_id": "SN-DKR-26-ABCDEFG", "relationship": "mother"}]},
    ]
    jsonl.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    done = node("import", "--data-dir", str(data), str(jsonl))
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "children.jsonl:2: " in done.stderr and "related_persons" in done.stderr, done.stderr
    assert "1 created" in done.stdout and "1 errors" in done.stdout, done.stdout
    with sqlite3.connect(data / "mpi.sqlite3") as db:
        rows_out = db.execute("select first_name, date_of_birth, date_of_birth_estimated, related_persons from identity").fetchall()
    assert rows_out == [("Ibou", estimated_birth_date(dt.date.today(), age_months=14).isoformat(), 1, None)]
