#!/usr/bin/env python3
"""The hub's cross-region dedup on PostgreSQL: full sweep and incremental check, with Splink beside it.

A synthetic population (scripts/synth.py) with a known share of duplicates is written into
a fresh PostgreSQL database as the hub would hold it after nodes pushed their offline
registrations (no matching on the way in). Then:

1. the full sweep (``Dedup.sweep``) runs over everything: time, peak memory, and against
   the truth: recall (true duplicate pairs merged or queued for review), auto-merge
   precision (merged pairs that are one person), review-queue size;
2. ``--incremental N`` more registrations arrive (as from a sync), are queued and drained
   (``enqueue`` + ``Dedup.drain``): time for N against the whole registry;
3. Splink (DuckDB, unsupervised) dedupes the same records with the same fields, in its own
   venv (.bench-venv, created by scripts/bench_matcher_core.py): time, peak memory, and the
   same precision / recall at its match probability >= the same threshold.

    .venv/bin/python scripts/bench_dedup.py --n 100000 --incremental 10000
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import datetime as dt
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

import psycopg  # noqa: E402
import sqlalchemy as sa  # noqa: E402
import synth  # noqa: E402
from bench_api import _body  # noqa: E402

from shared.compose import registry_of  # noqa: E402
from shared.dedup import Dedup, DedupStats, enqueue  # noqa: E402
from shared.identities.candidates import candidates  # noqa: E402
from shared.matching import person_of  # noqa: E402
from shared.registry import Registry  # noqa: E402
from shared.schemas import RegisterIn  # noqa: E402
from shared.settings import Settings  # noqa: E402
from shared.storage import schema as t  # noqa: E402
from shared.storage.dialects import PostgresDialect  # noqa: E402
from shared.storage.store import Store  # noqa: E402

PG = os.environ.get("MPI_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def _load(registry: Registry, records: list[dict[str, Any]], mpi_of: dict[str, str]) -> list[int]:
    """Write records as synced registrations (no matching on the way in); returns their pks."""
    seen: set[str] = set()
    for i in range(0, len(records), 2000):
        chunk = records[i : i + 2000]
        items = []
        for rec in chunk:
            uid = rec.get("dhis2_uid")
            if uid in seen:
                rec["dhis2_uid"] = None
            seen.add(uid or "")
            items.append((RegisterIn.model_validate({**_body(rec), "region_code": rec["region_code"]}), synth.to_person(rec)))
        async with registry.store.write("bench") as tx:
            ids = await registry.insert_new(tx, items)
        mpi_of.update({rec["record_id"]: mpi_id for rec, mpi_id in zip(chunk, ids, strict=True)})
    async with registry.store.read() as conn:
        rows = await conn.execute(sa.select(t.identity.c.pk).where(t.identity.c.mpi_id.in_([mpi_of[r["record_id"]] for r in records[-2000:]])))
        return [r[0] for r in rows]


async def _pair_funnel(registry: Registry, records: list[dict[str, Any]], mpi_of: dict[str, str], sample: int = 2000) -> dict[str, Any]:
    """Where true pairs are lost, on a sample before the sweep: among the candidates, or in the scoring.

    - among the candidates: the larger-pk side is among the smaller's best partners above
      it (what the sweep asks ``identities.candidates``);
    - scoring >= probable: the two compared directly, candidates aside.
    """
    pairs = [
        (mpi_of[r["related_record_id"]], mpi_of[r["record_id"]])
        for r in records
        if r["kind"] == "duplicate" and r["record_id"] in mpi_of and r["related_record_id"] in mpi_of
    ][:sample]
    wanted = sorted({m for pair in pairs for m in pair})
    rows: dict[str, Any] = {}
    async with registry.store.read() as conn:
        for i in range(0, len(wanted), 900):
            found = await conn.execute(sa.select(t.identity).where(t.identity.c.mpi_id.in_(wanted[i : i + 900])))
            rows.update({row.mpi_id: row for row in found})
        ordered = [tuple(sorted((rows[a], rows[b]), key=lambda row: row.pk)) for a, b in pairs]
        found_lists = await candidates(
            conn, [person_of(lo) for lo, _ in ordered], registry.candidate_limit, after=[lo.pk for lo, _ in ordered]
        )
    among = sum(hi.pk in {row.pk for row, _ in found} for (_, hi), found in zip(ordered, found_lists, strict=True))
    probable = registry.matcher.thresholds.probable
    scoring = sum(registry.matcher.compare(person_of(lo), person_of(hi)).score >= probable for lo, hi in ordered)
    return {
        "sample": len(ordered),
        "among_candidates": round(among / max(1, len(ordered)), 4),
        "scoring_probable": round(scoring / max(1, len(ordered)), 4),
    }


async def _outcome(store: Store) -> tuple[dict[str, str], set[frozenset[str]]]:
    """(mpi_id -> canonical mpi_id, pairs in open review items)."""
    async with store.read() as conn:
        merged = {a: b for a, b in await conn.execute(sa.select(t.identity.c.mpi_id, t.identity.c.merged_into))}
        reviews = {
            frozenset(json.loads(m))
            for (m,) in await conn.execute(sa.select(t.review_item.c.mpi_ids).where(t.review_item.c.status == "open"))
        }

    def canonical(x: str) -> str:
        while merged.get(x):
            x = merged[x]  # type: ignore[assignment]
        return x

    return {m: canonical(m) for m in merged}, reviews


def _score(records: list[dict[str, Any]], mpi_of: dict[str, str], canon: dict[str, str], reviews: set[frozenset[str]]) -> dict[str, Any]:
    person_of_id = {mpi_of[r["record_id"]]: r["person_id"] for r in records if r["record_id"] in mpi_of}
    true_pairs = [
        (mpi_of[r["related_record_id"]], mpi_of[r["record_id"]])
        for r in records
        if r["kind"] == "duplicate" and r["record_id"] in mpi_of and r["related_record_id"] in mpi_of
    ]
    merged_true = sum(canon[a] == canon[b] for a, b in true_pairs)
    queued_true = sum(canon[a] != canon[b] and frozenset((a, b)) in reviews for a, b in true_pairs)
    groups: dict[str, list[str]] = defaultdict(list)
    for m, c in canon.items():
        groups[c].append(m)
    merges = right = 0
    for root, members in groups.items():
        for m in members:
            if m != root:
                merges += 1
                right += int(person_of_id.get(m) == person_of_id.get(root))
    return {
        "true_pairs": len(true_pairs),
        "recall_merged_or_queued": round((merged_true + queued_true) / max(1, len(true_pairs)), 4),
        "recall_merged": round(merged_true / max(1, len(true_pairs)), 4),
        "merges": merges,
        "auto_merge_precision": round(right / merges, 4) if merges else None,
        "review_items": len(reviews),
    }


async def run(
    n: int,
    incremental: int,
    dup_share: float,
    seed: int,
    auto_merge: float,
    db_url: str,
    sweep_too: bool = True,
    candidate_limit: int = Settings().candidate_limit,
    sweep_max: int | None = None,
) -> dict[str, Any]:
    store = Store(PostgresDialect(db_url))
    await store.connect()
    await store.migrate()
    await store.initialise({"role": "hub", "node_id": "hub-bench", "node_number": "2047", "country": "SN", "region": "DKR"})
    await store.load_state()
    registry = registry_of(store, Settings(matcher="learned", candidate_limit=candidate_limit))
    loadavg_start = round(os.getloadavg()[0], 1)
    records = list(synth.generate(n + incremental, seed=seed, dup_rate=dup_share / (1 - dup_share), lookalike_rate=0.03))
    base, late = records[:n], records[n:]
    mpi_of: dict[str, str] = {}
    started = time.perf_counter()
    await _load(registry, base, mpi_of)
    load_s = time.perf_counter() - started
    async with store.writer.connect() as conn:
        await conn.execute(sa.text("ANALYZE"))
        await conn.commit()

    funnel = await _pair_funnel(registry, base, mpi_of)
    print(f"  true pairs (sample of {funnel['sample']:,}): {funnel['among_candidates']:.2%} among the candidates, "
          f"{funnel['scoring_probable']:.2%} score >= probable compared directly", file=sys.stderr)
    dedup = Dedup(registry, auto_merge=auto_merge)
    last = [time.perf_counter()]

    def progress(stats: Any, last_pk: int) -> None:
        if time.perf_counter() - last[0] > 30:
            last[0] = time.perf_counter()
            print(f"  sweep: {stats.checked:,} checked, {stats.merged:,} merged, {stats.queued:,} queued", file=sys.stderr)

    started = time.perf_counter()
    if sweep_too:
        sweep = await dedup.sweep(batch=1000, progress=progress, stop_after=sweep_max)
    else:
        sweep = DedupStats()
    sweep_s = time.perf_counter() - started
    sweep_peak = _peak_mb()
    loadavg_sweep = round(os.getloadavg()[0], 1)
    canon, reviews = await _outcome(store)
    sweep_quality = _score(base, mpi_of, canon, reviews)

    inc: dict[str, Any] = {}
    if late:
        await _load(registry, late, mpi_of)
        async with store.read() as conn:
            pks = list((await conn.execute(sa.select(t.identity.c.pk).where(t.identity.c.mpi_id.in_([mpi_of[r["record_id"]] for r in late])))).scalars())
        async with store.write("bench") as tx:
            await enqueue(tx, pks)
        started = time.perf_counter()
        drained = await dedup.drain()
        inc = {"n": len(late), "seconds": round(time.perf_counter() - started, 1), "scored": drained.scored, "merged": drained.merged, "queued": drained.queued}
    await store.close()
    return {
        "n": n,
        "loadavg_start": loadavg_start,
        "loadavg_sweep": loadavg_sweep,
        "load_s": round(load_s, 1),
        "true_pair_funnel": funnel,
        "sweep_s": round(sweep_s, 1),
        "sweep_identities_per_s": round(sweep.checked / sweep_s, 1) if sweep_s else None,
        "sweep_peak_rss_mb": round(sweep_peak, 1),
        "sweep": {"checked": sweep.checked, "scored": sweep.scored, "merged": sweep.merged, "queued": sweep.queued},
        "quality": sweep_quality,
        "incremental": inc,
        "records": base,
        "mpi_of": mpi_of,
    }


SPLINK = r'''
import json, sys, time, resource, unicodedata, re
import pandas as pd
import splink.comparison_library as cl
from splink import Linker, SettingsCreator, block_on
from splink.backends.duckdb import DuckDBAPI
path, threshold = sys.argv[1], float(sys.argv[2])
df = pd.read_csv(path, dtype=str, keep_default_na=False).replace("", None)
started = time.perf_counter()


def fold(v):
    # What a fair Splink user does first: case, accents, spaces and apostrophes folded.
    if v is None:
        return None
    v = unicodedata.normalize("NFKD", v).encode("ascii", "ignore").decode().lower()
    return re.sub(r"[^a-z]", "", v) or None


for c in ("first_name", "last_name"):
    df[c] = df[c].map(fold)
df["birth_year"] = df["date_of_birth"].str[:4]
settings = SettingsCreator(
    link_type="dedupe_only",
    comparisons=[
        cl.JaroWinklerAtThresholds("first_name", [0.92, 0.8]),
        cl.JaroWinklerAtThresholds("last_name", [0.92, 0.8]),
        cl.DateOfBirthComparison("date_of_birth", input_is_string=True),
        cl.ExactMatch("gender"),
        cl.ExactMatch("region_code"),
        cl.ExactMatch("phone_number"),
    ],
    # Tuned to keep >= 95% of the true pairs on these data: names, each name with the date
    # or with year and region, the date with region or sex, the phone, and names crossed.
    blocking_rules_to_generate_predictions=[
        block_on("first_name", "last_name"),
        block_on("last_name", "date_of_birth"),
        block_on("first_name", "date_of_birth"),
        block_on("phone_number"),
        block_on("last_name", "birth_year", "region_code"),
        block_on("first_name", "birth_year", "region_code"),
        block_on("date_of_birth", "region_code"),
        block_on("date_of_birth", "gender"),
        "l.first_name = r.last_name and l.last_name = r.first_name",
    ],
)
db_api = DuckDBAPI()
linker = Linker(db_api.register(df), settings, log_level=40)
linker.training.estimate_u_using_random_sampling(max_pairs=1e6, seed=1)
linker.training.estimate_parameters_using_expectation_maximisation(block_on("last_name", "date_of_birth"))
linker.training.estimate_parameters_using_expectation_maximisation(block_on("first_name", "last_name"))
pred = linker.inference.predict(threshold_match_probability=0.0).as_pandas_dataframe()
seconds = time.perf_counter() - started
# Blocking recall: the true pairs (either order) among every pair the rules generated.
true = pd.read_csv(sys.argv[3], dtype=str)
both = pd.concat([true, true.rename(columns={"a": "b", "b": "a"})])
blocked = pred[["unique_id_l", "unique_id_r"]].rename(columns={"unique_id_l": "a", "unique_id_r": "b"})
found = len(blocked.merge(both, on=["a", "b"]))
kept = pred[pred["match_probability"] >= 0.5]
pairs = [[a, b, p] for a, b, p in zip(kept["unique_id_l"], kept["unique_id_r"], kept["match_probability"])]
print(json.dumps({"seconds": seconds, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "blocked": len(pred), "blocked_true": found, "pairs": pairs}))
'''


def run_splink(records: list[dict[str, Any]], threshold: float) -> dict[str, Any]:
    py = ROOT / ".bench-venv" / "bin" / "python"
    if not py.exists():
        return {"error": "no .bench-venv: run scripts/bench_matcher_core.py once to create it"}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "people.csv"
        with path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["unique_id", "first_name", "last_name", "date_of_birth", "gender", "region_code", "phone_number"])
            w.writeheader()
            for r in records:
                w.writerow({"unique_id": r["record_id"], **{k: r.get(k) or "" for k in w.fieldnames if k != "unique_id"}})
        truth = Path(tmp) / "true_pairs.csv"
        with truth.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["a", "b"])
            w.writerows([r["related_record_id"], r["record_id"]] for r in records if r["kind"] == "duplicate")
        script = Path(tmp) / "splink_dedupe.py"
        script.write_text(SPLINK)
        out = subprocess.run([str(py), str(script), str(path), str(threshold), str(truth)], capture_output=True, text=True)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr else "failed"}
    result = json.loads(out.stdout.strip().splitlines()[-1])
    person = {r["record_id"]: r["person_id"] for r in records}
    true = {frozenset((r["related_record_id"], r["record_id"])) for r in records if r["kind"] == "duplicate" and r["related_record_id"] in person}
    out: dict[str, Any] = {"seconds": round(result["seconds"], 1), "peak_rss_mb": round(result["peak_mb"], 1)}
    out["blocked_pairs"] = result["blocked"]
    out["blocking_recall"] = round(result["blocked_true"] / max(1, len(true)), 4)
    for label, floor in (("", threshold), ("_at_0.85", 0.85), ("_at_0.5", 0.5)):
        predicted = {frozenset((a, b)) for a, b, p in result["pairs"] if p >= floor}
        right = sum(person[a] == person[b] for a, b in (tuple(p) for p in predicted))
        out[f"pairs{label}"] = len(predicted)
        out[f"precision{label}"] = round(right / len(predicted), 4) if predicted else None
        out[f"recall{label}"] = round(len(true & predicted) / max(1, len(true)), 4)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--incremental", type=int, default=10_000)
    parser.add_argument("--dup-share", type=float, default=0.05)
    parser.add_argument("--auto-merge", type=float, default=0.99)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument(
        "--sweep-max", type=int, default=None,
        help="stop the sweep after this many identities (its rate is reported; recall then covers a part only)",
    )
    parser.add_argument(
        "--candidate-limit", type=int, default=Settings().candidate_limit, help="best partners kept per identity (MPI_CANDIDATE_LIMIT)"
    )
    parser.add_argument("--no-splink", action="store_true")
    parser.add_argument("--no-sweep", action="store_true", help="only the incremental check (after loading)")
    parser.add_argument("--splink-only", action="store_true", help="only Splink, on the population of --n and --seed")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-out" / "dedup.json")
    args = parser.parse_args()
    if args.splink_only:
        population = list(synth.generate(args.n, seed=args.seed, dup_rate=args.dup_share / (1 - args.dup_share), lookalike_rate=0.03))
        print(json.dumps(run_splink(population, args.auto_merge)))
        return 0
    name = f"mpi_bench_dedup_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        url = PG.rsplit("/", 1)[0] + "/" + name
        result = asyncio.run(
            run(
                args.n, args.incremental, args.dup_share, args.seed, args.auto_merge, url,
                sweep_too=not args.no_sweep, candidate_limit=args.candidate_limit, sweep_max=args.sweep_max,
            )
        )
    finally:
        with psycopg.connect(PG, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    records = result.pop("records")
    result.pop("mpi_of")
    if not args.no_splink:
        result["splink"] = run_splink(records, args.auto_merge)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    q, s = result["quality"], result.get("splink", {})
    print(f"Dedup benchmark, {dt.date.today()}, {os.cpu_count()} cores, PostgreSQL, {args.n:,} identities, {args.dup_share:.0%} duplicates")
    print()
    print("| figure | target | ours | Splink (same data, p >= auto-merge) |")
    print("|---|---|---|---|")
    if args.no_sweep:
        print("| full sweep | - | not run (--no-sweep) | - |")
    else:
        _sweep_rows(result, q, s)
    if result["incremental"]:
        inc = result["incremental"]
        print(f"| incremental: {inc['n']:,} new against {args.n:,} | <= 15 s for 10k against 1M | {inc['seconds']} s | - |")
    print(f"\nload (synced registrations, no matching): {result['load_s']} s; load average at the start "
          f"{result['loadavg_start']}, after the sweep {result['loadavg_sweep']}, at the end {os.getloadavg()[0]:.1f}")
    return 0


def _sweep_rows(result: dict[str, Any], q: dict[str, Any], s: dict[str, Any]) -> None:
    ratio = f" ({result['sweep_s'] / s['seconds']:.2f}x Splink's)" if s.get("seconds") else ""
    print(f"| full sweep time | <= 2x Splink's | {result['sweep_s']} s{ratio} | {s.get('seconds')} s |")
    print(f"| peak memory | <= 2 GiB | {result['sweep_peak_rss_mb']} MB | {s.get('peak_rss_mb')} MB |")
    print(f"| recall (merged or queued) | >= 95% | {q['recall_merged_or_queued']:.2%} | {s.get('recall')} |")
    print(f"| recall (merged alone) | - | {q['recall_merged']:.2%} | - |")
    print(f"| auto-merge precision | >= 99.5% | {q['auto_merge_precision']} ({q['merges']} merges) | {s.get('precision')} ({s.get('pairs')} pairs) |")
    print(f"| review items | - | {q['review_items']} | - |")


if __name__ == "__main__":
    raise SystemExit(main())
