#!/usr/bin/env python3
"""In-process latency of the two hot reads, GET of one identity and a two-word search, without HTTP.

Runs ``Registry.get`` and ``Registry.search`` on a node folder that ``bench_api.py --keep``
left, and prints p50/p95 wall time and CPU time per call. ``--root`` runs another checkout's
code on the same folder (same schema), so two versions compare under the same load:

    .venv/bin/python scripts/bench_api.py --sizes 10000 --keep /tmp/mpi-10k
    .venv/bin/python scripts/bench_reads.py /tmp/mpi-10k
    .venv/bin/python scripts/bench_reads.py /tmp/mpi-10k --root /tmp/an-older-checkout
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("data_dir", type=Path, help="a node folder (bench_api.py --keep)")
parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent, help="the checkout to run")
parser.add_argument("--calls", type=int, default=550)
args = parser.parse_args()
sys.path.insert(0, str(args.root))

import sqlalchemy as sa  # noqa: E402

from node.storage import node_store  # noqa: E402
from shared.compose import registry_of  # noqa: E402
from shared.schemas import SearchQuery  # noqa: E402
from shared.settings import Settings  # noqa: E402
from shared.storage import schema as t  # noqa: E402


async def main() -> None:
    store = node_store(Settings(data_dir=str(args.data_dir)))
    await store.open()
    registry = registry_of(store, Settings(matcher="learned"))
    await registry.load_frequencies()
    async with store.read() as conn:
        rows = (await conn.execute(sa.select(t.identity.c.mpi_id, t.identity.c.first_name, t.identity.c.last_name))).all()
    rnd = random.Random(1)
    picks = [rnd.choice(rows) for _ in range(args.calls + 50)]
    calls: dict[str, Callable[[Any], Awaitable[Any]]] = {
        "get": lambda r: registry.get(r.mpi_id, "bench"),
        "search": lambda r: registry.search(SearchQuery(q=f"{r.first_name} {r.last_name}"), "bench"),
    }
    for name, call in calls.items():
        for r in picks[:50]:
            await call(r)  # warm the caches
        wall = []
        cpu = time.process_time()
        for r in picks[50:]:
            started = time.perf_counter()
            await call(r)
            wall.append((time.perf_counter() - started) * 1000)
        cpu_ms = (time.process_time() - cpu) * 1000 / len(wall)
        wall.sort()
        print(f"{args.root.name} {name}: p50 {statistics.median(wall):.2f} ms, p95 {wall[int(len(wall) * 0.95)]:.2f} ms, "
              f"CPU {cpu_ms:.2f} ms/call")
    await store.close()


asyncio.run(main())
