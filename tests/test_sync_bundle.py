"""Sync with no network: bundle files carried both ways, with the same checks as HTTP."""

from __future__ import annotations

from pathlib import Path

from cluster import Hub, Node, cli, free_port, identities, programmes


def _one_line_failure(result: object) -> str:
    assert result.returncode != 0  # type: ignore[attr-defined]
    lines = result.stderr.strip().splitlines()  # type: ignore[attr-defined]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr  # type: ignore[attr-defined]
    return str(lines[0])


def test_bundles_carry_changes_both_ways_once(pg_database: str, tmp_path: Path) -> None:
    hub = Hub(pg_database)  # never served: nothing but files
    nowhere = f"http://127.0.0.1:{free_port()}"
    a = Node(tmp_path / "a", hub.enroll("a", "DKR", tmp_path / "a.json", nowhere))
    b = Node(tmp_path / "b", hub.enroll("b", "DKR", tmp_path / "b.json", nowhere))
    a.start()
    try:
        awa = a.register(first_name="Awa", last_name="Ndiaye", date_of_birth="1990-01-02", gender="F")
        status, card = a.call("POST", f"/mpi/{awa}/card", {"campaign_id": "c1", "programme_type": "vaccination"})
        assert status == 201
    finally:
        a.stop()
    db = hub.database_url
    out = tmp_path / "a.mpib"
    done = cli("node", "sync", "export", "--data-dir", str(a.data), str(out))
    assert "3 change(s)" in done.stdout, done.stdout  # register, programme, card
    assert "imported 1 change set(s), 3 change(s)" in cli("hub", "sync", "import", "--database-url", db, str(out)).stdout
    before = hub.sql("SELECT count(*) FROM change_log")[0][0]
    cli("hub", "sync", "import", "--database-url", db, str(out))  # twice: a no-op
    assert hub.sql("SELECT count(*) FROM change_log")[0][0] == before
    raw = out.read_bytes()
    for index in (12, len(raw) // 2, len(raw) - 10):
        bad = tmp_path / f"bad{index}.mpib"
        bad.write_bytes(raw[:index] + bytes([raw[index] ^ 0xFF]) + raw[index + 1 :])
        line = _one_line_failure(cli("hub", "sync", "import", "--database-url", db, str(bad), check=False))
        assert line.startswith("error:"), line
    truncated = tmp_path / "short.mpib"
    truncated.write_bytes(raw[: len(raw) - 30])
    _one_line_failure(cli("hub", "sync", "import", "--database-url", db, str(truncated), check=False))
    assert hub.sql("SELECT count(*) FROM change_log")[0][0] == before

    # The way back: node b gets a's registration, node a its acknowledgement.
    for node, name in ((b, "b"), (a, "a")):
        back = tmp_path / f"to-{name}.mpib"
        cli("hub", "sync", "export", "--database-url", db, "--node", name, str(back))
        if name == "b":
            # b never sent anything: its key is unknown, but what it receives is the hub's, signed.
            cli("node", "sync", "import", "--data-dir", str(node.data), str(back))
            cli("node", "sync", "import", "--data-dir", str(node.data), str(back))  # twice: a no-op
        else:
            assert "acknowledged up to 3" in cli("node", "sync", "import", "--data-dir", str(node.data), str(back)).stdout
        tampered = tmp_path / f"to-{name}-bad.mpib"
        data = back.read_bytes()
        tampered.write_bytes(data[:-5] + bytes([data[-5] ^ 1]) + data[-4:])
        _one_line_failure(cli("node", "sync", "import", "--data-dir", str(node.data), str(tampered), check=False))
    assert identities(b) == identities(a) == identities(hub)
    assert programmes(b) == programmes(hub)
    b.start()
    try:
        status, answer = b.call("GET", f"/mpi/verify/{card['qr_token']}")
        assert status == 200 and answer["status"] == "valid"
        status, state = b.call("GET", "/sync/status")
        assert state["cursors"]["pull_pos"] > 0
    finally:
        b.stop()
    assert a.sql("SELECT value FROM node_meta WHERE key = 'sync_acked_seq'")[0][0] == "3"
