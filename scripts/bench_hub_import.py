#!/usr/bin/env python3
"""``mpi-hub import`` into a hub that already holds N identities: rows per second.

A fresh PostgreSQL database is made a hub (``mpi-hub init``) and seeded to ``--hub-size``
identities with ``mpi-hub import`` itself (synthetic people, scripts/synth.py, as JSON
lines). Then ``--runs`` lists of ``--rows`` people (15% duplicates among them, as a real list
has) are imported one after the other, each by a real ``mpi-hub import`` process with
``--map``: the rate is rows over the process's wall time (start-up included) and over the
import itself (what the command prints). Median of the runs, with the spread.

    .venv/bin/python scripts/bench_hub_import.py --hub-size 100000 --rows 100000
    .venv/bin/python scripts/bench_hub_import.py --hub-size 1000000 --rows 100000 --keep
    .venv/bin/python scripts/bench_hub_import.py --database-url postgresql://.../kept --hub-size 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

import psycopg  # noqa: E402
import synth  # noqa: E402
from bench_api import _body  # noqa: E402

PG = os.environ.get("MPI_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def _write(path: Path, n: int, seed: int, dup_rate: float) -> None:
    with path.open("w", encoding="utf-8") as f:
        for rec in synth.generate(n, seed=seed, dup_rate=dup_rate, lookalike_rate=0.03):
            f.write(json.dumps(_body(rec), ensure_ascii=False) + "\n")


def _hub(*args: str, env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "hub", *args], cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode not in (0, 1) or "imported" not in done.stdout and args[0] == "import":
        raise SystemExit(f"mpi-hub {args[0]} failed: {done.stderr.strip()}")
    return seconds, done.stdout


def _count(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM identity").fetchone()
        return int(row[0]) if row else 0


def _import(url: str, path: Path, env: dict[str, str], map_path: Path | None = None) -> dict[str, Any]:
    args = ["import", "--database-url", url, str(path), "--report", str(path) + ".report.csv"]
    if map_path is not None:
        args += ["--map", str(map_path)]
    wall, out = _hub(*args, env=env)
    found = re.search(r"imported (\d+) rows in ([\d.]+) s", out)
    rows, seconds = (int(found[1]), float(found[2])) if found else (0, wall)
    return {"rows": rows, "wall_s": round(wall, 1), "import_s": seconds,
            "rows_per_s_wall": round(rows / wall), "rows_per_s": round(rows / seconds) if seconds else None,
            "summary": out.strip()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hub-size", type=int, default=100_000, help="identities the hub holds before the timed runs")
    parser.add_argument("--rows", type=int, default=100_000, help="rows of each timed import")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=19)
    parser.add_argument("--database-url", default=None, help="a hub to reuse (seeded up to --hub-size if short)")
    parser.add_argument("--keep", action="store_true", help="keep the database (its URL is printed)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-out" / "hub_import.json")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="mpi-hub-import-"))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MPI_LOG_LEVEL": "WARNING",
           "MPI_HUB_KEY_FILE": os.environ.get("MPI_HUB_KEY_FILE", str(tmp / "hub.key"))}
    name = ""
    url = args.database_url
    if url is None:
        name = f"mpi_bench_import_{uuid.uuid4().hex[:8]}"
        url = PG.rsplit("/", 1)[0] + "/" + name
        _hub("init", "--database-url", url, "--country", "SN", env=env)
    result: dict[str, Any] = {"hub_size": args.hub_size, "rows": args.rows, "cores": os.cpu_count()}
    try:
        short = args.hub_size - _count(url)
        if short > 0:
            seed_file = tmp / "seed.jsonl"
            _write(seed_file, short, args.seed * 1000 + _count(url), dup_rate=0.0)
            print(f"seeding the hub with {short:,} identities through mpi-hub import", file=sys.stderr)
            result["seeding"] = _import(url, seed_file, env)
            seed_file.unlink()
            print(f"  {result['seeding']['summary']}", file=sys.stderr)
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("ANALYZE")
        runs = []
        for i in range(args.runs):
            before = _count(url)
            path = tmp / f"list-{i}.jsonl"
            _write(path, args.rows, args.seed * 1000 + 7 + i + before, dup_rate=0.15 / 0.85)
            run = _import(url, path, env, map_path=tmp / f"list-{i}.map.csv")
            run["hub_before"] = before
            with (tmp / f"list-{i}.map.csv").open(encoding="utf-8") as f:
                run["map_lines"] = sum(1 for _ in f) - 1
            runs.append(run)
            print(f"  run {i + 1}: into {before:,}: {run['summary']}", file=sys.stderr)
            path.unlink()
        result["runs"] = runs
    finally:
        if name and not args.keep:
            with psycopg.connect(PG, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    rates = [r["rows_per_s"] for r in runs]
    walls = [r["rows_per_s_wall"] for r in runs]
    result["median_rows_per_s"] = statistics.median(rates)
    result["median_rows_per_s_wall"] = statistics.median(walls)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"mpi-hub import, {args.rows:,} rows into a hub of {args.hub_size:,} ({os.cpu_count()} cores), "
          f"median of {len(runs)}:")
    print(f"  {result['median_rows_per_s']:,} rows/s (import; spread {min(rates):,}-{max(rates):,}), "
          f"{result['median_rows_per_s_wall']:,} rows/s wall with start-up (spread {min(walls):,}-{max(walls):,}); "
          f"target >= 5,000 rows/s into 1M")
    if "seeding" in result:
        print(f"  seeding: {result['seeding']['rows']:,} rows at {result['seeding']['rows_per_s']:,} rows/s")
    if args.keep and name:
        print(f"  kept: {url}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
