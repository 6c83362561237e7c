"""FHIR refuses what the native API refuses: search limits, the one JSON decoder, the identifier index.

Against a real server on SQLite and PostgreSQL (the fixtures of test_fhir.py); every refusal
is a 400 OperationOutcome validated with fhir.resources, never a 5xx.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import sqlalchemy as sa
from conftest import AMINATA, Api
from test_fhir import DHIS2, MPI, Fhir, _population, _search, assert_outcome, patient_resource

from shared.fhir.outcome import ERROR_CODE_SYSTEM
from shared.fhir.resources import Systems, patient
from shared.schemas import (
    SEARCH_LIMIT_MAX,
    SEARCH_OFFSET_MAX,
    SEARCH_REPEAT_MAX,
    SEARCH_TEXT_MAX,
    SEARCH_WORDS_MAX,
)
from shared.settings import Settings

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def fhir(api: Api) -> Fhir:
    return Fhir(api)


def _words(n: int) -> str:
    """``n`` different name words (two letters each: ab ac ad ... ba bb ...)."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    return " ".join(letters[k // 26 % 26] + letters[k % 26] for k in range(1, n + 1))


def _code(body: Any) -> str:
    (coding,) = body["issue"][0]["details"]["coding"]
    assert coding["system"] == ERROR_CODE_SYSTEM
    return str(coding["code"])


async def _both(fhir: Fhir, query: str) -> list[tuple[int, Any]]:
    """The answers of ``GET /fhir/Patient?query`` and of ``POST /fhir/Patient/_search`` with it as a form."""
    get = await fhir.call("GET", f"/fhir/Patient?{query}")
    post = await fhir.call("POST", "/fhir/Patient/_search", data=query, headers=FORM)
    return [get[:2], post[:2]]


# -- the native search limits ---------------------------------------------------------------

OVER_THE_LIMITS = {
    "too_many_words": f"name={quote(_words(SEARCH_WORDS_MAX + 1))}",
    "too_many_words_across_parameters": f"family={quote(_words(6))}&given={quote(_words(SEARCH_WORDS_MAX)[-17:])}",
    "too_long": "family=" + "a" * (SEARCH_TEXT_MAX + 1),
    "too_long_across_parameters": f"family={'a' * 150}&given={'b' * 51}",
    "count_too_high": f"family=diallo&_count={SEARCH_LIMIT_MAX + 1}",
    "offset_too_far": f"family=diallo&_offset={SEARCH_OFFSET_MAX + 1}",
    "repeated_identifier": "&".join(f"identifier=%7Cx{n}" for n in range(SEARCH_REPEAT_MAX + 1)),
    "repeated_birthdate": "&".join("birthdate=ge1990" for _ in range(SEARCH_REPEAT_MAX + 1)),
    "identifier_too_long": "identifier=%7C" + "x" * 201,
    "address_state_not_a_region": "address-state=" + "x" * 5000,
}


@pytest.mark.parametrize("query", OVER_THE_LIMITS.values(), ids=OVER_THE_LIMITS.keys())
async def test_search_over_the_native_limits_is_a_400_outcome(fhir: Fhir, query: str) -> None:
    await fhir.api.register(**AMINATA)
    for status, body in await _both(fhir, query):
        assert_outcome(status, body, 400)
        assert _code(body) == "invalid_search"


async def test_search_at_the_limits_still_answers(fhir: Fhir) -> None:
    mpi_id = await fhir.api.register(**AMINATA)
    words = _words(SEARCH_WORDS_MAX - 1)
    at_the_limits = [
        f"family=diallo&given={quote(words)}",  # ten words: found nobody, but searched
        f"family=diallo&given={'b' * (SEARCH_TEXT_MAX - 6)}",
        f"family=diallo&_count={SEARCH_LIMIT_MAX}&_offset={SEARCH_OFFSET_MAX}",
        "&".join([f"identifier=%7C{mpi_id}"] * SEARCH_REPEAT_MAX),
    ]
    for query in at_the_limits:
        for status, body in await _both(fhir, query):
            assert status == 200, (query, body)
    _, found = await _search(fhir, "&".join([f"identifier=%7C{mpi_id}"] * SEARCH_REPEAT_MAX))
    assert found == [mpi_id]


async def test_a_search_body_of_thousands_of_words_is_a_400_not_a_5xx(fhir: Fhir) -> None:
    await fhir.api.register(**AMINATA)
    many = "&".join(f"name={w}" for w in _words(20_000).split())  # 180 kB, under the body limit
    status, body, _ = await fhir.call("POST", "/fhir/Patient/_search", data=many, headers=FORM)
    assert_outcome(status, body, 400)
    one_value = "name=" + quote(_words(20_000))
    status, body, _ = await fhir.call("POST", "/fhir/Patient/_search", data=one_value, headers=FORM)
    assert_outcome(status, body, 400)


async def test_native_q_takes_at_most_the_word_limit(fhir: Fhir) -> None:
    """``/mpi/search`` refuses the words FHIR refuses: each is an index probe."""
    status, body = await fhir.api.get(f"/mpi/search?q={quote(_words(SEARCH_WORDS_MAX + 1))}")
    assert status == 400 and body["status"] == "validation_error" and body["details"][0]["field"] == "q", body
    status, body = await fhir.api.get(f"/mpi/search?q={quote(_words(SEARCH_WORDS_MAX))}")
    assert status == 200 and body["total"] == 0, body


async def test_a_search_form_that_is_not_utf8_is_a_400(fhir: Fhir) -> None:
    for form in (b"name=%FF%FE", b"name=\xff"):
        status, body, _ = await fhir.call("POST", "/fhir/Patient/_search", data=form, headers=FORM)
        assert_outcome(status, body, 400)
        assert _code(body) == "invalid_search"


@pytest.mark.parametrize(
    "text",
    [_words(SEARCH_WORDS_MAX), _words(SEARCH_WORDS_MAX + 1), "a" * SEARCH_TEXT_MAX, "a" * (SEARCH_TEXT_MAX + 1),
     "diallo " * 28, "diallo " * 29, "Fatou Binta Diallo"],
)
async def test_fhir_name_refuses_what_native_q_refuses(fhir: Fhir, text: str) -> None:
    """The same text is refused by ``/mpi/search?q=`` exactly when ``/fhir/Patient?name=`` refuses it."""
    native, _ = await fhir.api.get(f"/mpi/search?q={quote(text)}")
    status, body, _ = await fhir.call("GET", f"/fhir/Patient?name={quote(text)}")
    assert native in (200, 400) and status == native, (native, body)


# -- the one JSON decoder ------------------------------------------------------------------

DECODER_CASES = {
    "5000_digit_integer": '{"resourceType": "Patient", "multipleBirthInteger": ' + "7" * 5000 + "}",
    "nan": '{"resourceType": "Patient", "multipleBirthInteger": NaN}',
    "infinity": '{"resourceType": "Patient", "multipleBirthInteger": Infinity}',
    "minus_infinity": '{"resourceType": "Parameters", "parameter": [{"name": "count", "valueInteger": -Infinity}]}',
    "too_deep": '{"resourceType": "Patient", "extension": ' + "[" * 40 + "]" * 40 + "}",
}


@pytest.mark.parametrize("raw", DECODER_CASES.values(), ids=DECODER_CASES.keys())
async def test_fhir_bodies_go_through_the_native_decoder(fhir: Fhir, raw: str) -> None:
    mpi_id = await fhir.api.register(**AMINATA)
    status, native = await fhir.api.call("POST", "/mpi/register", data=raw, headers={"Content-Type": "application/json"})
    assert status == 400 and native["status"] == "invalid_json", native
    for method, path in [("POST", "/fhir/Patient"), ("PUT", f"/fhir/Patient/{mpi_id}"), ("POST", "/fhir/Patient/$match")]:
        status, body, _ = await fhir.call(method, path, data=raw)
        assert_outcome(status, body, 400)
        assert _code(body) == "invalid_json", (path, body)


# -- identifier search through an index -----------------------------------------------------


async def _plan(conn: Any, kind: str, statement: str, parameters: Any) -> str:
    if kind == "sqlite":
        rows = await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
        return "\n".join(str(r[-1]) for r in rows)
    # A table of a few rows is cheaper to scan: forbid scans to see whether an index can serve.
    await conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
    rows = await conn.exec_driver_sql(f"EXPLAIN {statement}", parameters)
    return "\n".join(str(r[0]) for r in rows)


async def test_identifier_search_reads_the_external_id_value_index(fhir: Fhir, store_kind: str) -> None:
    p = await _population(fhir.api)
    seen: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        if "external_id.value =" in statement:
            seen.append((statement, parameters))

    engine = fhir.api.store.reader.sync_engine
    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        _, found = await _search(fhir, "identifier=%7CXyz45678901")
        assert found == [p["sene"]]
        _, found = await _search(fhir, f"identifier={quote(DHIS2)}%7CXyz45678901&family=sene")
        assert found == [p["sene"]]
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)
    assert seen, "the identifier search ran no statement on external_id.value"
    async with fhir.api.store.read() as conn:
        for statement, parameters in seen:
            plan = await _plan(conn, store_kind, statement, parameters)
            assert "external_id" in plan and "Seq Scan on external_id" not in plan, plan
            assert not any(line.lstrip("-| ").startswith("SCAN external_id") for line in plan.splitlines()), plan
            if "external_id.system =" not in statement:  # any system: only the value index serves
                assert "ix_external_id_value" in plan, plan


# -- one view of an identity -----------------------------------------------------------------


def test_the_fhir_face_reads_the_registry_only_through_the_identity_layer() -> None:
    """No module under shared/fhir reads a table itself: views and searches are the identity layer's.

    (A connection may pass through, typed: ``sqlalchemy.ext.asyncio``; no statement is built here.)
    """
    for path in sorted((ROOT / "shared" / "fhir").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [("." * node.level) + (node.module or "")]
            for name in names:
                if name == "sqlalchemy.ext.asyncio":
                    continue
                assert not name.startswith(("sqlalchemy", "..storage", "shared.storage")), (path.name, name)


async def test_search_and_read_answer_the_native_view_as_a_patient(fhir: Fhir) -> None:
    p = await _population(fhir.api)
    await fhir.api.post(f"/mpi/{p['aminata']}/programmes", {"programme_type": "vaccination"})
    s = Settings()
    systems = Systems(s.fhir_mpi_id_system, s.fhir_dhis2_system, s.fhir_identifier_base)
    body, found = await _search(fhir, "name=diallo")
    assert set(found) == {p["aminata"], p["fatoumata"], p["diallo_first"]}
    for entry in body["entry"]:
        mpi_id = entry["resource"]["id"]
        _, native = await fhir.api.get(f"/mpi/{mpi_id}")
        status, read, _ = await fhir.call("GET", f"/fhir/Patient/{mpi_id}")
        assert status == 200 and entry["resource"] == read == patient(native, systems)
    assert any(e["resource"].get("extension") for e in body["entry"])  # the programme came through


async def test_identifier_search_still_finds_by_every_system(fhir: Fhir) -> None:
    p = await _population(fhir.api)
    for query, expected in [
        ("identifier=%7CXyz45678901", [p["sene"]]),
        (f"identifier={quote(DHIS2)}%7CXyz45678901", [p["sene"]]),
        (f"identifier={quote(MPI)}%7C{p['ndiaye']}", [p["ndiaye"]]),
        (f"identifier=%7C{p['ndiaye']}&identifier=%7C{p['ndiaye']}", [p["ndiaye"]]),
        (f"identifier=%7CXyz45678901&identifier=%7C{p['ndiaye']}", []),
        ("identifier=urn%3Aunknown%7CXyz45678901", []),
    ]:
        _, found = await _search(fhir, query)
        assert found == expected, query


async def test_create_still_answers_a_valid_patient_after_the_decoder(fhir: Fhir) -> None:
    status, body, _ = await fhir.call("POST", "/fhir/Patient", data=json.dumps(patient_resource()))
    assert status == 201, body
