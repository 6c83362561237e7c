"""Make an upgrade fixture: a small node database of today's schema, with what it must keep.

    .venv/bin/python scripts/make_upgrade_fixture.py            # writes tests/fixtures/upgrade/node-vNNNN.*
    .venv/bin/python scripts/make_upgrade_fixture.py --hub      # writes tests/fixtures/upgrade/hub-vNNNN.*

It runs a real node (``mpi-node init``, ``token create``, ``serve``), writes through the
HTTP API what a district would hold (identities with phones, external ids, programmes and
cards, a merge, a revoked card, a review item, an edited field), stops it, and keeps:

- ``node-vNNNN.sqlite3``: the database (one file, ``VACUUM INTO``), NNNN its last migration;
- ``node-vNNNN.json``: the token, and what the API answered for each identity and card.

With ``--hub`` it runs a hub on a new PostgreSQL database (``MPI_TEST_PG``, default the
local server) and a node enrolled with it, writes at both, syncs, and keeps
``hub-vNNNN.sql`` (``pg_dump`` plain SQL, no owner), ``hub-vNNNN.key`` (the test sealing
key of its signing key: a fixture's, worthless elsewhere), the node's database and key
(``hub-vNNNN.node.sqlite3``, ``hub-vNNNN.node.key``) and ``hub-vNNNN.json``.

``tests/test_upgrade.py`` migrates a copy of every fixture with the migrations of the day
and checks its schema against ``schema.py`` and its data through a node serving it. A fixture
is never remade once committed: each later migration must carry the old ones forward. Make a
new one (a new NNNN) when the schema has changed enough to be worth a second starting point.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "upgrade"
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "MPI_LOG_LEVEL": "WARNING", "MPI_AUDIT_FLUSH_SECONDS": "0.05",
       "MPI_SYNC_INTERVAL_SECONDS": "3600"}

PEOPLE = [
    {"first_name": "Aminata", "last_name": "Diallo", "date_of_birth": "1995-03-15", "gender": "F",
     "phone_number": "+221771234567", "external_ids": {"dhis2_uid": "abcDEF123gh", "nin": "1234567890123"}},
    {"first_name": "Moussa", "last_name": "Traoré", "date_of_birth": "1980-01-02", "gender": "M"},
    {"first_name": "Fatou", "last_name": "Sow", "date_of_birth": "2019-07-01", "gender": "F",
     "phone_number": "+221778765432"},
    {"first_name": "Ibrahima", "last_name": "Ndiaye", "gender": "U"},
    {"first_name": "Awa", "last_name": "Gueye", "date_of_birth": "1962-11-30", "gender": "F"},
    {"first_name": "Awa", "last_name": "Gueye", "date_of_birth": "1962-11-30", "gender": "F",
     "phone_number": "+221770001122"},  # the same person again: force_create, then merged
]


def _node(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "node", *args], cwd=ROOT, env=ENV, capture_output=True, text=True,
                          timeout=120)
    if done.returncode != 0:
        raise SystemExit(f"mpi-node {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Api:
    def __init__(self, url: str, token: str) -> None:
        self.url, self.token = url, token

    def __call__(self, method: str, path: str, body: Any = None, expect: tuple[int, ...] = (200, 201)) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method, headers={
            "Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as r:
                status, answer = r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            status, answer = e.code, json.loads(e.read())
        if status not in expect:
            raise SystemExit(f"{method} {path}: {status} {answer}")
        return answer


def _write(api: Api) -> dict[str, Any]:
    ids = []
    for person in PEOPLE:
        answer = api("POST", "/mpi/register", {"region_code": "DKR", "country_code": "SN", "force_create": True,
                                               **person})
        ids.append(answer["mpi_id"])
    aminata, moussa, fatou, _ibrahima, awa, awa_again = ids
    api("PATCH", f"/mpi/{moussa}", {"phone_number": "+221775550000", "region_code": "THI"})
    api("POST", f"/mpi/{fatou}/programmes", {"programme_type": "vaccination"})
    card = api("POST", f"/mpi/{aminata}/card", {"campaign_id": "camp_01", "programme_type": "vaccination"})
    api("POST", f"/mpi/{fatou}/card", {"campaign_id": "camp_01", "programme_type": "vaccination"})
    api("POST", f"/mpi/{fatou}/card/revoke", {"reason": "lost"})
    api("POST", "/mpi/merge", {"source_mpi_id": awa_again, "target_mpi_id": awa, "reason": "same person"})
    return {
        "identities": {mpi_id: api("GET", f"/mpi/{mpi_id}") for mpi_id in ids},
        "cards": {mpi_id: api("GET", f"/mpi/{mpi_id}/card") for mpi_id in (aminata, fatou)},
        "verify": {"token": card["qr_token"], "answer": {"status": "valid"}},
        "merged": {"source": awa_again, "target": awa},
    }


def _serve(kind: str, args: list[str], port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-m", kind, "serve", *args, "--port", str(port)],
                            cwd=ROOT, env={**ENV, **env}, stdout=subprocess.DEVNULL)
    for _ in range(600):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"{kind} did not start")


def _run(kind: str, *args: str, env: dict[str, str]) -> str:
    done = subprocess.run([sys.executable, "-m", kind, *args], cwd=ROOT, env={**ENV, **env}, capture_output=True,
                          text=True, timeout=120)
    if done.returncode != 0:
        raise SystemExit(f"{kind} {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


def _hub_fixture(version: int) -> None:
    import psycopg

    target = OUT / f"hub-v{version:04d}.sql"
    if target.exists():
        raise SystemExit(f"{target} exists: a committed fixture is never remade (see this script's docstring)")
    admin_url = os.environ.get("MPI_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
    name = f"mpi_fixture_{os.urandom(6).hex()}"
    url = admin_url.rsplit("/", 1)[0] + "/" + name
    work = Path(tempfile.mkdtemp(prefix="mpi-fixture-"))
    env = {"MPI_HUB_KEY_FILE": str(work / "hub.key"), "MPI_DEDUP_INTERVAL_SECONDS": "0"}
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    procs: list[subprocess.Popen[bytes]] = []
    try:
        _run("hub", "init", "--database-url", url, "--country", "SN", env=env)
        hub_token = _run("hub", "token", "create", "--database-url", url, "--role", "admin", "--name", "fixture", env=env)
        hub_port, node_port = _free_port(), _free_port()
        hub_url = f"http://127.0.0.1:{hub_port}"
        _run("hub", "node", "enroll", "--database-url", url, "--name", "post-a", "--region", "DKR", "--hub-url", hub_url,
             "--out", str(work / "a.json"), env=env)
        procs.append(_serve("hub", ["--database-url", url], hub_port, env))
        data = work / "node"
        _run("node", "init", "--data-dir", str(data), "--enroll", str(work / "a.json"), env={})
        node_token = _run("node", "token", "create", "--data-dir", str(data), "--role", "admin", "--name", "fixture",
                          env={})
        procs.append(_serve("node", ["--data-dir", str(data)], node_port, {}))
        hub, node = Api(hub_url, hub_token), Api(f"http://127.0.0.1:{node_port}", node_token)
        at_node = [node("POST", "/mpi/register", {"region_code": "DKR", "country_code": "SN", "force_create": True,
                                                  **p})["mpi_id"] for p in PEOPLE[:3]]
        node("POST", f"/mpi/{at_node[0]}/card", {"campaign_id": "camp_01", "programme_type": "vaccination"})
        node("POST", "/sync/now")
        at_hub = [hub("POST", "/mpi/register", {"region_code": "THI", "country_code": "SN", "force_create": True,
                                                **p})["mpi_id"] for p in PEOPLE[3:]]
        hub("POST", "/mpi/merge", {"source_mpi_id": at_hub[2], "target_mpi_id": at_hub[1], "reason": "same person"})
        hub("PATCH", f"/mpi/{at_node[1]}", {"phone_number": "+221775550000"})
        hub("POST", "/dedup/run")
        node("POST", "/sync/now")
        expected = {
            "schema_version": version, "hub_token": hub_token, "node_token": node_token, "node_name": "post-a",
            "identities": {i: hub("GET", f"/mpi/{i}") for i in [*at_node, *at_hub]},
            "at_node": {i: node("GET", f"/mpi/{i}") for i in at_node},
            "merged": {"source": at_hub[2], "target": at_hub[1]},
            "review": hub("GET", "/review")["counts"],
            "nodes": [{k: n[k] for k in ("name", "node_number", "regions", "status", "acked_seq")}
                      for n in hub("GET", "/sync/nodes")["nodes"]],
        }
    finally:
        for proc in reversed(procs):
            proc.terminate()
            proc.wait(30)
    try:
        dump = subprocess.run(["pg_dump", "--no-owner", "--no-privileges", "--format=plain", url], capture_output=True,
                              text=True, timeout=120, check=True).stdout
        db = sqlite3.connect(data / "mpi.sqlite3", isolation_level=None)
        try:
            db.execute("VACUUM INTO ?", (str(work / "node.sqlite3"),))
        finally:
            db.close()
        target.write_text(dump)
        shutil.copyfile(work / "hub.key", target.with_suffix(".key"))
        shutil.copyfile(work / "node.sqlite3", target.with_suffix(".node.sqlite3"))
        shutil.copyfile(data / "node.key", target.with_suffix(".node.key"))
        target.with_suffix(".json").write_text(json.dumps(expected, indent=1, ensure_ascii=False, sort_keys=True) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    print(f"wrote {target} ({target.stat().st_size} bytes) and its .key, .node.sqlite3, .node.key, .json")


def main() -> int:
    sys.path.insert(0, str(ROOT))
    from shared.storage.migrations import MIGRATIONS

    version = MIGRATIONS[-1][0]
    OUT.mkdir(parents=True, exist_ok=True)
    if sys.argv[1:] == ["--hub"]:
        _hub_fixture(version)
        return 0
    target = OUT / f"node-v{version:04d}.sqlite3"
    if target.exists():
        raise SystemExit(f"{target} exists: a committed fixture is never remade (see this script's docstring)")
    work = Path(tempfile.mkdtemp(prefix="mpi-fixture-"))
    try:
        data = work / "node"
        _node("init", "--data-dir", str(data), "--country", "SN", "--region", "DKR")
        token = _node("token", "create", "--data-dir", str(data), "--role", "admin", "--name", "fixture")
        port = _free_port()
        proc = subprocess.Popen([sys.executable, "-m", "node", "serve", "--data-dir", str(data), "--port", str(port)],
                                cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL)
        try:
            url = f"http://127.0.0.1:{port}"
            for _ in range(600):
                try:
                    urllib.request.urlopen(url + "/health", timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.05)
            expected = _write(Api(url, token))
        finally:
            proc.terminate()
            proc.wait(30)
        db = sqlite3.connect(data / "mpi.sqlite3", isolation_level=None)
        try:
            db.execute("VACUUM INTO ?", (str(work / "out.sqlite3"),))
            node_id = db.execute("SELECT value FROM node_meta WHERE key = 'node_id'").fetchone()[0]
            changes = db.execute("SELECT count(*), max(seq) FROM change_log").fetchone()
            reviews = db.execute("SELECT count(*) FROM review_item").fetchone()[0]
        finally:
            db.close()
        shutil.copyfile(work / "out.sqlite3", target)
        expected.update(schema_version=version, node_id=node_id, token=token, changes=changes[0],
                        last_seq=changes[1], review_items=reviews)
        target.with_suffix(".json").write_text(json.dumps(expected, indent=1, ensure_ascii=False, sort_keys=True) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {target} ({target.stat().st_size} bytes) and {target.with_suffix('.json').name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
