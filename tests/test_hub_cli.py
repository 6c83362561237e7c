"""The mpi-hub command line, run as real processes, and node enrolment from both ends."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import psycopg
from cluster import ENV, Hub, Node, call, cli, free_port
from conftest import PG_ADMIN, pg_url


def _one_line(result: object) -> str:
    assert result.returncode != 0, result  # type: ignore[attr-defined]
    lines = result.stderr.strip().splitlines()  # type: ignore[attr-defined]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr  # type: ignore[attr-defined]
    return str(lines[0])


def test_init_creates_the_database_and_commands_fail_in_one_line(tmp_path: Path) -> None:
    name = f"mpi_test_{uuid.uuid4().hex[:12]}"
    url = pg_url(name)
    try:
        done = cli("hub", "init", "--database-url", url, "--country", "SN")
        assert "database created" in done.stdout
        assert "already" in _one_line(cli("hub", "init", "--database-url", url, "--country", "SN", check=False))
        token = cli("hub", "token", "create", "--database-url", url, "--role", "admin", "--name", "a").stdout
        assert token.strip().startswith("mpi_") and len(token.split()) == 1
        env = {**ENV, "MPI_DATABASE_URL": url}
        assert "schema is up to date" in cli("hub", "migrate", env=env).stdout
        out = tmp_path / "n.json"
        cli("hub", "node", "enroll", "--database-url", url, "--name", "n1", "--region", "DKR",
            "--hub-url", "http://127.0.0.1:1", "--out", str(out), "--subscribe", "THI,ZIG")
        enrolment = json.loads(out.read_text())
        assert enrolment["node_number"] == 1 and enrolment["regions"] == ["DKR", "THI", "ZIG"]
        assert out.stat().st_mode & 0o077 == 0
        assert "exists" in _one_line(cli("hub", "node", "enroll", "--database-url", url, "--name", "n2", "--region",
                                         "DKR", "--hub-url", "http://x", "--out", str(out), check=False))
        assert "enrolled already" in _one_line(cli("hub", "node", "enroll", "--database-url", url, "--name", "n1",
                                                   "--region", "DKR", "--hub-url", "http://x",
                                                   "--out", str(tmp_path / "o.json"), check=False))
        assert "three letters" in _one_line(cli("hub", "node", "enroll", "--database-url", url, "--name", "n3",
                                                "--region", "D", "--hub-url", "http://x",
                                                "--out", str(tmp_path / "p.json"), check=False))
        assert "--batch: 0 is less than 1" in _one_line(cli("hub", "dedup", "sweep", "--database-url", url,
                                                            "--batch", "0", check=False))
        assert "no node named" in _one_line(cli("hub", "node", "revoke", "--database-url", url, "ghost", check=False))
        assert "no such file" in _one_line(cli("hub", "sync", "import", "--database-url", url,
                                               str(tmp_path / "none"), check=False)).lower()
        (tmp_path / "junk").write_bytes(b"not a bundle")
        assert "bad_envelope" in _one_line(cli("hub", "sync", "import", "--database-url", url,
                                               str(tmp_path / "junk"), check=False))
        listed = [json.loads(line) for line in cli("hub", "node", "list", "--database-url", url).stdout.splitlines()]
        assert [n["name"] for n in listed] == ["n1"] and listed[0]["status"] == "pending"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    no_url = {k: v for k, v in ENV.items() if k != "MPI_DATABASE_URL"}
    assert "database-url" in _one_line(cli("hub", "serve", env={**no_url, "MPI_DATABASE_URL": ""}, check=False))
    assert _one_line(cli("hub", "bogus", check=False))
    assert "ISO" in _one_line(cli("hub", "init", "--database-url", url, "--country", "XX", check=False))
    assert "PostgreSQL" in _one_line(cli("hub", "init", "--database-url", "mysql://x", "--country", "SN", check=False))


def test_enrolment_at_once_later_and_refused(pg_database: str, tmp_path: Path) -> None:
    hub = Hub(pg_database)
    hub.start()
    try:
        node = Node(tmp_path / "n", hub.enroll("n", "DKR", tmp_path / "n.json", hub.url))
        assert node.sql("SELECT value FROM node_meta WHERE key = 'node_number'") == [("1",)]
        assert node.sql("SELECT value FROM node_meta WHERE key = 'sync_registered'") == [("1",)]
        assert hub.sql("SELECT status, node_id IS NOT NULL FROM sync_node WHERE name = 'n'") == [("active", True)]
        # The same file again: the secret was used.
        again = cli("node", "init", "--data-dir", str(tmp_path / "again"), "--enroll", str(tmp_path / "n.json"),
                    check=False)
        assert "enrolment was refused" in _one_line(again)
        # The hub out of reach at enrolment: the key is registered at the first sync.
        late = tmp_path / "late.json"
        hub.enroll("late", "DKR", late, f"http://127.0.0.1:{free_port()}")
        data = json.loads(late.read_text())
        late.write_text(json.dumps(data))
        done = cli("node", "init", "--data-dir", str(tmp_path / "l"), "--enroll", str(late))
        assert "first sync" in done.stdout
        data["hub_url"] = hub.url
        db = tmp_path / "l" / "mpi.sqlite3"
        import sqlite3

        con = sqlite3.connect(db)
        con.execute("UPDATE node_meta SET value = ? WHERE key = 'hub_url'", (hub.url,))
        con.commit()
        con.close()
        cli("node", "sync", "--data-dir", str(tmp_path / "l"))
        assert hub.sql("SELECT status FROM sync_node WHERE name = 'late'") == [("active",)]
        # An existing standalone node that registered people is refused; an empty one is enrolled.
        cli("node", "init", "--data-dir", str(tmp_path / "s"), "--country", "SN", "--region", "DKR")
        token = cli("node", "token", "create", "--data-dir", str(tmp_path / "s"), "--role", "registrar",
                    "--name", "r").stdout.strip()
        standalone = Node.__new__(Node)
        standalone.kind, standalone.args, standalone.port = "node", ["--data-dir", str(tmp_path / "s")], free_port()
        standalone.env, standalone.token, standalone.proc, standalone.data = {}, token, None, tmp_path / "s"
        hub.enroll("s", "DKR", tmp_path / "s.json", hub.url)
        standalone.start()
        try:
            status, _ = call(standalone.url, "POST", "/mpi/register", token, {
                "first_name": "Awa", "last_name": "Ndiaye", "region_code": "DKR", "country_code": "SN"})
            assert status == 201
        finally:
            standalone.stop()
        refused = cli("node", "enroll", "--data-dir", str(tmp_path / "s"), str(tmp_path / "s.json"), check=False)
        assert "only an empty node" in _one_line(refused)
        cli("node", "init", "--data-dir", str(tmp_path / "e"), "--country", "SN", "--region", "DKR")
        assert "key registered" in cli("node", "enroll", "--data-dir", str(tmp_path / "e"),
                                       str(tmp_path / "s.json")).stdout
        assert "not an enrolment file" in _one_line(cli("node", "enroll", "--data-dir", str(tmp_path / "e"),
                                                        str(db), check=False))
    finally:
        hub.stop()


def test_sync_endpoints_answer_malformed_input_in_the_one_shape(pg_database: str, tmp_path: Path) -> None:
    from cluster import post_raw

    hub = Hub(pg_database)
    hub.start()
    try:
        for path in ("/sync/push", "/sync/pull"):
            for body in (b"", b"garbage", b"MPE1\x00\x05{}" + b"x" * 70, b"MPE1\xff\xff", b'{"json": 1}',
                         b"MPP1" + b"\x00" * 80, b"x" * 300_000):
                status, raw = post_raw(hub.url, path, body)
                answer = json.loads(raw)
                assert 400 <= status < 500 and isinstance(answer["status"], str) and answer["error"], (path, body[:8])
        for body in ("not json", [], {}, {"name": 5}, {"name": "n", "node_id": "x", "public_key": "00", "secret": "s",
                                                       "signature": "zz"}):
            data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
            status, raw = post_raw(hub.url, "/sync/enroll", data)
            answer = json.loads(raw)
            assert status in (400, 403) and answer["status"] in ("invalid_json", "enrolment_refused"), answer
        assert call(hub.url, "GET", "/sync/nodes")[0] == 401
        status, answer = hub.call("GET", "/sync/nodes")
        assert status == 200 and answer == {"nodes": []}
    finally:
        hub.stop()
    cli("node", "init", "--data-dir", str(tmp_path / "alone"), "--country", "SN", "--region", "DKR")
    token = cli("node", "token", "create", "--data-dir", str(tmp_path / "alone"), "--role", "supervisor",
                "--name", "s").stdout.strip()
    alone = Node.__new__(Node)
    alone.kind, alone.args, alone.port = "node", ["--data-dir", str(tmp_path / "alone")], free_port()
    alone.env, alone.token, alone.proc, alone.data = {}, token, None, tmp_path / "alone"
    alone.start()
    try:
        assert call(alone.url, "GET", "/sync/status")[0] == 401
        status, answer = alone.call("POST", "/sync/now")
        assert status == 409 and answer["status"] == "not_enrolled"
        status, answer = alone.call("GET", "/sync/status")
        assert status == 200 and answer["enrolled"] is False and answer["pending_changes"] == 0
        done = cli("node", "sync", "--data-dir", str(tmp_path / "alone"), check=False)
        assert "not enrolled" in _one_line(done)
    finally:
        alone.stop()
