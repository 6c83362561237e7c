"""Bundle files and enrolment over a USB stick: all or nothing, owner-only, and no secret inside."""

from __future__ import annotations

import json
import os
from pathlib import Path

from cluster import Hub, Node, cli, free_port, people, post_raw
from nacl.signing import SigningKey

from shared.sync.changeset import join_parts, split_parts
from shared.sync.enrolment import enrolment_proof


def _one_line(result: object) -> str:
    assert result.returncode != 0, result.stdout  # type: ignore[attr-defined]
    lines = result.stderr.strip().splitlines()  # type: ignore[attr-defined]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr  # type: ignore[attr-defined]
    return str(lines[0])


def test_a_bundle_applies_whole_or_not_at_all_and_carries_no_secret(hub: Hub, tmp_path: Path) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"  # the hub is out of reach at init: the key goes by file
    enrolment = hub.enroll("a", "DKR", tmp_path / "a.json", nowhere)
    secret = json.loads(enrolment.read_text())["secret"]
    a = Node(tmp_path / "a", enrolment, env={"MPI_SYNC_BATCH_MAX": "10"})
    a.start()
    try:
        people(a, 25, "w")
    finally:
        a.stop()
    out = tmp_path / "a.mpib"
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    for planted in (tmp_path / "a.mpib.tmp", tmp_path / ".a.mpib.tmp"):
        planted.symlink_to(victim)
    done = cli("node", "sync", "export", "--data-dir", str(a.data), str(out), env=a.env)
    assert "25 change(s)" in done.stdout, done.stdout
    assert victim.read_text() == "keep me" and (tmp_path / "a.mpib.tmp").is_symlink()
    assert out.stat().st_mode & 0o777 == 0o600
    raw = out.read_bytes()
    # The one-time secret is proven (a signature by the key it seeds), never carried: not in the file, not in the node's database.
    assert secret.encode() not in raw
    assert secret.encode() not in (a.data / "mpi.sqlite3").read_bytes()
    parts = split_parts(raw)
    assert [k for k, _ in parts] == ["H", "R", "E", "E", "E", "Z"]

    def node_changes() -> int:
        node_id = a.sql("SELECT value FROM node_meta WHERE key = 'node_id'")[0][0]
        return int(hub.sql("SELECT count(*) FROM change_log WHERE node_id = %s", node_id)[0][0])

    # Whoever copies the file cannot register a key of their own with its registration.
    request = json.loads(dict(parts)["R"])
    thief = SigningKey.generate()
    public = bytes(thief.verify_key).hex()
    forged = {**request, "public_key": public,
              "signature": thief.sign(enrolment_proof(request["name"], request["node_id"], public)).signature.hex()}
    status, body = post_raw(hub.url, "/sync/enroll", json.dumps(forged).encode())
    assert status == 403 and json.loads(body)["status"] == "enrolment_refused", body

    db = hub.database_url
    cut = tmp_path / "cut.mpib"
    cut.write_bytes(join_parts(parts[:4]))  # cut at an envelope boundary: two of three sets, no end marker
    line = _one_line(cli("hub", "sync", "import", "--database-url", db, str(cut), check=False))
    assert "truncated" in line and "3 of 4" in line, line
    e3 = len(join_parts(parts[:4])) + 5 + len(parts[4][1]) // 2
    flipped = tmp_path / "flipped.mpib"
    flipped.write_bytes(raw[:e3] + bytes([raw[e3] ^ 0x01]) + raw[e3 + 1 :])
    line = _one_line(cli("hub", "sync", "import", "--database-url", db, str(flipped), check=False))
    assert "part 4 of 4 (envelope) is corrupted" in line, line
    padded = tmp_path / "padded.mpib"
    padded.write_bytes(join_parts([*parts[:5], parts[3], parts[5]]))  # an envelope too many
    assert "announces 4" in _one_line(cli("hub", "sync", "import", "--database-url", db, str(padded), check=False))
    assert node_changes() == 0  # nothing of any of them applied
    assert hub.sql("SELECT status FROM sync_node WHERE name = 'a'") == [("pending",)]

    done = cli("hub", "sync", "import", "--database-url", db, str(out))
    assert "imported 3 change set(s), 25 change(s)" in done.stdout, done.stdout
    assert node_changes() == 25
    back = tmp_path / "to-a.mpib"
    cli("hub", "sync", "export", "--database-url", db, "--node", "a", str(back))
    assert back.stat().st_mode & 0o777 == 0o600
    back_parts = split_parts(back.read_bytes())
    cut_back = tmp_path / "to-a-cut.mpib"
    cut_back.write_bytes(join_parts(back_parts[:-1]))
    assert "truncated" in _one_line(cli("node", "sync", "import", "--data-dir", str(a.data), str(cut_back),
                                        check=False))
    assert a.sql("SELECT value FROM node_meta WHERE key = 'sync_acked_seq'") == []
    assert "acknowledged up to 25" in cli("node", "sync", "import", "--data-dir", str(a.data), str(back)).stdout
    assert os.stat(back).st_mode & 0o077 == 0
