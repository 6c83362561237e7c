#!/usr/bin/env python3
"""``mpi-node import`` into a node that already holds N identities: rows per second, and where the time goes.

A fresh node folder is initialised (``mpi-node init``) and loaded to ``--node-size`` identities
(synthetic people, no duplicates, through ``Registry.insert_new`` as ``bench_api.py`` loads).
Then ``--runs`` lists of ``--rows`` people (15% duplicates of people already in the node, as a
real list has) are imported one after the other, each by a real ``mpi-node import`` process
with ``--map``: every row is matched against the registry (candidates, scoring), so the rate
is the matcher's. Median of the runs, with the spread. ``--profile``: one more list imported
in-process under cProfile, its time split by stage (validation, candidates, scoring, writes).

    .venv/bin/python scripts/bench_node_import.py --node-size 200000 --rows 5000
    .venv/bin/python scripts/bench_node_import.py --node-size 200000 --rows 5000 --keep /tmp/mpi-node-200k --profile
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

import synth  # noqa: E402
from bench_api import _body, load  # noqa: E402

# Functions whose cumulative time tells the stages of an imported row apart (path:function suffixes).
STAGES = {
    "validate (pydantic, phone numbers)": ("shared/bulk.py:validate",),
    "query blocking keys": ("matching/blocking.py:query_keys",),
    "candidates (SQLite reads, Person rows)": ("shared/registration.py:candidates_many",),
    "scoring (matcher.rank)": ("matching/learned.py:rank", "matching/score.py:rank"),
    "writes (insert_new: IDs, index, change log)": ("shared/registry.py:insert_new",),
    "review items": ("shared/registry.py:open_review",),
}


def _write(path: Path, n: int, seed: int) -> None:
    with path.open("w", encoding="utf-8") as f:
        for rec in synth.generate(n, seed=seed, dup_rate=0.15 / 0.85, lookalike_rate=0.03):
            f.write(json.dumps(_body(rec), ensure_ascii=False) + "\n")


def _node(*args: str, env: dict[str, str]) -> str:
    done = subprocess.run([sys.executable, "-m", "node", *args], cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode not in (0, 1) or (args[0] == "import" and "imported" not in done.stdout):
        raise SystemExit(f"mpi-node {args[0]} failed: {done.stderr.strip()}")
    return done.stdout


def _import(data: Path, path: Path, env: dict[str, str]) -> dict[str, Any]:
    started = time.perf_counter()
    out = _node("import", "--data-dir", str(data), str(path), "--report", f"{path}.report.csv",
                "--map", f"{path}.map.csv", env=env)
    wall = time.perf_counter() - started
    found = re.search(r"imported (\d+) rows in ([\d.]+) s", out)
    rows, seconds = (int(found[1]), float(found[2])) if found else (0, wall)
    return {"rows": rows, "import_s": seconds, "wall_s": round(wall, 1), "rows_per_s": round(rows / seconds),
            "rows_per_s_wall": round(rows / wall), "summary": out.strip()}


def _profile(data: Path, path: Path) -> dict[str, float]:
    """Import ``path`` in this process under cProfile; seconds per stage (cumulative, overlapping none)."""
    from shared.bulk import import_file
    from shared.settings import Settings

    profiler = cProfile.Profile()
    settings = Settings(data_dir=str(data))
    started = time.perf_counter()
    profiler.enable()
    asyncio.run(import_file(settings, path, report=f"{path}.report.csv", actor="bench", map_path=None))
    profiler.disable()
    total = time.perf_counter() - started
    stats = pstats.Stats(profiler)
    table: dict[str, float] = {"total (under cProfile)": round(total, 1)}
    for stage, suffixes in STAGES.items():
        seconds = sum(row[3] for key, row in stats.stats.items()  # type: ignore[attr-defined]
                      if f"{key[0]}:{key[2]}".endswith(suffixes))
        table[stage] = round(seconds, 1)
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--node-size", type=int, default=200_000)
    parser.add_argument("--rows", type=int, default=5_000, help="rows of each timed import")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=23)
    parser.add_argument("--keep", type=Path, default=None, help="node folder to keep (reused if it holds the node)")
    parser.add_argument("--profile", action="store_true", help="one more list under cProfile: time per stage")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-out" / "node_import.json")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="mpi-node-import-"))
    data = args.keep or tmp / "node"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MPI_LOG_LEVEL": "WARNING"}
    result: dict[str, Any] = {"node_size": args.node_size, "rows": args.rows, "cores": os.cpu_count()}
    try:
        if not (data / "mpi.sqlite3").exists():
            _node("init", "--data-dir", str(data), "--country", "SN", "--region", "DKR", env=env)
            print(f"loading the node with {args.node_size:,} identities", file=sys.stderr)
            result["load_rows_per_s"] = round(asyncio.run(load(data, args.node_size, args.seed)))
        runs = []
        for i in range(args.runs):
            path = tmp / f"list-{i}.jsonl"
            _write(path, args.rows, args.seed * 1000 + 7 + i + int(time.time()) % 100_000)
            run = _import(data, path, env)
            runs.append(run)
            print(f"  run {i + 1}: {run['summary']}", file=sys.stderr)
        result["runs"] = runs
        if args.profile:
            path = tmp / "profiled.jsonl"
            _write(path, args.rows, args.seed * 1000 + 999 + int(time.time()) % 100_000)
            result["profile_s"] = _profile(data, path)
    finally:
        if args.keep is None:
            shutil.rmtree(tmp, ignore_errors=True)
    rates = [r["rows_per_s"] for r in runs]
    result["median_rows_per_s"] = statistics.median(rates)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"mpi-node import, {args.rows:,} rows into a node of {args.node_size:,} ({os.cpu_count()} cores), "
          f"median of {len(runs)}: {result['median_rows_per_s']:,} rows/s (spread {min(rates):,}-{max(rates):,}); "
          f"target >= 1,000 rows/s")
    for stage, seconds in result.get("profile_s", {}).items():
        print(f"  {stage}: {seconds} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
