#!/usr/bin/env python3
"""API latency, throughput and memory of a real node at 10k / 100k / 1M identities.

For each size: a fresh node folder is initialised and loaded with a synthetic West African
population (scripts/synth.py, no duplicates) through ``Registry.insert_new`` in batches;
then a real ``mpi-node serve`` process is started and driven over HTTP, one request at a
time, as a health post would: GET of random identities, search by name, match of
misspelt existing people, registration of new people (201 or 409). It reports p50/p95/p99
per endpoint, sequential registration throughput, the server's resident memory, and how
latency grows with size.

    .venv/bin/python scripts/bench_api.py --sizes 10000,100000 --requests 400
    .venv/bin/python scripts/bench_api.py --sizes 1000000 --requests 400 --keep /tmp/mpi-1m
    .venv/bin/python scripts/bench_api.py --sizes 10000,100000 --fhir   # also FHIR $match vs /mpi/match

With ``--fhir`` each match query is also put to ``POST /fhir/Patient/$match`` (the same
person as a FHIR Parameters, right after the native call), and the report gives the ratio of
the two p95s (target: FHIR within 1.5x of native).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

import aiohttp  # noqa: E402
import sqlalchemy as sa  # noqa: E402
import synth  # noqa: E402

from node.cli import main as node_cli  # noqa: E402
from node.storage import node_store  # noqa: E402
from shared.compose import registry_of  # noqa: E402
from shared.matching import Person  # noqa: E402
from shared.schemas import RegisterIn  # noqa: E402
from shared.settings import Settings  # noqa: E402
from shared.storage import schema as t  # noqa: E402

TARGETS_MS = {"register": 20.0, "match": 15.0, "search": 15.0, "get": 5.0}
FHIR_RATIO_TARGET = 1.5
_FHIR_GENDER = {"M": "male", "F": "female", "U": "unknown"}


def _fhir_match(query: dict[str, Any]) -> dict[str, Any]:
    """The Parameters of POST /fhir/Patient/$match for a /mpi/match body."""
    patient: dict[str, Any] = {"resourceType": "Patient", "name": [{"family": query["last_name"],
                                                                  "given": [query["first_name"]]}]}
    if query.get("date_of_birth"):
        patient["birthDate"] = query["date_of_birth"]
    if query.get("gender"):
        patient["gender"] = _FHIR_GENDER[query["gender"]]
    return {"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": patient}]}


def _body(rec: dict[str, Any]) -> dict[str, Any]:
    body = {
        "first_name": rec["first_name"],
        "last_name": rec["last_name"],
        "date_of_birth": rec["date_of_birth"],
        "gender": rec["gender"],
        "region_code": rec["region_code"],
        "country_code": "SN",
        "phone_number": rec["phone_number"],
    }
    if rec.get("dhis2_uid"):
        body["external_ids"] = {"dhis2_uid": rec["dhis2_uid"]}
    return {k: v for k, v in body.items() if v is not None}


def _people(n: int, seed: int) -> Any:
    return (r for r in synth.generate(n, seed=seed, dup_rate=0.0, lookalike_rate=0.0))


async def load(data: Path, n: int, seed: int) -> float:
    """Fill a node with ``n`` people; returns records per second."""
    settings = Settings(data_dir=str(data), sqlite_synchronous="NORMAL")
    store = node_store(settings)
    await store.open()
    registry = registry_of(store, settings)  # the learned matcher, the default
    started = time.perf_counter()
    batch: list[tuple[RegisterIn, Person]] = []
    done = 0
    seen_uids: set[str] = set()
    for rec in _people(n, seed):
        if rec.get("dhis2_uid") in seen_uids:
            rec["dhis2_uid"] = None
        seen_uids.add(rec.get("dhis2_uid") or "")
        body = RegisterIn.model_validate(_body(rec))
        batch.append((body, synth.to_person(rec)))
        if len(batch) == 2000:
            async with store.write("bench") as tx:
                await registry.insert_new(tx, batch)
            done += len(batch)
            batch.clear()
            if done % 100_000 == 0:
                rate = done / (time.perf_counter() - started)
                print(f"  loaded {done:,} ({rate:,.0f}/s)", file=sys.stderr, flush=True)
    if batch:
        async with store.write("bench") as tx:
            await registry.insert_new(tx, batch)
    rate = n / (time.perf_counter() - started)
    async with store.writer.begin() as conn:
        await conn.exec_driver_sql("ANALYZE")
    await store.close()
    return rate


async def sample(data: Path, k: int, seed: int) -> list[Any]:
    store = node_store(Settings(data_dir=str(data)))
    await store.connect()
    async with store.reader.connect() as conn:
        top = (await conn.execute(sa.select(sa.func.max(t.identity.c.pk)))).scalar_one()
        rng = random.Random(seed)
        pks = rng.sample(range(1, top + 1), min(k, top))
        rows = (await conn.execute(sa.select(t.identity).where(t.identity.c.pk.in_(pks)))).all()
    await store.close()
    return list(rows)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss_mb(pid: int) -> tuple[float, float]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def drive(
    port: int, token: str, rows: list[Any], requests: int, seed: int, size: int, fhir: bool = False
) -> dict[str, Any]:
    rng = random.Random(seed)
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {token}"}
    timings: dict[str, list[float]] = {"get": [], "search": [], "match": [], "register": []}
    if fhir:
        timings["fhir_match"] = []
    statuses: dict[str, dict[int, int]] = {k: {} for k in timings}

    async with aiohttp.ClientSession(headers=headers) as session:

        async def call(kind: str, method: str, path: str, **kw: Any) -> Any:
            started = time.perf_counter()
            async with session.request(method, base + path, **kw) as r:
                body = await r.json()
            timings[kind].append((time.perf_counter() - started) * 1000)
            statuses[kind][r.status] = statuses[kind].get(r.status, 0) + 1
            return body

        for _ in range(20):  # warm the caches and the connection
            row = rng.choice(rows)
            await call("get", "GET", f"/mpi/{row.mpi_id}")
        for kind in timings:
            timings[kind].clear()
            statuses[kind].clear()
        for i in range(requests):
            row = rows[i % len(rows)]
            await call("get", "GET", f"/mpi/{row.mpi_id}")
            await call("search", "GET", "/mpi/search", params={"q": f"{row.first_name} {row.last_name}"})
            query = {
                "first_name": row.first_name,
                "last_name": synth.typo(row.last_name, rng),
                "date_of_birth": row.date_of_birth.isoformat() if row.date_of_birth else None,
                "gender": row.gender,
            }
            await call("match", "POST", "/mpi/match", json={k: v for k, v in query.items() if v})
            if fhir:
                await call("fhir_match", "POST", "/fhir/Patient/$match", json=_fhir_match(query))
        new_people = [_body(r) for r in _people(requests * 2, seed + 7_777)]
        for body in new_people:
            body.pop("external_ids", None)
        started = time.perf_counter()
        for body in new_people:
            await call("register", "POST", "/mpi/register", json=body)
        throughput = len(new_people) / (time.perf_counter() - started)
    return {
        "size": size,
        "latency_ms": {
            k: {"p50": round(_pct(v, 0.5), 2), "p95": round(_pct(v, 0.95), 2), "p99": round(_pct(v, 0.99), 2),
                "mean": round(statistics.fmean(v), 2), "n": len(v)}
            for k, v in timings.items()
        },
        "statuses": statuses,
        "register_per_s": round(throughput, 1),
    }


def admin_token(data: Path) -> str:
    """A new admin token for the node in ``data``, made by the real CLI."""
    out = subprocess.run(
        [sys.executable, "-m", "node", "token", "create", "--data-dir", str(data), "--role", "admin", "--name", "bench"],
        capture_output=True, text=True, cwd=ROOT, check=True,
    )
    return out.stdout.strip()


@dataclass
class Served:
    """A running ``mpi-node serve`` process and its port."""

    pid: int
    port: int


@contextlib.contextmanager
def serving(data: Path) -> Iterator[tuple[Served, float]]:
    """Run ``mpi-node serve`` on a free port until the block ends: (process, start-up seconds)."""
    port = _free_port()
    env = {**os.environ, "MPI_LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "node", "serve", "--data-dir", str(data), "--port", str(port)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None:
                    raise SystemExit(f"node died: {proc.stderr.read() if proc.stderr else ''}") from None
                time.sleep(0.1)
        yield Served(proc.pid, port), time.perf_counter() - started
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def run_size(size: int, requests: int, seed: int, keep: Path | None, fhir: bool = False) -> dict[str, Any]:
    data = keep if keep else Path(tempfile.mkdtemp(prefix=f"mpi-bench-{size}-"))
    fresh = not (data / "mpi.sqlite3").exists()
    if fresh:
        data.mkdir(parents=True, exist_ok=True)
        if node_cli(["init", "--data-dir", str(data), "--country", "SN", "--region", "DKR"]) != 0:
            raise SystemExit("init failed")
        print(f"loading {size:,} identities into {data}", file=sys.stderr, flush=True)
        load_rate = asyncio.run(load(data, size, seed))
    else:
        load_rate = 0.0
    token = admin_token(data)
    rows = asyncio.run(sample(data, max(requests, 50), seed))
    with serving(data) as (proc, startup):
        result = asyncio.run(drive(proc.port, token, rows, requests, seed, size, fhir))
        rss, peak = _rss_mb(proc.pid)
    result.update(
        load_per_s=round(load_rate, 1),
        startup_s=round(startup, 2),
        rss_mb=round(rss, 1),
        peak_rss_mb=round(peak, 1),
        db_mb=round((data / "mpi.sqlite3").stat().st_size / 2**20, 1),
    )
    if not keep:
        shutil.rmtree(data, ignore_errors=True)
    return result


def report(results: list[dict[str, Any]]) -> str:
    lines = [
        f"API benchmark, {dt.date.today()}, {os.cpu_count()} cores, one request at a time over loopback HTTP",
        "",
        "| identities | endpoint | p50 ms | p95 ms | p99 ms | target p95 |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        factor = 2.0 if r["size"] >= 1_000_000 else 1.0
        for kind, lat in r["latency_ms"].items():
            if kind not in TARGETS_MS:
                continue
            target = TARGETS_MS[kind] * factor
            mark = "met" if lat["p95"] <= target else "NOT met"
            lines.append(f"| {r['size']:,} | {kind} | {lat['p50']} | {lat['p95']} | {lat['p99']} | <= {target:g} ({mark}) |")
    lines += ["", "| identities | register/s (target >= 200) | RSS MB (peak) | start-up s | DB MB | load/s |", "|---|---|---|---|---|---|"]
    for r in results:
        lines.append(
            f"| {r['size']:,} | {r['register_per_s']} | {r['rss_mb']} ({r['peak_rss_mb']}) | {r['startup_s']} "
            f"| {r['db_mb']} | {r['load_per_s']} |"
        )
    fhir = [r for r in results if "fhir_match" in r["latency_ms"]]
    if fhir:
        lines += ["", f"| identities | /mpi/match p95 ms | FHIR $match p95 ms | ratio (target <= {FHIR_RATIO_TARGET:g}) "
                  "| FHIR $match p50 ms |", "|---|---|---|---|---|"]
        for r in fhir:
            native, face = r["latency_ms"]["match"], r["latency_ms"]["fhir_match"]
            ratio = face["p95"] / native["p95"]
            mark = "met" if ratio <= FHIR_RATIO_TARGET else "NOT met"
            lines.append(f"| {r['size']:,} | {native['p95']} | {face['p95']} | {ratio:.2f} ({mark}) | {face['p50']} |")
    lines += ["", "statuses: " + "; ".join(f"{r['size']:,}: {json.dumps(r['statuses'])}" for r in results)]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated registry sizes")
    parser.add_argument("--requests", type=int, default=400, help="requests per endpoint")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", type=Path, default=None, help="reuse or keep this node folder (one size only)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-out" / "api.json")
    parser.add_argument("--fhir", action="store_true", help="also time POST /fhir/Patient/$match against /mpi/match")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    results = [run_size(size, args.requests, args.seed, args.keep, args.fhir) for size in sizes]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(report(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
