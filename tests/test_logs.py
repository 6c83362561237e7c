"""What a serving node and hub write to their logs holds no personal data and no card token.

Real processes at log level INFO, their stderr captured; an unexpected database error is
provoked with a trigger so that SQLAlchemy has the row's values in hand when it fails.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
from cluster import ENV, ROOT, Hub, call, cli, free_port, wait_http
from conftest import AMINATA

SECRET_PERSON = {
    "first_name": "Zeynabou", "last_name": "Kouyateh", "date_of_birth": "1987-11-23", "gender": "F",
    "region_code": "DKR", "country_code": "SN", "phone_number": "+221776543210",
    "external_ids": {"dhis2_uid": "zzzQQQ987xy"},
}


def _serve(kind: str, args: list[str], log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", kind, "serve", *args, "--port", str(port)], cwd=ROOT,
                                env={**ENV, "MPI_LOG_LEVEL": "INFO", "MPI_LOG_FORMAT": "json"},
                                stdout=subprocess.DEVNULL, stderr=out)
    url = f"http://127.0.0.1:{port}"
    wait_http(url, proc)
    return proc, url


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(20)


def _exercise(url: str, token: str) -> list[str]:
    """Calls that carry personal data in bodies, paths and query strings; what must not be logged."""
    status, created = call(url, "POST", "/mpi/register", token, AMINATA)
    assert status == 201, created
    mpi_id = created["mpi_id"]
    assert call(url, "GET", f"/mpi/{mpi_id}", token)[0] == 200
    assert call(url, "GET", f"/mpi/{mpi_id.lower()}", token)[0] == 200
    assert call(url, "GET", "/mpi/resolve-dhis2/abcDEF123gh", token)[0] == 200
    assert call(url, "GET", "/mpi/search?q=diallo&date_of_birth=1995-03-15", token)[0] == 200
    assert call(url, "PATCH", f"/mpi/{mpi_id}", token, {"phone_number": "+221779876543"})[0] == 200
    status, card = call(url, "POST", f"/mpi/{mpi_id}/card", token, {"campaign_id": "c1", "programme_type": "vaccination"})
    assert status == 201, card
    assert call(url, "GET", f"/mpi/verify/{card['qr_token']}")[0] == 200
    assert call(url, "GET", "/mpi/verify/unknownTokenUnknownToken0123")[0] == 404
    assert call(url, "GET", "/mpi/SN-DKR-26-AAAAAAAA", token)[0] == 400
    status, body = call(url, "POST", "/mpi/register", token, SECRET_PERSON)
    assert status == 500 and body["status"] == "internal", body
    return ["Aminata", "Diallo", "diallo", "1995-03-15", "+221771234567", "771234567", "+221779876543",
            "abcDEF123gh", mpi_id, mpi_id.lower(), mpi_id[-8:], card["qr_token"], "unknownTokenUnknownToken0123",
            "AAAAAAAA", "Zeynabou", "Kouyateh", "1987-11-23", "+221776543210", "776543210", "zzzQQQ987xy"]


def _check(log: Path, secrets: list[str]) -> list[dict[str, Any]]:
    text = log.read_text()
    for secret in secrets:
        assert secret not in text, f"{secret!r} is in the log:\n{text}"
    records = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    routes = {r.get("route") for r in records if r.get("msg") == "request"}
    assert {"/mpi/{mpi_id}", "/mpi/verify/{token}", "/mpi/resolve-dhis2/{dhis2_uid}", "/mpi/register"} <= routes, routes
    errors = [r for r in records if r.get("msg") == "unexpected error"]
    assert errors and "Traceback" in errors[0]["exc"], records
    # The database's own first line is kept: an operator still sees what went wrong.
    assert "the disk said no" in errors[0]["exc"], errors
    return records


def test_a_nodes_log_holds_no_personal_data_nor_tokens(tmp_path: Path) -> None:
    data = tmp_path / "node"
    cli("node", "init", "--data-dir", str(data), "--country", "SN", "--region", "DKR")
    token = cli("node", "token", "create", "--data-dir", str(data), "--role", "admin", "--name", "a").stdout.strip()
    log = tmp_path / "node.log"
    proc, url = _serve("node", ["--data-dir", str(data)], log)
    try:
        with sqlite3.connect(data / "mpi.sqlite3") as db:  # the disk "fails" on the next new identity but one
            db.execute("CREATE TRIGGER boom BEFORE INSERT ON identity WHEN NEW.first_name = 'Zeynabou' "
                       "BEGIN SELECT RAISE(ABORT, 'the disk said no'); END")
        secrets = _exercise(url, token)
    finally:
        _stop(proc)
    _check(log, secrets)


def test_a_hubs_log_holds_no_personal_data_nor_tokens(hub: Hub, tmp_path: Path) -> None:
    # PostgreSQL repeats a row's values in DETAIL (as a unique violation does): this trigger too.
    with psycopg.connect(hub.database_url, autocommit=True) as db:
        db.execute("""CREATE FUNCTION boom() RETURNS trigger AS $$ BEGIN
                     IF NEW.first_name = 'Zeynabou' THEN
                       RAISE EXCEPTION 'the disk said no' USING DETAIL = 'row ' || NEW.first_name || ' ' || NEW.phone_number;
                     END IF; RETURN NEW; END $$ LANGUAGE plpgsql""")
        db.execute("CREATE TRIGGER boom BEFORE INSERT ON identity FOR EACH ROW EXECUTE FUNCTION boom()")
    log = tmp_path / "hub.log"
    proc, url = _serve("hub", ["--database-url", hub.database_url], log)
    try:
        secrets = _exercise(url, hub.token)
    finally:
        _stop(proc)
    _check(log, secrets)
