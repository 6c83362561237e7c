"""Sweep wall time with one and with two ``mpi-hub dedup worker`` processes, on the same hub.

A synthetic population (scripts/synth.py) is imported into a fresh hub (``mpi-hub import``),
and the database is copied (``CREATE DATABASE ... TEMPLATE``) once per run, so every run
sweeps the same identities from the same state: ``mpi-hub dedup plan``, then N workers with
``--until-idle``, timed from their start until the last exits. Runs alternate one and two
workers; the median of each and its spread are printed, with the merges of each run (the
same for one and two workers when the split is right). Databases are dropped at the end.

    python scripts/bench_workers.py --n 20000 --runs 3
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
PG = os.environ.get("MPI_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "MPI_LOG_LEVEL": "WARNING"}


def _url(name: str) -> str:
    return PG.rsplit("/", 1)[0] + "/" + name


def _admin(sql: str) -> None:
    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(sql)


def _hub(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "hub", *args], cwd=ROOT, env=ENV, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"mpi-hub {args[0]}: {done.stderr.strip()}")
    return done.stdout


def _sweep(url: str, workers: int, batch: int) -> tuple[float, int]:
    _hub("dedup", "plan", "--database-url", url, "--batch", str(batch))
    started = time.perf_counter()
    procs = [
        subprocess.Popen([sys.executable, "-m", "hub", "dedup", "worker", "--database-url", url, "--name", f"w{i}",
                          "--batch", str(batch), "--poll", "0.5", "--until-idle"],
                         cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for i in range(workers)
    ]
    for proc in procs:
        if proc.wait() != 0:
            raise SystemExit("a worker failed")
    seconds = time.perf_counter() - started
    with psycopg.connect(url) as conn:
        merged = conn.execute("SELECT count(*) FROM identity WHERE status = 'merged'").fetchone()
    return seconds, int(merged[0] if merged else 0)


def _write_people(path: Path, n: int) -> None:
    """The generator's records in the import's columns (a DHIS2 UID kept once, as bench_dedup does)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import synth

    fields = ["first_name", "last_name", "date_of_birth", "gender", "region_code", "country_code", "phone_number",
              "external_ids.dhis2_uid"]
    seen: set[str] = set()
    with path.open("w", newline="") as out:
        writer = csv.DictWriter(out, fields)
        writer.writeheader()
        for rec in synth.generate(n, seed=7, dup_rate=0.25, lookalike_rate=0.03):
            uid = rec.get("dhis2_uid") or ""
            if uid in seen:
                uid = ""
            seen.add(uid)
            writer.writerow({**{k: rec.get(k) or "" for k in fields[:-1]}, "country_code": "SN",
                             "external_ids.dhis2_uid": uid})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=1000, help="identities per slice")
    args = parser.parse_args()
    base = f"mpi_bench_workers_{uuid.uuid4().hex[:8]}"
    made = [base]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp) / "people.csv"
            _write_people(data, args.n)
            _hub("init", "--database-url", _url(base), "--country", "SN")
            _hub("import", "--database-url", _url(base), str(data), "--report", str(Path(tmp) / "report.csv"))
        with psycopg.connect(_url(base), autocommit=True) as conn:
            conn.execute("DELETE FROM dedup_pending")  # the sweep's work only: the import queued every row
        times: dict[int, list[float]] = {1: [], 2: []}
        merges: dict[int, list[int]] = {1: [], 2: []}
        for run in range(args.runs):
            for workers in (1, 2):
                copy = f"{base}_{run}_{workers}"
                _admin(f'CREATE DATABASE "{copy}" TEMPLATE "{base}"')
                made.append(copy)
                seconds, merged = _sweep(_url(copy), workers, args.batch)
                times[workers].append(seconds)
                merges[workers].append(merged)
                print(f"run {run + 1}, {workers} worker(s): {seconds:.1f} s, {merged} merged", flush=True)
                _admin(f'DROP DATABASE "{copy}" WITH (FORCE)')
                made.remove(copy)
        for workers in (1, 2):
            ts = times[workers]
            print(f"{workers} worker(s): median {statistics.median(ts):.1f} s (spread {min(ts):.1f}-{max(ts):.1f}), "
                  f"merged {merges[workers]}")
        print(f"ratio two/one workers: {statistics.median(times[2]) / statistics.median(times[1]):.2f}")
    finally:
        for name in made:
            _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
