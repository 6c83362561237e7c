"""Sync benchmark: bytes on the wire, an idle round, a 10,000-change backlog, four nodes at once,
and a throttled, cut link. Real processes (hub on the local PostgreSQL, nodes on SQLite) and
the test suite's TCP proxy to count bytes and shape the link.

    PYTHONPATH=. python scripts/bench_sync.py            # all of it, a Markdown table on stdout
    PYTHONPATH=. python scripts/bench_sync.py --quick    # smaller backlogs, for a smoke run
    PYTHONPATH=. python scripts/bench_sync.py --apply-only  # only the hub's apply rate (backlog, four nodes)

Registrations come from scripts/synth.py (realistic names, birth dates, phones) and are
written straight into the stopped nodes' databases through the registry (10 a transaction,
so timestamps differ as they would at a post), then pushed with ``mpi-node sync``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "scripts"), str(ROOT / "tests")]

import psycopg  # noqa: E402
from proxy import Proxy  # noqa: E402
from synth import generate  # noqa: E402

PG = os.environ.get("MPI_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "MPI_LOG_LEVEL": "WARNING", "MPI_SYNC_INTERVAL_SECONDS": "3600"}


def cli(module: str, *args: str, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, cwd=ROOT,
                          env={**ENV, **(env or {})}, timeout=900)
    if check and done.returncode:
        raise SystemExit(f"{module} {' '.join(args)}: {done.stderr.strip()}")
    return done


async def fill(data: Path, n: int, seed: int, region: str = "DKR", per_tx: int = 10) -> None:
    from shared.compose import registry_of
    from shared.matching import Person
    from shared.schemas import RegisterIn
    from shared.settings import Settings
    from shared.storage.dialects import SqliteDialect
    from shared.storage.store import Store

    store = Store(SqliteDialect(str(data / "mpi.sqlite3"), "NORMAL"))
    await store.open()
    registry = registry_of(store, Settings())
    batch: list[Any] = []
    try:
        for rec in generate(n, seed=seed, dup_rate=0, lookalike_rate=0):
            body = RegisterIn(first_name=rec["first_name"], last_name=rec["last_name"],
                              date_of_birth=rec["date_of_birth"], gender=rec["gender"], region_code=region,
                              country_code="SN", phone_number=rec["phone_number"], force_create=True)
            batch.append((body, Person(first_name=body.first_name, last_name=body.last_name)))
            if len(batch) == per_tx:
                async with store.write("bench") as tx:
                    await registry.insert_new(tx, batch)
                batch = []
        if batch:
            async with store.write("bench") as tx:
                await registry.insert_new(tx, batch)
    finally:
        await store.close()


class Bench:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.db = f"mpi_bench_{uuid.uuid4().hex[:10]}"
        self.url = PG.rsplit("/", 1)[0] + "/" + self.db
        # The hub's signing key is sealed with a key file: this run's, in its own folder.
        ENV.setdefault("MPI_HUB_KEY_FILE", str(folder / "hub.key"))
        cli("hub", "init", "--database-url", self.url, "--country", "SN")
        self.port = _free_port()
        self.hub = subprocess.Popen([sys.executable, "-m", "hub", "serve", "--database-url", self.url, "--port",
                                     str(self.port)], cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
        _wait(f"http://127.0.0.1:{self.port}/health")
        self.rows: list[tuple[str, str, str, str]] = []

    def node(self, name: str, n: int, seed: int, hub_url: str, region: str = "DKR") -> Path:
        enrolment = self.folder / f"{name}.json"
        cli("hub", "node", "enroll", "--database-url", self.url, "--name", name, "--region", region,
            "--hub-url", hub_url, "--out", str(enrolment))
        data = self.folder / name
        cli("node", "init", "--data-dir", str(data), "--enroll", str(enrolment))
        asyncio.run(fill(data, n, seed, region))
        return data

    def close(self) -> None:
        self.hub.terminate()
        self.hub.wait(30)
        with psycopg.connect(PG, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.db}" WITH (FORCE)')


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(url: str) -> None:
    import urllib.request

    for _ in range(300):
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not answer")


def _slowest(text: str) -> float:
    found = re.findall(r"slowest ([0-9.]+) s", text)
    return max(map(float, found)) if found else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller backlogs")
    parser.add_argument("--apply-only", action="store_true",
                        help="only the hub's apply rate: the one-node backlog and four nodes at once")
    args = parser.parse_args()
    scale = 0.2 if args.quick else 1.0
    results: dict[str, Any] = {}
    with TemporaryDirectory() as tmp:
        bench = Bench(Path(tmp))
        try:
            hub_url = f"http://127.0.0.1:{bench.port}"
            # 1. Bytes on the wire for 1,000 registrations in one change set, then an idle round.
            if not args.apply_only:
                proxy = Proxy(bench.port)
                a = bench.node("wire", 1000, seed=1, hub_url=proxy.url)
                proxy.reset_counters()
                done = cli("node", "sync", "--data-dir", str(a))
                total = proxy.up + proxy.down
                results["wire"] = {"bytes": total, "per_registration": total / 1000, "up": proxy.up,
                                   "down": proxy.down, "out": done.stdout.strip()}
                proxy.reset_counters()
                done = cli("node", "sync", "--data-dir", str(a))
                results["idle"] = {"bytes": proxy.up + proxy.down, "up": proxy.up, "down": proxy.down,
                                   "out": done.stdout.strip()}
                proxy.close()

            # 2. A backlog of 10,000 changes from one node, on loopback.
            n = int(10_000 * scale)
            b = bench.node("backlog", n, seed=2, hub_url=hub_url)
            started = time.perf_counter()
            done = cli("node", "sync", "--data-dir", str(b))
            results["backlog"] = {"changes": n, "seconds": time.perf_counter() - started, "out": done.stdout.strip()}

            # 3. Four nodes (four districts) pushing at once.
            per = int(5_000 * scale)
            nodes = [bench.node(f"four{i}", per, seed=10 + i, hub_url=hub_url, region=region)
                     for i, region in enumerate(("THI", "ZIG", "SLO", "KLD"))]
            started = time.perf_counter()
            procs = [subprocess.Popen([sys.executable, "-m", "node", "sync", "--data-dir", str(d)], cwd=ROOT, env=ENV,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for d in nodes]
            outs = [p.communicate(timeout=900) for p in procs]
            seconds = time.perf_counter() - started
            if any(p.returncode for p in procs):
                raise SystemExit(f"a concurrent sync failed: {[o[1] for o in outs]}")
            results["four"] = {"changes": 4 * per, "seconds": seconds, "per_second": 4 * per / seconds}

            # 4. A slow, cut link: 20 kB/s each way, 600 ms round trip, a cut every 200 kB; and, since
            #    the whole backlog is smaller than that, once more with a cut every 20 kB.
            m = int(5_000 * scale)
            slow_links = () if args.apply_only else (("slow", 200_000, "LOU"), ("slow_cuts", 20_000, "MAT"))
            for label, cut_every, region in slow_links:
                proxy = Proxy(bench.port)
                e = bench.node(label, m, seed=3, hub_url=proxy.url, region=region)  # its own district
                proxy.faults.rate, proxy.faults.delay, proxy.faults.cut_every = 20_000, 0.3, cut_every
                proxy.reset_counters()
                started = time.perf_counter()
                rounds, slowest, outputs = 0, 0.0, []
                while True:
                    rounds += 1
                    round_started = time.perf_counter()
                    done = cli("node", "sync", "--data-dir", str(e), env={"MPI_SYNC_TIMEOUT_SECONDS": "30"},
                               check=False)
                    slowest = max(slowest, _slowest(done.stdout), 0.0)
                    outputs.append((done.stdout + done.stderr).strip())
                    if done.returncode == 0:
                        break
                    if rounds > 100 or time.perf_counter() - round_started > 600:
                        raise SystemExit("the throttled sync does not finish: " + outputs[-1])
                results[label] = {"registrations": m, "cut_every": cut_every, "seconds": time.perf_counter() - started,
                                  "bytes": proxy.up + proxy.down, "rounds": rounds, "cuts": proxy.cuts,
                                  "slowest_request": slowest, "out": outputs}
                proxy.close()
        finally:
            bench.close()
    b4, f4 = results["backlog"], results["four"]
    print("| measure | target | measured |")
    print("|---|---|---|")
    if not args.apply_only:
        w, i = results["wire"], results["idle"]
        print(f"| bytes on the wire per registration pushed (1,000 in one set, HTTP included) | <= 150 B | "
              f"{w['per_registration']:.1f} B ({w['bytes']} B: {w['up']} up, {w['down']} down) |")
        print(f"| an idle node's sync round | <= 1 KB | {i['bytes']} B ({i['up']} up, {i['down']} down), "
              "one request |")
    print(f"| backlog of {b4['changes']:,} changes from one node, pushed and applied (loopback) | <= 10 s | "
          f"{b4['seconds']:.1f} s ({b4['changes'] / b4['seconds']:.0f} changes/s, process start included) |")
    print(f"| hub apply throughput, 4 nodes pushing at once ({f4['changes']:,} changes) | >= 2,000 changes/s | "
          f"{f4['per_second']:.0f} changes/s ({f4['seconds']:.1f} s) |")
    for key in ("slow", "slow_cuts") if not args.apply_only else ():
        s = results[key]
        print(f"| {s['registrations']:,} registrations over 20 kB/s, 600 ms RTT, a cut every {s['cut_every'] // 1000} kB | "
              f"{'no request > 30 s' if key == 'slow' else '(extra: cuts do happen)'} | "
              f"{s['seconds']:.1f} s, {s['bytes']:,} B, {s['rounds']} round(s), {s['cuts']} cut(s), "
              f"slowest successful request {s['slowest_request']:.1f} s |")
    print()
    print("```")
    print(json.dumps(results, indent=1))
    print("```")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
