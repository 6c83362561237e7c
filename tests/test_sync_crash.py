"""kill -9 during sync: the hub mid-apply, a node mid-pull and mid-write; and a node's wrong clock."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from cluster import ENV, ROOT, Hub, Node, identities

from shared.settings import Settings
from shared.storage.dialects import SqliteDialect
from shared.storage.store import Store


async def _bulk(data: Path, n: int, region: str = "DKR", future_ms: int = 0) -> None:
    """Register ``n`` people straight into a stopped node's database (fast set-up of a backlog)."""
    from shared.cli import registry_for
    from shared.matching import Person
    from shared.schemas import RegisterIn
    from shared.sync.hlc import Hlc

    store = Store(SqliteDialect(str(data / "mpi.sqlite3")))
    await store.open()
    try:
        if future_ms:
            store.hlc = Hlc(wall_ms=lambda: time.time_ns() // 1_000_000 + future_ms)
        registry = registry_for(store, Settings())
        tag = uuid.uuid4().hex[:4]
        for start in range(0, n, 500):
            items = []
            for i in range(start, min(n, start + 500)):
                body = RegisterIn(first_name=f"Awa{tag}{i}", last_name=["Diop", "Fall", "Sow"][i % 3],
                                  date_of_birth=f"19{60 + i % 40}-0{1 + i % 9}-1{i % 10}", gender="F",
                                  region_code=region, country_code="SN", force_create=True)
                items.append((body, Person(first_name=body.first_name, last_name=body.last_name,
                                           date_of_birth=body.date_of_birth, region_code=region)))
            async with store.write("test") as tx:
                await registry.insert_new(tx, items)
    finally:
        await store.close()


def _sync_process(node: Node) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "node", "sync", "--data-dir", str(node.data)], cwd=ROOT, text=True,
        env={**ENV, **node.env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


def _all_once(hub: Hub, node: Node) -> None:
    node_id = node.sql("SELECT value FROM node_meta WHERE key = 'node_id'")[0][0]
    mine = node.sql("SELECT seq, hash FROM change_log WHERE node_id = ? ORDER BY seq", node_id)
    held = hub.sql("SELECT seq, hash FROM change_log WHERE node_id = %s ORDER BY seq", node_id)
    assert [tuple(r) for r in held] == [tuple(r) for r in mine]


def test_kill_9_of_the_hub_mid_apply_and_of_a_node_mid_pull(hub: Hub, tmp_path: Path) -> None:
    a = Node(tmp_path / "a", hub.enroll("a", "DKR", tmp_path / "a.json", hub.url), env={"MPI_SYNC_BATCH_MAX": "500"})
    b = Node(tmp_path / "b", hub.enroll("b", "DKR", tmp_path / "b.json", hub.url))
    asyncio.run(_bulk(a.data, 3000))
    node_id = a.sql("SELECT value FROM node_meta WHERE key = 'node_id'")[0][0]
    proc = _sync_process(a)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # kill the hub once it has applied part of the backlog
        held = hub.sql("SELECT count(*) FROM change_log WHERE node_id = %s", node_id)[0][0]
        if held >= 500:
            break
        time.sleep(0.02)
    hub.kill9()
    proc.wait(60)
    held = hub.sql("SELECT count(*) FROM change_log WHERE node_id = %s", node_id)[0][0]
    assert proc.returncode != 0 and 0 < held < 3000, (proc.returncode, held)
    assert len(proc.stderr.read().strip().splitlines()) == 1  # type: ignore[union-attr]
    # Whatever was committed is whole: every stored change has its identity and feed row.
    assert hub.sql("SELECT count(*) FROM identity")[0][0] == held
    assert hub.sql("SELECT count(*) FROM sync_feed WHERE node_id = %s", node_id)[0][0] == held
    hub.start()
    assert a.sync().returncode == 0
    _all_once(hub, a)

    pull = _sync_process(b)  # 3,000 identities come down in pulls of 500: kill it after the first
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        pos = b.sql("SELECT value FROM node_meta WHERE key = 'sync_pull_pos'")
        if pos and int(pos[0][0]) > 0:
            break
        time.sleep(0.01)
    assert pull.poll() is None, "the pull ended before it could be killed"
    pull.send_signal(signal.SIGKILL)
    pull.wait()
    assert pull.returncode == -signal.SIGKILL
    assert b.sql("PRAGMA integrity_check") == [("ok",)]
    partial = len(identities(b))
    assert 0 < partial < 3000, partial  # the kill landed mid-pull: some sets applied, not all
    assert b.sync().returncode == 0
    assert identities(b) == identities(hub)


def test_kill_9_of_a_node_mid_write_then_sync_loses_nothing(hub: Hub, tmp_path: Path) -> None:
    a = Node(tmp_path / "a", hub.enroll("a", "DKR", tmp_path / "a.json", hub.url))
    a.start()
    stop = threading.Event()

    def hammer(worker: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            try:
                a.call("POST", "/mpi/register", {"first_name": f"Moussa{worker}x{i}", "last_name": "Ba",
                                                 "region_code": "DKR", "country_code": "SN", "force_create": True})
            except OSError:
                return

    workers = [threading.Thread(target=hammer, args=(w,)) for w in range(4)]
    for w in workers:
        w.start()
    time.sleep(1.5)
    a.kill9()
    stop.set()
    for w in workers:
        w.join()
    assert a.sync().returncode == 0
    _all_once(hub, a)
    assert identities(a) == identities(hub) and len(identities(hub)) > 10


def test_a_node_clock_far_ahead_is_refused_and_shown(hub: Hub, tmp_path: Path) -> None:
    a = Node(tmp_path / "a", hub.enroll("a", "DKR", tmp_path / "a.json", hub.url))
    asyncio.run(_bulk(a.data, 2, future_ms=3_600_000))  # an hour ahead
    done = a.sync(check=False)
    assert done.returncode != 0 and "clock_skew" in done.stderr
    a.start()
    try:
        status, state = a.call("GET", "/sync/status")
        assert state["refused"][0]["code"] == "clock_skew" and state["pending_changes"] == 2
        assert "clock_skew" in state["last_error"]
    finally:
        a.stop()
    assert hub.sql("SELECT count(*) FROM identity") == [(0,)]
