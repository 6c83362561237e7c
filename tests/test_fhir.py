"""The FHIR R4 face (/fhir): Patient, search (PDQm), $match, PIXm, errors; on SQLite and PostgreSQL.

Every answer is checked with FHIR's own models (fhir.resources, R4B), not only by shape.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import AMINATA, Api
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhir.resources.R4B.parameters import Parameters
from fhir.resources.R4B.patient import Patient

from shared import ids
from shared.fhir import FHIR_ROUTES
from shared.fhir.resources import MATCH_GRADE, PROGRAMME_EXTENSION
from shared.settings import Settings, SettingsError
from shared.storage import schema as t

MPI = Settings().fhir_mpi_id_system
DHIS2 = Settings().fhir_dhis2_system
OTHER = Settings().fhir_identifier_base
FHIR_JSON = "application/fhir+json"


@dataclass
class Fhir:
    api: Api

    async def call(
        self, method: str, path: str, body: Any = None, *, role: str | None = "registrar",
        data: bytes | str | None = None, headers: dict[str, str] | None = None,
    ) -> tuple[int, Any, Any]:
        sent = {**(self.api._headers(role)), **(headers or {})}
        if body is not None:
            data = json.dumps(body)
        if data is not None:
            sent.setdefault("Content-Type", FHIR_JSON)
        async with self.api.client.request(method, path, data=data, headers=sent) as r:
            assert r.content_type == FHIR_JSON, (r.status, r.content_type, await r.text())
            return r.status, json.loads(await r.read()), r.headers


@pytest.fixture
def fhir(api: Api) -> Fhir:
    return Fhir(api)


def patient_resource(**over: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "identifier": [{"system": DHIS2, "value": "abcDEF123gh"}],
        "name": [{"family": "Diallo", "given": ["Aminata"]}],
        "gender": "female",
        "birthDate": "1995-03-15",
        "telecom": [{"system": "phone", "value": "+221771234567"}],
        "address": [{"state": "DKR", "country": "SN"}],
    }
    resource.update(over)
    return {k: v for k, v in resource.items() if v is not None}


def assert_outcome(status: int, body: Any, expected: int) -> OperationOutcome:
    assert status == expected, body
    outcome = OperationOutcome.model_validate(body)
    assert outcome.issue and outcome.issue[0].severity in ("error", "fatal")
    assert "status" not in body and "error" not in body  # never the native shape
    return outcome


def identifiers(resource: dict[str, Any]) -> dict[str, str]:
    return {i["system"]: i["value"] for i in resource["identifier"]}


# -- metadata -------------------------------------------------------------------------------


async def test_metadata_is_a_public_capability_statement(fhir: Fhir) -> None:
    status, body, headers = await fhir.call("GET", "/fhir/metadata", role=None)
    assert status == 200
    statement = CapabilityStatement.model_validate(body)
    assert statement.fhirVersion == "4.0.1" and "application/fhir+json" in statement.format
    (patient,) = body["rest"][0]["resource"]
    assert patient["type"] == "Patient"
    assert {i["code"] for i in patient["interaction"]} == {"read", "create", "update", "search-type"}
    assert {"family", "given", "name", "birthdate", "gender", "identifier", "address-state"} <= {
        p["name"] for p in patient["searchParam"]
    }
    assert {o["name"] for o in patient["operation"]} == {"match", "ihe-pix"}


# -- create and read ------------------------------------------------------------------------


async def test_create_returns_201_with_location_and_the_patient(fhir: Fhir) -> None:
    status, body, headers = await fhir.call("POST", "/fhir/Patient", patient_resource())
    assert status == 201, body
    created = Patient.model_validate(body)
    mpi_id = created.id
    assert mpi_id is not None and ids.parse(mpi_id)
    assert headers["Location"].endswith(f"/fhir/Patient/{mpi_id}")
    assert identifiers(body) == {MPI: mpi_id, DHIS2: "abcDEF123gh"}
    assert body["name"][0]["family"] == "Diallo" and body["name"][0]["given"] == ["Aminata"]
    assert body["gender"] == "female" and body["birthDate"] == "1995-03-15" and body["active"] is True
    assert body["telecom"] == [{"system": "phone", "value": "+221771234567", "use": "mobile"}]
    assert body["address"][0]["state"] == "DKR" and body["address"][0]["country"] == "SN"
    assert body["meta"]["lastUpdated"].endswith("Z")
    # The same identity natively, and the same Patient when read.
    status, native = await fhir.api.get(f"/mpi/{mpi_id}")
    assert status == 200 and native["first_name"] == "Aminata" and native["external_ids"] == {"dhis2_uid": "abcDEF123gh"}
    status, read, _ = await fhir.call("GET", f"/fhir/Patient/{mpi_id}")
    assert status == 200 and read == body


async def test_create_duplicate_returns_409_naming_the_existing_patient(fhir: Fhir) -> None:
    first = await fhir.api.register(**AMINATA)
    status, body, _ = await fhir.call("POST", "/fhir/Patient", patient_resource(identifier=None))
    outcome = assert_outcome(status, body, 409)
    assert outcome.issue[0].code == "duplicate"
    assert f"Patient/{first}" in (outcome.issue[0].diagnostics or "")


async def test_read_shows_programmes_as_the_extension_and_other_ids(fhir: Fhir) -> None:
    mpi_id = await fhir.api.register(**{**AMINATA, "external_ids": {"dhis2_uid": "abcDEF123gh", "nin": "1234567"}})
    status, _ = await fhir.api.post(f"/mpi/{mpi_id}/programmes", {"programme_type": "vaccination"})
    assert status == 201
    status, body, _ = await fhir.call("GET", f"/fhir/Patient/{mpi_id}")
    Patient.model_validate(body)
    assert identifiers(body)[OTHER + "nin"] == "1234567"
    (ext,) = body["extension"]
    assert ext["url"] == PROGRAMME_EXTENSION
    assert {e["url"]: list(e.values())[1] for e in ext["extension"]}["type"] == "vaccination"


async def test_merged_id_answers_an_inactive_patient_replaced_by_the_canonical(fhir: Fhir) -> None:
    target = await fhir.api.register(**AMINATA)
    source = await fhir.api.register(**{**AMINATA, "first_name": "Aminta", "external_ids": {}, "force_create": True})
    status, _ = await fhir.api.post("/mpi/merge", {"source_mpi_id": source, "target_mpi_id": target, "reason": "same"},
                                    role="supervisor")
    assert status == 200
    status, merged, _ = await fhir.call("GET", f"/fhir/Patient/{source}")
    assert status == 200
    Patient.model_validate(merged)
    assert merged["id"] == source and merged["active"] is False
    assert merged["link"] == [{"other": {"reference": f"Patient/{target}"}, "type": "replaced-by"}]
    status, canonical, _ = await fhir.call("GET", f"/fhir/Patient/{target}")
    assert canonical["active"] is True
    assert canonical["link"] == [{"other": {"reference": f"Patient/{source}"}, "type": "replaces"}]


async def test_a_chain_of_merges_is_linked_both_ways(fhir: Fhir) -> None:
    first = await fhir.api.register(**{**AMINATA, "external_ids": {}})
    second = await fhir.api.register(**{**AMINATA, "first_name": "Aminta", "external_ids": {}, "force_create": True})
    third = await fhir.api.register(**{**AMINATA, "first_name": "Amy", "external_ids": {}, "force_create": True})
    for source, target in ((first, second), (second, third)):
        status, _ = await fhir.api.post("/mpi/merge", {"source_mpi_id": source, "target_mpi_id": target,
                                                       "reason": "same"}, role="supervisor")
        assert status == 200

    def links(resource: dict[str, Any]) -> set[tuple[str, str]]:
        return {(link["type"], link["other"]["reference"]) for link in resource.get("link", [])}

    _, body, _ = await fhir.call("GET", f"/fhir/Patient/{first}")
    assert links(body) == {("replaced-by", f"Patient/{third}")}
    _, body, _ = await fhir.call("GET", f"/fhir/Patient/{second}")
    assert links(body) == {("replaced-by", f"Patient/{third}"), ("replaces", f"Patient/{first}")}
    _, body, _ = await fhir.call("GET", f"/fhir/Patient/{third}")
    assert links(body) == {("replaces", f"Patient/{first}"), ("replaces", f"Patient/{second}")}
    _, found = await _search(fhir, "given=amy")
    assert found == [third]
    _, bundle_body, _ = await fhir.call("GET", "/fhir/Patient?given=amy")
    assert links(bundle_body["entry"][0]["resource"]) == links(body)


async def test_read_errors_are_operation_outcomes(fhir: Fhir) -> None:
    unknown = ids.mint("SN", "DKR", 26, 5, 77)
    assert_outcome(*(await fhir.call("GET", f"/fhir/Patient/{unknown}"))[:2], 404)
    mpi_id = await fhir.api.register(**AMINATA)
    typo = mpi_id[:-2] + ("A" if mpi_id[-2] != "A" else "B") + mpi_id[-1]
    outcome = assert_outcome(*(await fhir.call("GET", f"/fhir/Patient/{typo}"))[:2], 400)
    assert "check character" in (outcome.issue[0].diagnostics or "")
    assert_outcome(*(await fhir.call("GET", "/fhir/Observation"))[:2], 404)
    assert_outcome(*(await fhir.call("DELETE", f"/fhir/Patient/{mpi_id}"))[:2], 405)
    status, body, headers = await fhir.call("GET", f"/fhir/Patient/{mpi_id}", role=None)
    assert_outcome(status, body, 401)
    assert headers["WWW-Authenticate"].startswith("Bearer")
    bad = {"Authorization": "Bearer mpi_wrong"}
    assert_outcome(*(await fhir.call("GET", f"/fhir/Patient/{mpi_id}", role=None, headers=bad))[:2], 401)
    assert_outcome(*(await fhir.call("GET", f"/fhir/Patient/{mpi_id}?_format=xml"))[:2], 406)


# -- what a create refuses ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"resourceType": "Observation", "status": "final"}, 422),
        ({"name": [{"family": "Diallo"}]}, 400),  # no resourceType
        (patient_resource(name=[{"family": "Diallo\x00", "given": ["Aminata"]}]), 400),
        (patient_resource(name=[{"family": "Diallo", "given": ["Ami\x07nata"]}]), 400),
        (patient_resource(name=[{"family": 12, "given": ["Aminata"]}]), 400),
        (patient_resource(name="Diallo"), 400),
        (patient_resource(gender="femme"), 400),
        (patient_resource(birthDate="15/03/1995"), 400),
        (patient_resource(birthDate="1995-03"), 422),  # valid FHIR, not a date this registry holds
        (patient_resource(gender="other"), 422),
        (patient_resource(name=[{"given": ["Aminata"]}]), 422),  # no family name
        (patient_resource(address=None), 422),  # no region
        (patient_resource(address=[{"state": "Dakar", "country": "SN"}]), 422),
        (patient_resource(birthDate="2999-01-01"), 422),
        (patient_resource(identifier=[{"system": "urn:unknown", "value": "x"}]), 422),
        ([], 400),
        ("not a resource", 400),
    ],
)
async def test_create_refuses_with_the_right_status(fhir: Fhir, body: Any, expected: int) -> None:
    status, answer, _ = await fhir.call("POST", "/fhir/Patient", body)
    assert_outcome(status, answer, expected)
    async with fhir.api.store.read() as conn:
        assert (await conn.execute(sa.select(sa.func.count()).select_from(t.identity))).scalar_one() == 0


async def test_create_refuses_bad_bodies_and_media_types(fhir: Fhir) -> None:
    assert_outcome(*(await fhir.call("POST", "/fhir/Patient", data="{not json"))[:2], 400)
    assert_outcome(*(await fhir.call("POST", "/fhir/Patient", data=b""))[:2], 400)
    text = {"Content-Type": "text/plain"}
    assert_outcome(*(await fhir.call("POST", "/fhir/Patient", data="{}", headers=text))[:2], 415)
    huge = b'{"resourceType": "Patient", "x": "' + b"a" * 300_000 + b'"}'
    json_type = {"Content-Type": "application/json"}
    assert_outcome(*(await fhir.call("POST", "/fhir/Patient", data=huge, headers=json_type))[:2], 413)
    deep = b"[" * 100_000 + b"]" * 100_000
    assert_outcome(*(await fhir.call("POST", "/fhir/Patient", data=deep[:200_000], headers=json_type))[:2], 400)
    # application/json is accepted as well as application/fhir+json.
    status, body, _ = await fhir.call("POST", "/fhir/Patient", data=json.dumps(patient_resource()), headers=json_type)
    assert status == 201, body


# -- update ---------------------------------------------------------------------------------


async def test_put_updates_demographics_like_patch(fhir: Fhir) -> None:
    status, created, _ = await fhir.call("POST", "/fhir/Patient", patient_resource())
    mpi_id = created["id"]
    changed = {**created, "telecom": [{"system": "phone", "value": "+221779876543"}],
               "address": [{"state": "THI", "country": "SN"}]}
    status, body, headers = await fhir.call("PUT", f"/fhir/Patient/{mpi_id}", changed)
    assert status == 200, body
    Patient.model_validate(body)
    assert body["telecom"][0]["value"] == "+221779876543" and body["address"][0]["state"] == "THI"
    status, native = await fhir.api.get(f"/mpi/{mpi_id}")
    assert native["phone_number"] == "+221779876543" and native["region_code"] == "THI"
    # PUT replaces: a Patient without a birth date removes it.
    del changed["birthDate"]
    status, body, _ = await fhir.call("PUT", f"/fhir/Patient/{mpi_id}", changed)
    assert status == 200 and "birthDate" not in body


async def test_put_refusals(fhir: Fhir) -> None:
    status, created, _ = await fhir.call("POST", "/fhir/Patient", patient_resource())
    mpi_id = created["id"]
    other = ids.mint("SN", "DKR", 26, 5, 77)
    assert_outcome(*(await fhir.call("PUT", f"/fhir/Patient/{mpi_id}", {**created, "id": other}))[:2], 400)
    assert_outcome(*(await fhir.call("PUT", f"/fhir/Patient/{other}", {**created, "id": other}))[:2], 404)
    no_name = {k: v for k, v in created.items() if k != "name"}
    assert_outcome(*(await fhir.call("PUT", f"/fhir/Patient/{mpi_id}", no_name))[:2], 422)
    assert_outcome(*(await fhir.call("PUT", f"/fhir/Patient/{mpi_id}", {"resourceType": "Group"}))[:2], 422)


# -- search (PDQm) --------------------------------------------------------------------------


async def _population(api: Api) -> dict[str, str]:
    people = {
        "aminata": {**AMINATA},
        "sene": {"first_name": "Fatou", "last_name": "Sène", "date_of_birth": "1988-07-01", "gender": "F",
                 "region_code": "THI", "external_ids": {"dhis2_uid": "Xyz45678901"}},
        "ndiaye": {"first_name": "Moussa", "last_name": "N'Diaye", "date_of_birth": "1990-01-20", "gender": "M"},
        "diallo_first": {"first_name": "Diallo", "last_name": "Ba", "date_of_birth": "1970-02-02", "gender": "M"},
        "fatoumata": {"first_name": "Fatoumata", "last_name": "Diallo", "date_of_birth": "2001-11-30", "gender": "F"},
    }
    return {key: await api.register(**{"country_code": "SN", **body}) for key, body in people.items()}


async def _search(fhir: Fhir, query: str) -> tuple[dict[str, Any], list[str]]:
    status, body, _ = await fhir.call("GET", f"/fhir/Patient?{query}")
    assert status == 200, body
    Bundle.model_validate(body)
    assert body["type"] == "searchset"
    for entry in body.get("entry", []):
        Patient.model_validate(entry["resource"])
        assert entry["search"]["mode"] == "match"
        assert entry["fullUrl"].endswith(f"/fhir/Patient/{entry['resource']['id']}")
    return body, [e["resource"]["id"] for e in body.get("entry", [])]


async def test_search_by_names_is_accent_and_case_insensitive(fhir: Fhir) -> None:
    p = await _population(fhir.api)
    _, found = await _search(fhir, "family=SENE")
    assert found == [p["sene"]]
    _, found = await _search(fhir, "family=ndiaye")
    assert found == [p["ndiaye"]]
    _, found = await _search(fhir, "name=fatou")
    assert set(found) == {p["sene"], p["fatoumata"]}


async def test_search_family_and_given_are_told_apart(fhir: Fhir) -> None:
    p = await _population(fhir.api)
    body, found = await _search(fhir, "family=diallo")
    assert set(found) == {p["aminata"], p["fatoumata"]} and body["total"] == 2
    _, found = await _search(fhir, "given=diallo")
    assert found == [p["diallo_first"]]
    _, found = await _search(fhir, "name=diallo")
    assert set(found) == {p["aminata"], p["fatoumata"], p["diallo_first"]}
    _, found = await _search(fhir, "family=dia&given=ami")
    assert found == [p["aminata"]]


async def test_search_filters(fhir: Fhir) -> None:
    p = await _population(fhir.api)
    _, found = await _search(fhir, "gender=male")
    assert set(found) == {p["ndiaye"], p["diallo_first"]}
    _, found = await _search(fhir, "gender=other")
    assert found == []
    _, found = await _search(fhir, "birthdate=1995-03-15")
    assert found == [p["aminata"]]
    _, found = await _search(fhir, "birthdate=ge1990-01-01&birthdate=lt2000")
    assert set(found) == {p["aminata"], p["ndiaye"]}
    _, found = await _search(fhir, "birthdate=1988")
    assert found == [p["sene"]]
    _, found = await _search(fhir, "address-state=thi")
    assert found == [p["sene"]]
    _, found = await _search(fhir, f"identifier={DHIS2}|Xyz45678901")
    assert found == [p["sene"]]
    _, found = await _search(fhir, "identifier=|Xyz45678901")
    assert found == [p["sene"]]
    _, found = await _search(fhir, f"identifier=|{p['ndiaye']}")
    assert found == [p["ndiaye"]]
    _, found = await _search(fhir, f"identifier={MPI}|{p['ndiaye']}")
    assert found == [p["ndiaye"]]
    _, found = await _search(fhir, f"identifier={MPI}|{ids.mint('SN', 'DKR', 26, 5, 77)}")
    assert found == []
    _, found = await _search(fhir, f"identifier={OTHER}nin|Xyz45678901")
    assert found == []
    _, found = await _search(fhir, f"_id={p['aminata']}")
    assert found == [p["aminata"]]
    _, found = await _search(fhir, "family=diallo&gender=female&birthdate=2001-11-30")
    assert found == [p["fatoumata"]]


async def test_post_search_takes_the_parameters_in_a_form(fhir: Fhir) -> None:
    p = await _population(fhir.api)
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    status, body, _ = await fhir.call("POST", "/fhir/Patient/_search?gender=female", data="family=diallo&given=ami",
                                      headers=form)
    assert status == 200, body
    Bundle.model_validate(body)
    assert [e["resource"]["id"] for e in body["entry"]] == [p["aminata"]]
    assert "family=diallo" in body["link"][0]["url"] and "gender=female" in body["link"][0]["url"]
    assert_outcome(*(await fhir.call("POST", "/fhir/Patient/_search", data="phone=1", headers=form))[:2], 400)
    assert_outcome(*(await fhir.call("POST", "/fhir/Patient/_search", {"family": "diallo"}))[:2], 415)


async def test_search_pages_with_total_and_next_links(fhir: Fhir) -> None:
    for n in range(7):
        await fhir.api.register(first_name=f"Awa{chr(65 + n)}", last_name="Sow", date_of_birth=f"19{60 + n}-01-01",
                                force_create=True)
    seen: list[str] = []
    body, found = await _search(fhir, "family=sow&_count=3")
    assert body["total"] == 7 and len(found) == 3
    seen += found
    while True:
        links = {link["relation"]: link["url"] for link in body["link"]}
        assert "self" in links
        if "next" not in links:
            break
        path = links["next"].split("://", 1)[1].split("/", 1)[1]
        body, found = await _search(fhir, path.split("?", 1)[1])
        seen += found
    assert len(seen) == 7 == len(set(seen))
    body, found = await _search(fhir, "name=sow&_count=0")
    assert body["total"] == 7 and found == []


@pytest.mark.parametrize(
    "query",
    ["phone=123", "family:exact=Diallo", "gender=femme", "birthdate=1995-13-01", "birthdate=ap1995",
     "_count=abc", "_count=-1", "family=", "family=a,b", "gender=male&gender=female", "family=%00",
     f"identifier={MPI}|SN-DKR-26-AAAAAAAA"],
)
async def test_search_refuses_what_it_does_not_understand(fhir: Fhir, query: str) -> None:
    assert_outcome(*(await fhir.call("GET", f"/fhir/Patient?{query}"))[:2], 400)


# -- $match ---------------------------------------------------------------------------------


def match_parameters(resource: dict[str, Any], **extra: Any) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = [{"name": "resource", "resource": resource}]
    if "only_certain" in extra:
        parameters.append({"name": "onlyCertainMatches", "valueBoolean": extra["only_certain"]})
    if "count" in extra:
        parameters.append({"name": "count", "valueInteger": extra["count"]})
    return {"resourceType": "Parameters", "parameter": parameters}


async def test_match_is_ordered_by_score_with_the_bands_of_mpi_match(fhir: Fhir) -> None:
    p = await _population(fhir.api)
    query = patient_resource(identifier=None, name=[{"family": "Dialo", "given": ["Aminata"]}], telecom=None)
    status, body, _ = await fhir.call("POST", "/fhir/Patient/$match", match_parameters(query))
    assert status == 200, body
    Bundle.model_validate(body)
    assert body["type"] == "searchset" and body["total"] == len(body["entry"])
    scores = [e["search"]["score"] for e in body["entry"]]
    assert scores == sorted(scores, reverse=True)
    assert body["entry"][0]["resource"]["id"] == p["aminata"]
    native_status, native = await fhir.api.post(
        "/mpi/match", {"first_name": "Aminata", "last_name": "Dialo", "date_of_birth": "1995-03-15", "gender": "F",
                       "region_code": "DKR", "country_code": "SN"})
    assert native_status == 200
    grades = {"certain": "certain", "probable": "probable", "possible": "possible", "unlikely": "certainly-not"}
    expected = [(m["mpi_id"], m["similarity_score"], grades[m["confidence"]]) for m in native["matches"]]
    got = []
    for entry in body["entry"]:
        Patient.model_validate(entry["resource"])
        assert entry["search"]["mode"] == "match"
        (grade,) = entry["search"]["extension"]
        assert grade["url"] == MATCH_GRADE
        got.append((entry["resource"]["id"], entry["search"]["score"], grade["valueCode"]))
    assert got == expected


async def test_match_only_certain_and_count(fhir: Fhir) -> None:
    p = await _population(fhir.api)
    same = patient_resource(identifier=None)
    status, body, _ = await fhir.call("POST", "/fhir/Patient/$match", match_parameters(same, only_certain=True))
    assert status == 200
    assert [e["resource"]["id"] for e in body["entry"]] == [p["aminata"]]
    assert body["entry"][0]["search"]["extension"][0]["valueCode"] == "certain"
    loose = patient_resource(identifier=None, name=[{"family": "Diallo", "given": ["Fatou"]}], birthDate=None,
                             telecom=None)
    status, body, _ = await fhir.call("POST", "/fhir/Patient/$match", match_parameters(loose, only_certain=True))
    assert status == 200 and body["total"] == 0
    status, body, _ = await fhir.call("POST", "/fhir/Patient/$match", match_parameters(loose, count=1))
    assert status == 200 and len(body["entry"]) == 1


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (patient_resource(), 422),  # a Patient, not a Parameters
        ({"resourceType": "Parameters", "parameter": []}, 400),
        (match_parameters(patient_resource(), count=0), 400),
        (match_parameters({"resourceType": "Practitioner"}), 422),
        (match_parameters({"resourceType": "Patient", "gender": "female"}), 422),  # nothing to match on
        (match_parameters(patient_resource(name=[{"family": "Di\x00allo"}])), 400),
        ({"resourceType": "Parameters", "parameter": [{"name": "foo", "valueString": "x"}]}, 400),
    ],
)
async def test_match_refusals(fhir: Fhir, body: Any, expected: int) -> None:
    assert_outcome(*(await fhir.call("POST", "/fhir/Patient/$match", body))[:2], expected)


# -- PIXm -----------------------------------------------------------------------------------


async def test_pix_resolves_a_dhis2_uid_to_the_mpi_id(fhir: Fhir) -> None:
    mpi_id = await fhir.api.register(**{**AMINATA, "external_ids": {"dhis2_uid": "abcDEF123gh", "nin": "42"}})
    status, body, _ = await fhir.call("GET", f"/fhir/Patient/$ihe-pix?sourceIdentifier={DHIS2}|abcDEF123gh")
    assert status == 200, body
    Parameters.model_validate(body)
    targets = [p["valueIdentifier"] for p in body["parameter"] if p["name"] == "targetIdentifier"]
    assert {"system": MPI, "value": mpi_id} in targets and {"system": OTHER + "nin", "value": "42"} in targets
    assert {"system": DHIS2, "value": "abcDEF123gh"} not in targets
    (target_id,) = [p["valueReference"]["reference"] for p in body["parameter"] if p["name"] == "targetId"]
    assert target_id == f"Patient/{mpi_id}"
    status, body, _ = await fhir.call(
        "GET", f"/fhir/Patient/$ihe-pix?sourceIdentifier={DHIS2}|abcDEF123gh&targetSystem={MPI}")
    assert [p["valueIdentifier"] for p in body["parameter"] if p["name"] == "targetIdentifier"] == [
        {"system": MPI, "value": mpi_id}]


async def test_pix_follows_merges(fhir: Fhir) -> None:
    target = await fhir.api.register(**AMINATA)
    source = await fhir.api.register(**{**AMINATA, "first_name": "Aminta", "external_ids": {}, "force_create": True})
    await fhir.api.post("/mpi/merge", {"source_mpi_id": source, "target_mpi_id": target, "reason": "same"},
                        role="supervisor")
    status, body, _ = await fhir.call("GET", f"/fhir/Patient/$ihe-pix?sourceIdentifier={MPI}|{source}")
    assert status == 200
    Parameters.model_validate(body)
    assert {"name": "targetId", "valueReference": {"reference": f"Patient/{target}"}} in body["parameter"]


async def test_pix_refusals(fhir: Fhir) -> None:
    await fhir.api.register(**AMINATA)
    pix = "/fhir/Patient/$ihe-pix"
    assert_outcome(*(await fhir.call("GET", f"{pix}?sourceIdentifier={DHIS2}|zzzzzzzzzzz"))[:2], 404)
    assert_outcome(*(await fhir.call("GET", f"{pix}?sourceIdentifier=urn:nobody|x"))[:2], 400)
    assert_outcome(*(await fhir.call("GET", f"{pix}?sourceIdentifier=abcDEF123gh"))[:2], 400)
    assert_outcome(*(await fhir.call("GET", pix))[:2], 400)
    assert_outcome(*(await fhir.call(
        "GET", f"{pix}?sourceIdentifier={DHIS2}|abcDEF123gh&targetSystem=urn:nobody"))[:2], 403)


# -- auth, audit, OpenAPI, docs -------------------------------------------------------------


@pytest.mark.parametrize("route", [r for r in FHIR_ROUTES if r.role], ids=lambda r: f"{r.method} {r.path}")
async def test_every_private_fhir_route_needs_a_token(fhir: Fhir, route: Any) -> None:
    path = route.path.replace("{id}", "SN-DKR-26-AAAAAAAA")
    status, body, _ = await fhir.call(route.method, path, {"resourceType": "Patient"}, role=None)
    assert_outcome(status, body, 401)


async def test_fhir_reads_are_audited_like_native_ones(fhir: Fhir) -> None:
    mpi_id = await fhir.api.register(**AMINATA)
    await fhir.call("GET", f"/fhir/Patient/{mpi_id}")
    await fhir.call("GET", "/fhir/Patient?family=diallo")
    await fhir.call("POST", "/fhir/Patient/$match", match_parameters(patient_resource(identifier=None)))
    await fhir.call("GET", f"/fhir/Patient/$ihe-pix?sourceIdentifier={DHIS2}|abcDEF123gh")
    rows: list[Any] = []
    for _ in range(100):
        await fhir.api.store.flush_read_audit()
        async with fhir.api.store.read() as conn:
            rows = (await conn.execute(sa.select(t.audit_log.c.action, t.audit_log.c.actor, t.audit_log.c.detail)
                                       .where(t.audit_log.c.action.in_(["read", "search", "match", "pix_query"])))).all()
        if len(rows) >= 4:
            break
        await asyncio.sleep(0.05)
    assert {r.action for r in rows} == {"read", "search", "match", "pix_query"}
    assert all(r.actor == "registrar:test-registrar" for r in rows)
    assert mpi_id in next(r.detail for r in rows if r.action == "search")


async def test_openapi_lists_the_fhir_routes(fhir: Fhir) -> None:
    status, document = await fhir.api.get("/openapi.json", role=None)
    assert status == 200
    for route in FHIR_ROUTES:
        operation = document["paths"][route.path][route.method.lower()]
        assert "application/fhir+json" in json.dumps(operation)


async def test_native_errors_keep_their_shape(fhir: Fhir) -> None:
    status, body = await fhir.api.get("/mpi/SN-DKR-26-AAAAAAAA")
    assert status == 400 and body["status"] == "invalid_check_character"
    status, body = await fhir.api.get("/nowhere")
    assert status == 404 and body["status"] == "not_found"


def test_readme_documents_the_fhir_face() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    for route in FHIR_ROUTES:
        assert f"`{route.method} {route.path}`" in readme, route.path
    for text in (MATCH_GRADE, PROGRAMME_EXTENSION, "MPI_FHIR_BASE_URL", "OperationOutcome"):
        assert text in readme, text


# -- malformed input everywhere: 4xx OperationOutcome, never the native shape, never a 500 ----

MALFORMED: list[Any] = [
    "not json", [], 42, None, {"unknown": 1}, {"resourceType": 12}, {"resourceType": "Patient", "name": "x"},
    {"resourceType": "Patient", "name": [{"family": "A", "given": "B"}]},
    {"resourceType": "Patient", "identifier": [{"system": 1, "value": ["x"]}]},
    {"resourceType": "Patient", "telecom": [{"system": "phone", "value": 5}], "address": [{"state": ["DKR"]}]},
    {"resourceType": "Patient", "gender": ["male"], "birthDate": 19950315},
    {"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": "x"}]},
    {"resourceType": "Parameters", "parameter": [{"name": "count", "valueInteger": 1.5}]},
    {"resourceType": "Parameters", "parameter": "x"},
    {"resourceType": "Patient", "id": 7, "name": [{"family": "\u0085"}]},
]


@pytest.mark.parametrize("route", [r for r in FHIR_ROUTES if r.method in ("POST", "PUT")],
                         ids=lambda r: f"{r.method} {r.path}")
async def test_malformed_bodies_are_4xx_operation_outcomes(fhir: Fhir, route: Any) -> None:
    mpi_id = await fhir.api.register(**AMINATA)
    path = route.path.replace("{id}", mpi_id)
    for body in MALFORMED:
        data = body if isinstance(body, str) else json.dumps(body)
        status, answer, _ = await fhir.call(route.method, path, data=data, role="admin")
        assert 400 <= status < 500, (body, answer)
        assert_outcome(status, answer, status)
    form = {"Content-Type": "application/x-www-form-urlencoded"} if path.endswith("_search") else {}
    status, answer, _ = await fhir.call(route.method, path, data=b"{" + b" " * 300_000 + b"}", role="admin",
                                        headers=form)
    assert_outcome(status, answer, 413)


@pytest.mark.parametrize("route", [r for r in FHIR_ROUTES if r.method == "GET"], ids=lambda r: f"{r.method} {r.path}")
async def test_odd_queries_never_fail_the_server(fhir: Fhir, route: Any) -> None:
    path = route.path.replace("{id}", "SN-DKR-26-AAAAAAAA")
    for query in ["", "?%00=1", "?_count=99999999999", "?sourceIdentifier=%7C", "?identifier=%7C%7C",
                  "?birthdate=eq", "?name=%27%27", "?_offset=-3", "?family=%C3%A9%CC%81"]:
        status, answer, _ = await fhir.call("GET", path + query, role="admin")
        assert status < 500, (query, answer)
        if status >= 400:
            assert_outcome(status, answer, status)


def test_fhir_settings_must_be_absolute_uris() -> None:
    with pytest.raises(SettingsError):
        Settings(fhir_dhis2_system="dhis2")
    with pytest.raises(SettingsError):
        Settings(fhir_mpi_id_system=Settings().fhir_dhis2_system)
    with pytest.raises(SettingsError):
        Settings(fhir_base_url="ftp://x")
    assert Settings.from_env({"MPI_FHIR_DHIS2_SYSTEM": "urn:dhis2:uid"}).fhir_dhis2_system == "urn:dhis2:uid"
