"""mpi-node backup and restore, against real processes: a node serving registrations while it is copied."""

from __future__ import annotations

import gzip
import shutil
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

from cluster import Server, call, cli, free_port

FIRST = ["Awa", "Fatou", "Aminata", "Mariama", "Khady", "Moussa", "Ibrahima", "Ousmane", "Cheikh", "Abdou"]
LAST = ["Ndiaye", "Diop", "Fall", "Sow", "Ba", "Gueye", "Faye", "Sarr", "Diouf", "Cisse"]


def _person(i: int, prefix: str) -> dict[str, object]:
    return {"first_name": f"{FIRST[i % 10]}{prefix}{i}", "last_name": LAST[(i * 7) % 10],
            "date_of_birth": f"19{50 + i % 50}-0{1 + i % 9}-1{i % 10}", "gender": "F" if i % 2 else "M",
            "region_code": "DKR", "country_code": "SN", "force_create": True}


def _standalone(data: Path) -> tuple[Server, str]:
    cli("node", "init", "--data-dir", str(data), "--country", "SN", "--region", "DKR")
    token = cli("node", "token", "create", "--data-dir", str(data), "--role", "admin", "--name", "ops").stdout.strip()
    return Server("node", ["--data-dir", str(data)], free_port(), token=token), token


def _one_line_failure(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in lines[0], lines
    return lines[0]


def _count(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT count(*) FROM identity").fetchone()[0])
    finally:
        conn.close()


def _integrity(db: Path) -> list[tuple[str]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("PRAGMA integrity_check").fetchall()
    finally:
        conn.close()


def test_a_backup_taken_while_the_node_registers_is_whole_and_restores(tmp_path: Path) -> None:
    data = tmp_path / "node"
    # A registry of some size first, so that the copy takes a while.
    rows = ["first_name,last_name,date_of_birth,gender,region_code,country_code"]
    rows += [",".join(str(v) for v in list(_person(i, "Imp").values())[:6]) for i in range(1500)]
    node, token = _standalone(data)
    (tmp_path / "load.csv").write_text("\n".join(rows) + "\n")
    cli("node", "import", "--data-dir", str(data), str(tmp_path / "load.csv"), timeout=300)
    imported = _count(data / "mpi.sqlite3")
    assert imported > 300
    (tmp_path / "pass").write_text("a long enough passphrase\n")
    node.start()
    acked: list[tuple[float, str]] = []  # (when the 201 arrived, the ID)
    failures: list[object] = []
    stop = threading.Event()

    def register(worker: int) -> None:
        i = 0
        while not stop.is_set():
            status, answer = node.call("POST", "/mpi/register", _person(i, f"W{worker}x"))
            if status != 201:
                failures.append(answer)
                return
            acked.append((time.monotonic(), answer["mpi_id"]))
            i += 1

    workers = [threading.Thread(target=register, args=(w,)) for w in range(3)]
    try:
        for w in workers:
            w.start()
        while len(acked) < 30 and not failures:
            time.sleep(0.05)
        started = time.monotonic()
        before = {mpi_id for at, mpi_id in list(acked) if at < started}
        made = cli("node", "backup", "--data-dir", str(data), str(tmp_path / "copy.mpibak"),
                   "--passphrase-file", str(tmp_path / "pass"))
        ended = time.monotonic()
        time.sleep(0.3)
    finally:
        stop.set()
        for w in workers:
            w.join()
    during = [mpi_id for at, mpi_id in acked if started <= at <= ended]
    node.stop()
    assert not failures, failures[:3]
    assert during, "no registration was acknowledged while the backup ran: the test proved nothing"
    assert "encrypted" in made.stdout and "NOT" not in made.stdout
    assert (tmp_path / "copy.mpibak").stat().st_mode & 0o777 == 0o600
    assert not list(tmp_path.glob(".mpi-backup-*")) and not list(tmp_path.glob("copy.mpibak.*"))

    restored = tmp_path / "restored"
    restored.mkdir()  # an empty folder that exists is fine
    done = cli("node", "restore", "--data-dir", str(restored), str(tmp_path / "copy.mpibak"),
               "--passphrase-file", str(tmp_path / "pass"))
    assert "restored node SN-DKR" in done.stdout
    assert sorted(p.name for p in restored.iterdir()) == ["mpi.sqlite3", "node.key"]
    assert all(p.stat().st_mode & 0o077 == 0 for p in [restored, *restored.iterdir()])
    assert _integrity(restored / "mpi.sqlite3") == [("ok",)]

    # The restored node serves: the same token works (tokens live in the database) and every
    # registration acknowledged before the backup began is there, whole.
    again = Server("node", ["--data-dir", str(restored)], free_port(), token=token)
    again.start()
    try:
        for mpi_id in sorted(before):
            status, answer = again.call("GET", f"/mpi/{mpi_id}")
            assert status == 200 and answer["mpi_id"] == mpi_id, (mpi_id, status, answer)
        status, health = call(again.url, "GET", "/health")
        assert status == 200 and health["database"] == "ok"
        status, found = again.call("GET", "/mpi/search?q=ndiaye&limit=5")
        assert status == 200 and found["total"] >= 1, found
    finally:
        again.stop()
    conn = sqlite3.connect(restored / "mpi.sqlite3")
    try:
        held = {r[0] for r in conn.execute("SELECT mpi_id FROM identity")}
        # Nothing torn: every change-log row of the copy chains to the one before it.
        chain = conn.execute("SELECT seq, prev_hash, hash FROM change_log ORDER BY seq").fetchall()
    finally:
        conn.close()
    assert before <= held and len(held) >= imported + len(before)
    assert all(chain[k][1] == chain[k - 1][2] and chain[k][0] == chain[k - 1][0] + 1 for k in range(1, len(chain)))


def test_restore_refuses_what_it_cannot_restore_in_one_line(tmp_path: Path) -> None:
    data = tmp_path / "node"
    _standalone(data)
    (tmp_path / "pass").write_text("a long enough passphrase\n")
    (tmp_path / "wrong").write_text("not the passphrase at all\n")
    (tmp_path / "short").write_text("short\n")
    plain, sealed = tmp_path / "plain.tgz", tmp_path / "sealed.bak"
    # A key rotated away from (kept until its changes are pushed) travels too; a temporary file does not.
    shutil.copyfile(data / "node.key", data / "node.key.0123456789abcdef")
    (data / "node.key.0123456789abcdef.5f3a.tmp").write_bytes(b"half")
    made = cli("node", "backup", "--data-dir", str(data), str(plain))
    assert "NOT encrypted" in made.stdout
    cli("node", "backup", "--data-dir", str(data), str(sealed), "--passphrase-file", str(tmp_path / "pass"))
    assert plain.read_bytes()[:2] == b"\x1f\x8b" and sealed.read_bytes()[:8] == b"MPISEAL1"
    assert b"node.key" not in sealed.read_bytes()  # sealed: not even the names show

    def restore(into: Path, source: Path, *passphrase: str) -> subprocess.CompletedProcess[str]:
        args = ["--passphrase-file", str(tmp_path / passphrase[0])] if passphrase else []
        return cli("node", "restore", "--data-dir", str(into), str(source), *args, check=False)

    assert "wrong passphrase" in _one_line_failure(restore(tmp_path / "r1", sealed, "wrong"))
    assert not (tmp_path / "r1").exists()  # a restore that fails leaves nothing behind
    assert "encrypted: give --passphrase-file" in _one_line_failure(restore(tmp_path / "r1", sealed))
    assert "not empty" in _one_line_failure(restore(data, plain))
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("mine")
    assert "not empty" in _one_line_failure(restore(occupied, plain))
    assert (occupied / "notes.txt").read_text() == "mine"

    damaged = bytearray(sealed.read_bytes())
    damaged[len(damaged) // 2] ^= 1
    (tmp_path / "damaged.bak").write_bytes(bytes(damaged))
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "damaged" in _one_line_failure(restore(empty, tmp_path / "damaged.bak", "pass"))
    assert list(empty.iterdir()) == []  # it existed empty: it stays so
    (tmp_path / "cut.bak").write_bytes(sealed.read_bytes()[:-5])
    _one_line_failure(restore(empty, tmp_path / "cut.bak", "pass"))
    (tmp_path / "cut.tgz").write_bytes(plain.read_bytes()[:600])
    assert "not a whole mpi-node backup" in _one_line_failure(restore(empty, tmp_path / "cut.tgz"))
    (tmp_path / "other.txt").write_text("hello")
    assert "not an mpi-node backup" in _one_line_failure(restore(empty, tmp_path / "other.txt"))
    assert list(empty.iterdir()) == []
    assert "is not a file" in _one_line_failure(restore(tmp_path / "r4", tmp_path / "missing.bak"))
    assert not (tmp_path / "r4").exists()

    assert "too short" in _one_line_failure(cli("node", "backup", "--data-dir", str(data), str(tmp_path / "x"),
                                                "--passphrase-file", str(tmp_path / "short"), check=False))
    assert "not an initialised node" in _one_line_failure(
        cli("node", "backup", "--data-dir", str(tmp_path / "nothing"), str(tmp_path / "y"), check=False))
    assert "outside" in _one_line_failure(cli("node", "backup", "--data-dir", str(data), str(data / "z"), check=False))
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()

    # The plain one restores, without a passphrase, and holds the same node.
    ok = restore(tmp_path / "r2", plain)
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "r2" / "node.key").read_bytes() == (data / "node.key").read_bytes()
    assert sorted(p.name for p in (tmp_path / "r2").iterdir()) == ["mpi.sqlite3", "node.key", "node.key.0123456789abcdef"]

    # The settings it ran with are recorded and shown, never its secrets.
    cli("node", "backup", "--data-dir", str(data), str(tmp_path / "env.tgz"),
        env={"MPI_PORT": "9123", "MPI_CANDIDATE_LIMIT": "20", "MPI_CONSOLE_SECRET": "s3cret-s3cret-s3cret-s3cret-s3cret"})
    shown = cli("node", "restore", "--data-dir", str(tmp_path / "r3"), str(tmp_path / "env.tgz")).stdout
    assert "MPI_CANDIDATE_LIMIT=20" in shown and "MPI_PORT=9123" in shown and "s3cret" not in shown, shown
    assert b"s3cret" not in gzip.decompress((tmp_path / "env.tgz").read_bytes())
