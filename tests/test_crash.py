"""kill -9 in the middle of writes: no acknowledged registration lost, nothing half-written."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from test_cli import ROOT, free_port, node

FIRST = ["Awa", "Fatou", "Aminata", "Mariama", "Khady", "Moussa", "Ibrahima", "Ousmane", "Cheikh", "Abdoulaye"]
LAST = ["Ndiaye", "Diop", "Fall", "Sow", "Ba", "Gueye", "Faye", "Sarr", "Diouf", "Cisse"]


async def _hammer(port: int, token: str, acked: dict[str, dict[str, str]], stop: asyncio.Event, worker: int) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    i = 0
    async with aiohttp.ClientSession() as session:
        while not stop.is_set():
            i += 1
            body = {
                "first_name": f"{FIRST[i % 10]}{worker}x{i}",
                "last_name": LAST[(i * 7 + worker) % 10],
                "date_of_birth": f"19{50 + i % 50}-0{1 + i % 9}-1{i % 10}",
                "gender": "F" if i % 2 else "M",
                "region_code": "DKR",
                "country_code": "SN",
                "force_create": True,
            }
            try:
                async with session.post(f"http://127.0.0.1:{port}/mpi/register", json=body, headers=headers) as r:
                    if r.status == 201:
                        acked[(await r.json())["mpi_id"]] = body
            except (TimeoutError, aiohttp.ClientError, ConnectionError):
                return


async def _run_until_killed(proc: subprocess.Popen[bytes], port: int, token: str, writes: int) -> dict[str, dict[str, str]]:
    """Six writers, killed once ``writes`` registrations were acknowledged (by count, not by time:
    a loaded machine makes as many writes as an idle one, only later)."""
    acked: dict[str, dict[str, str]] = {}
    stop = asyncio.Event()
    workers = [asyncio.create_task(_hammer(port, token, acked, stop, w)) for w in range(6)]
    deadline = time.monotonic() + 120
    while len(acked) < writes and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
    proc.send_signal(signal.SIGKILL)  # no clean shutdown: the writes in flight are cut
    proc.wait()
    stop.set()
    await asyncio.gather(*workers)
    return acked


def _start(data: Path, port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "node", "serve", "--data-dir", str(data), "--port", str(port)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "MPI_LOG_LEVEL": "WARNING"},
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            import urllib.request

            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    pytest.fail("node did not start")


@pytest.mark.parametrize("writes", [15, 60])
def test_kill_9_loses_no_acknowledged_registration(tmp_path: Path, writes: int) -> None:
    data = tmp_path / "crash"
    assert node("init", "--data-dir", str(data), "--country", "SN", "--region", "DKR").returncode == 0
    token = node("token", "create", "--data-dir", str(data), "--role", "registrar", "--name", "w").stdout.strip()
    port = free_port()
    acked: dict[str, dict[str, str]] = {}
    for round_ in range(2):  # kill, restart on the same file, kill again
        proc = _start(data, port)
        acked.update(asyncio.run(_run_until_killed(proc, port, token, writes + round_ * 10)))
    assert len(acked) >= 2 * writes + 10, "the node acknowledged too few writes to prove anything"

    db = sqlite3.connect(data / "mpi.sqlite3")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert db.execute("PRAGMA foreign_key_check").fetchall() == []
    rows = {r[0]: r for r in db.execute("SELECT mpi_id, first_name, last_name, date_of_birth, pk FROM identity")}
    for mpi_id, body in acked.items():
        assert mpi_id in rows, f"acknowledged {mpi_id} was lost"
        assert rows[mpi_id][1:4] == (body["first_name"], body["last_name"], body["date_of_birth"])
    # Nothing half-written: every identity has its tokens, blocking keys and create change.
    created = {r[0] for r in db.execute("SELECT mpi_id FROM change_log WHERE kind = 'identity.create'")}
    with_tokens = {r[0] for r in db.execute("SELECT DISTINCT identity_pk FROM name_token")}
    with_keys = {r[0] for r in db.execute("SELECT DISTINCT identity_pk FROM blocking_key")}
    for mpi_id, row in rows.items():
        assert mpi_id in created and row[4] in with_tokens and row[4] in with_keys, mpi_id
    seqs = [r[0] for r in db.execute("SELECT seq FROM change_log ORDER BY seq")]
    assert seqs == list(range(1, len(seqs) + 1))
    chain = db.execute("SELECT prev_hash, hash FROM change_log ORDER BY seq").fetchall()
    assert all(cur[0] == prev[1] for prev, cur in zip(chain, chain[1:], strict=False))
    # The counter survived too: the next registration gets a fresh ID.
    proc = _start(data, port)
    try:
        import urllib.request

        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/mpi/register",
            data=json.dumps({**next(iter(acked.values())), "first_name": "After", "force_create": True}).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            assert json.load(r)["mpi_id"] not in rows
    finally:
        proc.kill()
        proc.wait()
