"""Hostile input: control characters in any text, JSON that breaks parsers. Always a 400, never a 500.

Runs over the API fixture (a real server on SQLite and on PostgreSQL), a real hub process
and the real ``mpi-node import`` command.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from cluster import Hub, call
from conftest import AMINATA, Api
from test_cli import node

from shared.routes import ROUTES

CONTROL = ["\u0000", "\u0007", "\u001b", "\u007f", "\u0085", "\n", "\t", "\ud800"]


def _error(status: int, body: Any, code: str = "validation_error") -> None:
    assert status == 400, body
    assert body["status"] == code and isinstance(body["error"], str), body


@pytest.mark.parametrize("char", CONTROL, ids=[f"U+{ord(c):04X}" for c in CONTROL])
@pytest.mark.parametrize("field", ["first_name", "last_name", "region_code", "phone_number"])
async def test_register_refuses_control_characters(api: Api, field: str, char: str) -> None:
    value = {"first_name": "Ami", "last_name": "Dia", "region_code": "DK", "phone_number": "+22177123456"}[field]
    status, body = await api.post("/mpi/register", {**AMINATA, field: value + char + "x"})
    _error(status, body)
    assert body["details"][0]["field"] == field


async def test_control_characters_are_refused_in_every_text_of_every_body(api: Api) -> None:
    mpi_id = await api.register(**AMINATA)
    other = await api.register(**{**AMINATA, "first_name": "Fatou", "last_name": "Sow", "phone_number": None,
                                   "external_ids": {}, "force_create": True})
    cases: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", "/mpi/register", {**AMINATA, "external_ids": {"moh\u0000": "x"}}),
        ("POST", "/mpi/register", {**AMINATA, "external_ids": {"moh": "12\u00003"}}),
        ("PATCH", f"/mpi/{mpi_id}", {"first_name": "Awa\u0000"}),
        ("POST", "/mpi/match", {"first_name": "Ami\u0000nata"}),
        ("POST", f"/mpi/{mpi_id}/link-dhis2", {"dhis2_uid": "abcDEF123gh", "dhis2_instance_url": "https://x\u0000y"}),
        ("POST", f"/mpi/{mpi_id}/programmes", {"programme_type": "vaccination\n"}),
        ("POST", f"/mpi/{mpi_id}/card", {"campaign_id": "c1\u0000", "programme_type": "vaccination"}),
        ("POST", f"/mpi/{mpi_id}/card/revoke", {"reason": "lost\u0000"}),
        ("POST", "/mpi/merge", {"source_mpi_id": other, "target_mpi_id": mpi_id, "reason": "same\u0000"}),
        ("POST", "/mpi/unmerge", {"mpi_id": other, "reason": "oops\u001b"}),
        ("POST", "/review/1/decision", {"decision": "merge", "reason": "x\u0000"}),
    ]
    for method, path, payload in cases:
        status, body = await api.call(method, path, role="admin", json=payload)
        _error(status, body)
    # Free text (a reason) may hold line breaks and tabs; a name may not.
    status, body = await api.post(f"/mpi/{mpi_id}/card", {"campaign_id": "c1", "programme_type": "vaccination"})
    assert status == 201, body
    status, body = await api.post(f"/mpi/{mpi_id}/card/revoke", {"reason": "lost\n\tat the market"}, role="admin")
    assert status == 200, body


@pytest.mark.parametrize(
    "path",
    ["/mpi/search?q=dia%00llo", "/mpi/search?q=%1b", "/mpi/search?region_code=DKR%0A",
     "/mpi/search?mpi_id=SN-DKR-26-AAAAAAA%00", "/mpi/search?program=vaccination%0A",
     "/mpi/search?q%00=x", "/review?reason=x%00"],
)
async def test_query_strings_refuse_control_characters(api: Api, path: str) -> None:
    status, body = await api.get(path, role="admin")
    _error(status, body)


@pytest.mark.parametrize(
    "path",
    ["/mpi/SN-DKR-26-9XQ7LM2A%00", "/mpi/%00", "/mpi/resolve-dhis2/abcDEF123gh%0A",
     "/mpi/SN-DKR-26-9XQ7LM2A%0A/card", "/mpi/verify/a3f8c2e1d4b7f9e2a1c3a3f8c2e1d4b7%0A"],
)
async def test_path_parameters_refuse_control_characters(api: Api, path: str) -> None:
    status, body = await api.get(path, role="admin")
    _error(status, body)


async def test_a_card_token_with_a_trailing_newline_is_not_a_token(api: Api) -> None:
    mpi_id = await api.register(**AMINATA)
    status, card = await api.post(f"/mpi/{mpi_id}/card", {"campaign_id": "c1", "programme_type": "vaccination"})
    assert status == 201
    status, body = await api.get(f"/mpi/verify/{card['qr_token']}", role=None)
    assert status == 200 and body["status"] == "valid"
    status, body = await api.get(f"/mpi/verify/{card['qr_token']}%0A", role=None)
    assert status == 400, body


DEEP = b"[" * 100_000 + b"]" * 100_000
NESTED_OBJECTS = b'{"a":' * 5000 + b"1" + b"}" * 5000
HUGE_INT = b'{"first_name": ' + b"9" * 5000 + b"}"
EVIL_JSON = {
    "deep_arrays": DEEP,
    "deep_objects": NESTED_OBJECTS,
    "moderately_deep": b'{"external_ids": ' + b"[" * 500 + b"]" * 500 + b"}",
    "huge_int": HUGE_INT,
    "huge_int_limit": b'{"limit": ' + b"1" * 5000 + b"}",
    "nan": b'{"first_name": "A", "min_score": NaN}',
    "infinity": b'{"first_name": "A", "min_score": -Infinity}',
    "latin1": '{"first_name": "Séné"}'.encode("latin-1"),
    "lone_surrogate": b'{"first_name": "\\ud800", "last_name": "x"}',
}


@pytest.mark.parametrize("name", list(EVIL_JSON))
async def test_malformed_json_is_400_on_every_json_route(api: Api, name: str) -> None:
    mpi_id = await api.register(**AMINATA)
    routes = [(r.method, r.path.replace("{mpi_id}", mpi_id).replace("{id}", "1")) for r in ROUTES if r.body]
    routes.append(("POST", "/review/1/decision"))
    for method, path in routes:
        status, body = await api.call(method, path, role="admin", data=EVIL_JSON[name],
                                      headers={"Content-Type": "application/json"})
        assert status == 400, (method, path, body)
        assert body["status"] in ("invalid_json", "validation_error"), body


def _raw(url: str, method: str, path: str, data: bytes, token: str | None = None) -> tuple[int, Any]:
    import urllib.error
    import urllib.request

    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    request = urllib.request.Request(url + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_the_hub_refuses_nul_and_malformed_json_with_400(hub: Hub) -> None:
    status, body = call(hub.url, "POST", "/mpi/register", hub.token, {**AMINATA, "first_name": "Ami\u0000nata"})
    _error(status, body)
    status, body = call(hub.url, "POST", "/mpi/match", hub.token, {"last_name": "Dia\u0000llo"})
    _error(status, body)
    status, body = call(hub.url, "GET", "/mpi/search?q=a%00b", hub.token)
    _error(status, body)
    for data in (DEEP, HUGE_INT):
        status, body = _raw(hub.url, "POST", "/mpi/register", data, hub.token)
        _error(status, body, "invalid_json")
    status, body = call(hub.url, "POST", "/mpi/register", hub.token, AMINATA)
    assert status == 201, body


def test_the_hubs_public_enroll_refuses_malformed_json_with_400(hub: Hub) -> None:
    for data in (DEEP, HUGE_INT):
        status, body = _raw(hub.url, "POST", "/sync/enroll", data)
        assert status == 400, body


def test_import_reports_control_characters_and_bad_json_by_line(tmp_path: Path) -> None:
    data = tmp_path / "n"
    assert node("init", "--data-dir", str(data), "--country", "SN", "--region", "DKR").returncode == 0
    csv_file = tmp_path / "people.csv"
    csv_file.write_bytes(
        b"first_name,last_name,region_code,country_code\n"
        b"Awa,Ndiaye,DKR,SN\n"
        b"Fa\x00tou,Sow,DKR,SN\n"
        b"Khady,Fa\x1bll,DKR,SN\n"
        b"Mariama,Ba\xff,DKR,SN\n"
        b"Moussa,Diop,DKR,SN\n"
    )
    done = node("import", "--data-dir", str(data), str(csv_file))
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    for line in (3, 4, 5):
        assert f"people.csv:{line}: " in done.stderr and "control characters" in done.stderr, done.stderr
    assert "2 created" in done.stdout and "3 errors" in done.stdout, done.stdout

    jsonl = tmp_path / "people.jsonl"
    rows = [
        json.dumps({"first_name": "Ibou", "last_name": "Gueye", "region_code": "DKR", "country_code": "SN"}),
        json.dumps({"first_name": "Ibou\u0000", "last_name": "Gueye", "region_code": "DKR", "country_code": "SN"}),
        "[" * 100_000 + "]" * 100_000,
        '{"first_name": ' + "9" * 5000 + "}",
        '{"first_name": "Cheikh", "last_name": "Sarr", "region_code": "DKR", "country_code": "SN"}',
    ]
    jsonl.write_text("\n".join(rows) + "\n")
    done = node("import", "--data-dir", str(data), str(jsonl))
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    for line in (2, 3, 4):
        assert f"people.jsonl:{line}: " in done.stderr, done.stderr
    assert "2 created" in done.stdout and "3 errors" in done.stdout, done.stdout
    with sqlite3.connect(data / "mpi.sqlite3") as db:
        names = {r[0] for r in db.execute("select first_name from identity")}
    assert names == {"Awa", "Moussa", "Ibou", "Cheikh"}
