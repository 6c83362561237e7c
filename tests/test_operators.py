"""What operators use: the admin token of scripts/node, token list and expiry, the audit log
read back, a health check that checks, and import reports that are never overwritten.

Everything through real processes: scripts/node, mpi-node, mpi-hub, served APIs.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import psycopg
from cluster import ENV, ROOT, Hub, Server, call, cli, free_port, wait_http
from conftest import AMINATA


def _node(tmp_path: Path, name: str = "node") -> tuple[Path, Server]:
    data = tmp_path / name
    cli("node", "init", "--data-dir", str(data), "--country", "SN", "--region", "DKR")
    token = cli("node", "token", "create", "--data-dir", str(data), "--role", "admin", "--name", "boss").stdout.strip()
    return data, Server("node", ["--data-dir", str(data)], free_port(), token)


def _scripts_node(data: Path) -> str:
    port = free_port()
    proc = subprocess.Popen(["bash", str(ROOT / "scripts" / "node")], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, start_new_session=True,
                            env={**ENV, "MPI_DATA_DIR": str(data), "MPI_PORT": str(port)})
    try:
        assert proc.stdout is not None
        token = ""
        for line in proc.stdout:
            found = re.search(r"Admin token.*: (mpi_\S+)", line)
            if found:
                token = found.group(1)
                break
        assert token, "scripts/node printed no token"
        wait_http(f"http://127.0.0.1:{port}", proc)
        status, _ = call(f"http://127.0.0.1:{port}", "GET", "/audit", token)
        assert status == 200
        return token
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)


def test_scripts_node_reuses_its_stored_admin_token(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = _scripts_node(data)
    second = _scripts_node(data)
    assert first == second
    stored = data / "admin.token"
    assert stored.read_text().strip() == first
    assert stored.stat().st_mode & 0o777 == 0o600
    listing = cli("node", "token", "list", "--data-dir", str(data), "--json").stdout.splitlines()
    assert len(listing) == 1 and json.loads(listing[0])["role"] == "admin"


def test_tokens_are_listed_without_secrets_and_expire(tmp_path: Path) -> None:
    data, server = _node(tmp_path)
    cli("node", "token", "create", "--data-dir", str(data), "--role", "supervisor", "--name", "later",
        "--expires", "2099-01-31")
    bad = cli("node", "token", "create", "--data-dir", str(data), "--role", "admin", "--name", "x",
              "--expires", "2001-01-01", check=False)
    assert bad.returncode != 0 and "past" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    # Made last, right before the server starts: on a loaded machine, commands take seconds.
    short = cli("node", "token", "create", "--data-dir", str(data), "--role", "registrar", "--name", "temp",
                "--expires", "20s").stdout.strip()
    expires = time.time() + 20
    server.start()
    try:
        assert server.call("GET", "/mpi/qr-config", token=short)[0] == 200
        assert server.call("GET", "/mpi/qr-config")[0] == 200
        time.sleep(max(0.0, expires - time.time() + 0.5))
        status, body = server.call("GET", "/mpi/qr-config", token=short)
        assert status == 401 and body["status"] == "token_expired", body
        time.sleep(0.5)  # last use is written with the read audit
    finally:
        server.stop()
    listing = cli("node", "token", "list", "--data-dir", str(data))
    text = listing.stdout
    assert short not in text and "mpi_" not in text and server.token not in text
    rows = {json.loads(line)["name"]: json.loads(line)
            for line in cli("node", "token", "list", "--data-dir", str(data), "--json").stdout.splitlines()}
    assert set(rows) == {"boss", "temp", "later"}
    assert rows["temp"]["state"] == "expired" and rows["temp"]["role"] == "registrar"
    assert rows["later"]["expires_at"].startswith("2099-01-31T00:00:00") and rows["later"]["state"] == "active"
    assert rows["boss"]["expires_at"] is None and rows["boss"]["last_used_at"] is not None
    assert rows["later"]["last_used_at"] is None
    for header in ("name", "role", "state", "created_at", "last_used_at", "expires_at"):
        assert header in text.splitlines()[0]
    assert not any("hash" in key for key in rows["boss"])


def test_the_audit_log_is_read_back_by_admins(tmp_path: Path) -> None:
    data, server = _node(tmp_path)
    registrar = cli("node", "token", "create", "--data-dir", str(data), "--role", "registrar", "--name", "awa").stdout.strip()
    server.start()
    try:
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 1))
        status, created = server.call("POST", "/mpi/register", AMINATA, token=registrar)
        assert status == 201
        mpi_id = created["mpi_id"]
        server.call("GET", f"/mpi/{mpi_id}", token=registrar)
        server.call("PATCH", f"/mpi/{mpi_id}", {"gender": "U"}, token=registrar)
        for i in range(3):
            server.call("POST", "/mpi/register", {**AMINATA, "first_name": f"Other{i}x", "last_name": "Sow",
                                                   "external_ids": {}, "phone_number": None, "force_create": True})
        assert server.call("GET", "/audit", token=registrar)[0] == 403
        status, page = server.call("GET", f"/audit?mpi_id={mpi_id.lower()}")
        assert status == 200, page
        assert {i["action"] for i in page["items"]} >= {"register", "read", "patch"}
        assert all(i["mpi_id"] == mpi_id and i["actor"] == "registrar:awa" for i in page["items"])
        assert page["total"] == len(page["items"])
        status, page = server.call("GET", "/audit?actor=registrar:awa&action=register")
        assert page["total"] == 1 and page["items"][0]["mpi_id"] == mpi_id
        status, page = server.call("GET", "/audit?action=register&limit=2&offset=1")
        assert page["total"] == 4 and len(page["items"]) == 2
        assert page["items"][0]["id"] > page["items"][1]["id"]  # newest first
        status, page = server.call("GET", f"/audit?from={started}&to=2099-01-01")
        assert page["total"] >= 6
        status, page = server.call("GET", "/audit?to=2001-01-01")
        assert page == {"total": 0, "items": []}
        for bad in ("from=yesterday", "limit=0", "limit=500", "action=Not%20An%20Action", "bogus=1"):
            status, body = server.call("GET", f"/audit?{bad}")
            assert status == 400 and body["status"] == "validation_error", (bad, body)
    finally:
        server.stop()


def test_node_health_checks_the_database_and_tells_how_far_behind_sync_is(tmp_path: Path) -> None:
    data, server = _node(tmp_path)
    server.start()
    try:
        server.call("POST", "/mpi/register", AMINATA)
        status, body = server.call("GET", "/health", token="")
        assert status == 200 and body["status"] == "ok" and body["database"] == "ok", body
        assert body["sync"]["enrolled"] is False and body["sync"]["pending_changes"] >= 1
        assert body["sync"]["behind"] is True and body["sync"]["last_success"] is None
        with sqlite3.connect(data / "mpi.sqlite3") as db:  # the database goes away under the server
            db.execute("DROP TABLE node_meta")
        status, body = server.call("GET", "/health", token="")
        assert status == 503 and body["status"] == "unavailable" and body["error"], body
    finally:
        server.stop()


def test_hub_health_answers_503_when_postgresql_is_gone(hub: Hub) -> None:
    status, body = hub.call("GET", "/health")
    assert status == 200 and body["database"] == "ok" and "sync" not in body, body
    name = hub.database_url.rsplit("/", 1)[1]
    admin = hub.database_url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as db:
        db.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        db.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
    try:
        status, body = hub.call("GET", "/health")
        assert status == 503 and body["status"] == "unavailable", body
    finally:
        with psycopg.connect(admin, autocommit=True) as db:
            db.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
    status, body = hub.call("GET", "/health")
    assert status == 200, body


def test_rerunning_an_import_keeps_its_earlier_report(tmp_path: Path) -> None:
    data = tmp_path / "n"
    cli("node", "init", "--data-dir", str(data), "--country", "SN", "--region", "DKR")
    people = tmp_path / "people.csv"
    people.write_text("first_name,last_name,region_code,country_code\nAwa,Ndiaye,DKR,SN\nFatou,Sow,DKR,XX\n")
    report = tmp_path / "people.csv.report.csv"
    first = cli("node", "import", "--data-dir", str(data), str(people), check=False)
    assert first.returncode == 1 and "people.csv:3:" in first.stderr
    assert "3,error" in report.read_text()
    again = cli("node", "import", "--data-dir", str(data), str(people), check=False)
    assert "already imported" in again.stdout, again.stdout
    text = report.read_text()
    assert "3,error" in text and text.count("line,action") == 1, text
