"""Two processes writing one database: a serving node and ``mpi-node import``, a serving hub
and ``mpi-hub dedup sweep``. Every write after the other process's still succeeds, and the
change log's hash chain stays whole.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

from cluster import ENV, ROOT, Hub, Node, Server, cli, free_port

from shared.sync.changelog import GENESIS_HASH, change_hash

PERSON = {"region_code": "DKR", "country_code": "SN", "gender": "F"}


def _chain_is_whole(rows: list[tuple[Any, ...]]) -> None:
    """rows: (node_id, seq, hlc, kind, mpi_id, payload, prev_hash, hash) of one node, by seq."""
    assert rows, "no change logged"
    prev = GENESIS_HASH
    for expected_seq, (node_id, seq, hlc, kind, mpi_id, payload, prev_hash, digest) in enumerate(rows, start=1):
        assert seq == expected_seq, (seq, expected_seq)
        assert prev_hash == prev, seq
        assert change_hash(prev, node_id, seq, hlc, kind, mpi_id, payload) == digest, seq
        prev = digest


def _csv(path: Path, count: int) -> Path:
    lines = ["first_name,last_name,date_of_birth,region_code,country_code,force_create"]
    def word(i: int) -> str:  # distinct letters for distinct numbers: names the matcher tells apart
        return "".join("bdfgkmnprst"[int(d)] + "aeiou"[int(d) % 5] for d in str(i)).capitalize()

    lines += [f"{word(i)},{word(i * 7 + 3)}ba,19{50 + i % 40}-0{1 + i % 9}-1{i % 9},DKR,SN,true" for i in range(count)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_serving_node_keeps_writing_during_and_after_an_import(tmp_path: Path) -> None:
    data = tmp_path / "node"
    cli("node", "init", "--data-dir", str(data), "--country", "SN", "--region", "DKR")
    token = cli("node", "token", "create", "--data-dir", str(data), "--role", "admin", "--name", "a").stdout.strip()
    server = Server("node", ["--data-dir", str(data)], free_port(), token)
    server.start()
    try:
        status, body = server.call("POST", "/mpi/register", {**PERSON, "first_name": "Before", "last_name": "Import"})
        assert status == 201, body
        importer = subprocess.Popen(
            [sys.executable, "-m", "node", "import", "--data-dir", str(data), str(_csv(tmp_path / "p.csv", 1200))],
            cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        created = []
        i = 0
        while importer.poll() is None or i < 5:  # during the import, and a few after it
            i += 1
            status, body = server.call("POST", "/mpi/register",
                                       {**PERSON, "first_name": f"Live{i}q", "last_name": f"Writer{i}k", "force_create": True})
            assert status == 201, body
            created.append(body["mpi_id"])
        out, err = importer.communicate(timeout=120)
        assert importer.returncode == 0, err
        assert "0 blocked" in out and "0 errors" in out, out
        status, body = server.call("POST", "/mpi/register", {**PERSON, "first_name": "After", "last_name": "Import"})
        assert status == 201, body
        created.append(body["mpi_id"])
        for mpi_id in created:
            assert server.call("GET", f"/mpi/{mpi_id}")[0] == 200
    finally:
        server.stop()
    with sqlite3.connect(data / "mpi.sqlite3") as db:
        node_id = db.execute("select value from node_meta where key = 'node_id'").fetchone()[0]
        rows = db.execute(
            "select node_id, seq, hlc, kind, mpi_id, payload, prev_hash, hash from change_log "
            "where node_id = ? order by seq", (node_id,)
        ).fetchall()
        identities = db.execute("select count(*), count(distinct mpi_id) from identity").fetchone()
        counter = int(db.execute("select value from node_meta where key = 'id_counter'").fetchone()[0])
    _chain_is_whole(rows)
    assert identities[0] == identities[1] == 1200 + len(created) + 1
    assert counter == identities[0]


def test_a_serving_hub_keeps_writing_after_a_dedup_sweep(hub: Hub) -> None:
    twin = {**PERSON, "first_name": "Aminata", "last_name": "Diallo", "date_of_birth": "1995-03-15",
            "phone_number": "+221771234567"}
    status, first = hub.call("POST", "/mpi/register", twin)
    assert status == 201, first
    status, second = hub.call("POST", "/mpi/register", {**twin, "force_create": True})
    assert status == 201, second
    before = hub.sql("select count(*) from change_log")[0][0]
    cli("hub", "dedup", "sweep", "--database-url", hub.database_url, "--restart")
    assert hub.sql("select count(*) from change_log")[0][0] > before, "the sweep wrote nothing"
    for i in range(3):
        status, body = hub.call("POST", "/mpi/register",
                                {**PERSON, "first_name": f"After{i}w", "last_name": "Sweep", "force_create": True})
        assert status == 201, body
    node_id = hub.sql("select value from node_meta where key = 'node_id'")[0][0]
    _chain_is_whole(hub.sql(
        "select node_id, seq, hlc, kind, mpi_id, payload, prev_hash, hash from change_log where node_id = %s order by seq",
        node_id,
    ))


def test_a_serving_node_syncs_what_a_concurrent_import_wrote(hub: Hub, tmp_path: Path) -> None:
    enrolment = hub.enroll("dakar-1", "DKR", tmp_path / "dakar-1.json", hub.url)
    node = Node(tmp_path / "node", enrolment)
    node.start()
    try:
        assert node.call("POST", "/mpi/register", {**PERSON, "first_name": "Awa", "last_name": "Ndiaye"})[0] == 201
        assert node.call("POST", "/sync/now")[0] == 200
        cli("node", "import", "--data-dir", str(node.data), str(_csv(tmp_path / "p.csv", 20)))
        status, body = node.call("POST", "/sync/now")  # no /health before: it refreshes the store
        assert status == 200, body
        assert body["pushed"] >= 20, body
        assert node.call("GET", "/health", token="")[1]["sync"]["pending_changes"] == 0
    finally:
        node.stop()
