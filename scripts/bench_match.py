#!/usr/bin/env python3
"""Matching accuracy and speed on a real node store, and bulk import speed.

For each size: a synthetic population (scripts/synth.py) with known truth is made; its
originals are loaded into a fresh node (SQLite file); then every duplicate and look-alike
(up to --queries of each) is put to the registry exactly as register and /mpi/match put
it (blocking index -> candidates -> matcher), and we count:

- duplicates caught: the 409 register would answer names the true original;
- 409 precision: share of 409s that name the true original;
- look-alikes wrongly blocked: twins, namesakes, parent/child answered 409;
- duplicates whose original is anywhere in the /mpi/match answer;
- the calibration table: score bucket -> observed share of true matches;
- p50/p95 of one query (candidates + scoring), and bulk import speed (mpi-node import's
  code path) of --import-rows new people into the loaded node.

FEBRL and Splink: ``--febrl`` also runs scripts/bench_matcher_core.py (pure matcher on
synthetic data, FEBRL 3 and 4 beside Splink, in its own .bench-venv) and appends its report.

    .venv/bin/python scripts/bench_match.py --sizes 10000,100000
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

import synth  # noqa: E402
from bench_api import _body, _pct  # noqa: E402

from node.cli import main as node_cli  # noqa: E402
from node.storage import node_store  # noqa: E402
from shared.bulk import import_rows  # noqa: E402
from shared.compose import matcher_for, registry_of  # noqa: E402
from shared.matching import LearnedMatcher, LearnedModel, Matcher  # noqa: E402
from shared.registry import Registry  # noqa: E402
from shared.schemas import MatchIn, RegisterIn  # noqa: E402
from shared.settings import Settings  # noqa: E402

LOOKALIKES = ("twin", "namesake", "parent_child")
FLOORS = (0.0, 0.001, 0.01, 0.05)
MATCH_FLOOR = float(MatchIn.model_fields["min_score"].default)  # /mpi/match min_score values to report recall at


SCORERS = {"learned": "learned", "fs": "fellegi_sunter"}  # --scorers name -> MPI_MATCHER
_CANDIDATE_MODEL: list[LearnedModel] = []  # --model FILE: scores "learned" instead of the shipped model


def use_model(path: Path) -> None:
    """Score "learned" with the model file at ``path`` (a candidate model) instead of the shipped one."""
    _CANDIDATE_MODEL[:] = [LearnedModel.load(path)]


def _scorer(name: str, frequencies: Any) -> Matcher:
    matcher = matcher_for(Settings(matcher=SCORERS[name]), frequencies)
    if isinstance(matcher, LearnedMatcher) and _CANDIDATE_MODEL:
        matcher.model = _CANDIDATE_MODEL[0]
    return matcher


async def run(
    size: int, queries: int, import_rows_n: int, seed: int, data: Path, scorers: list[str], errors: str = "widened"
) -> list[dict[str, Any]]:
    store = node_store(Settings(data_dir=str(data), sqlite_synchronous="NORMAL"))
    await store.open()
    registry = registry_of(store, Settings(matcher=SCORERS[scorers[0]]))
    registry.matcher = _scorer(scorers[0], registry.frequencies)
    matcher = registry.matcher
    originals: list[dict[str, Any]] = []
    probes: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for rec in synth.generate(size, seed=seed, errors=errors):
        if rec["kind"] == "original":
            originals.append(rec)
        elif len(probes[rec["kind"]]) < queries:
            probes[rec["kind"]].append(rec)
    # Load the originals (all distinct people) in batches, unless a kept folder holds them.
    truth_file = data / "truth.json"
    started = time.perf_counter()
    mpi_of: dict[str, str] = {}
    if truth_file.exists():
        mpi_of = json.loads(truth_file.read_text())
        await registry.load_frequencies()
    else:
        seen_uids: set[str] = set()
        for i in range(0, len(originals), 2000):
            chunk = originals[i : i + 2000]
            items = []
            for rec in chunk:
                if rec.get("dhis2_uid") in seen_uids:
                    rec["dhis2_uid"] = None
                seen_uids.add(rec.get("dhis2_uid") or "")
                items.append((RegisterIn.model_validate(_body(rec)), synth.to_person(rec)))
            async with store.write("bench") as tx:
                ids = await registry.insert_new(tx, items)
            mpi_of.update({rec["record_id"]: mpi_id for rec, mpi_id in zip(chunk, ids, strict=True)})
            if i % 100_000 == 0 and i:
                print(f"  loaded {i:,}", file=sys.stderr, flush=True)
        async with store.writer.begin() as conn:
            await conn.exec_driver_sql("ANALYZE")
        truth_file.write_text(json.dumps(mpi_of))
    load_s = time.perf_counter() - started
    out = []
    for name in scorers:
        registry.matcher = _scorer(name, registry.frequencies)
        out.append({"scorer": name, "size": size, "errors": errors, "load_s": round(load_s, 1)}
                   | await _probe(registry, probes, mpi_of))
    if not import_rows_n:
        await store.close()
        return out
    # Bulk import of new people into the loaded node, through the mpi-node import code path.
    registry.matcher = matcher
    csv_path = data / "import.csv"
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(
            f, fieldnames=["first_name", "last_name", "date_of_birth", "gender", "region_code", "country_code", "phone_number"]
        )
        writer.writeheader()
        for rec in synth.generate(import_rows_n, seed=seed + 99, dup_rate=0.0, lookalike_rate=0.0):
            body = _body(rec)
            body.pop("external_ids", None)
            writer.writerow(body)
    stats = await import_rows(registry, csv_path, progress=False)
    await store.close()
    for r in out:
        r["import_per_s"] = round(stats.rows / stats.seconds, 1) if stats.seconds and r["scorer"] == scorers[0] else None
        r["import"] = {"created": stats.created, "queued": stats.queued, "blocked": stats.blocked, "errors": stats.errors}
    return out


async def _probe(registry: Registry, probes: dict[str, list[dict[str, Any]]], mpi_of: dict[str, str]) -> dict[str, Any]:
    """Every probe through candidates and ``registry.matcher``: the figures of one scorer."""
    matcher = registry.matcher
    store = registry.store
    certain = matcher.thresholds.certain
    counts: dict[str, int] = defaultdict(int)
    calibration: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    latencies: list[float] = []
    candidates_read: list[int] = []
    by_error: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    trace: list[dict[str, Any]] = []
    async with store.read() as conn:
        for kind, recs in probes.items():
            for rec in recs:
                person = synth.to_person(rec)
                t0 = time.perf_counter()
                cands = await registry.candidates(conn, person)
                ranked = matcher.rank(person, cands, limit=10, min_score=0.0)
                latencies.append((time.perf_counter() - t0) * 1000)
                candidates_read.append(len(cands))
                truth = mpi_of.get(rec["related_record_id"]) if kind == "duplicate" else None
                for row, result in ranked:
                    bucket = min(int(result.score * 20), 19)
                    calibration[bucket][0] += 1
                    calibration[bucket][1] += int(row.mpi_id == truth)
                top = ranked[0] if ranked else None
                blocked = top is not None and top[1].score >= certain and top[1].hard_conflict is None
                counts[f"{kind}_n"] += 1
                if blocked:
                    counts[f"{kind}_blocked"] += 1
                    counts["blocks"] += 1
                    counts["blocks_right"] += int(top is not None and top[0].mpi_id == truth)
                if kind == "duplicate":
                    in_cands = any(r.mpi_id == truth for r, _ in cands)
                    truth_score = next((res.score for r, res in ranked if r.mpi_id == truth and res.score >= MATCH_FLOOR), None)
                    stage = (
                        "caught" if blocked and top is not None and top[0].mpi_id == truth
                        else "not_candidate" if not in_cands
                        else "below_results" if truth_score is None
                        else "not_first" if top is not None and top[0].mpi_id != truth
                        else "below_certain" if top is not None and top[1].hard_conflict is None
                        else "conflict"
                    )
                    for err in rec.get("errors", []) or ["none"]:
                        by_error[err]["n"] += 1
                        by_error[err][stage] += 1
                    trace.append({"errors": rec.get("errors", []), "stage": stage, "truth_score": truth_score,
                                  "top_score": top[1].score if top else None, "candidates": len(cands)})
                    counts["dup_caught"] += int(blocked and top is not None and top[0].mpi_id == truth)
                    counts["dup_top1"] += int(top is not None and top[0].mpi_id == truth)
                    listed = [r.mpi_id for r, res in ranked if res.score >= matcher.thresholds.possible]
                    counts["dup_listed"] += int(truth in listed)
                    # /mpi/match with its defaults: top 10 at score >= min_score's default
                    counts["dup_in_match"] += int(any(r.mpi_id == truth and res.score >= MATCH_FLOOR for r, res in ranked))
                    for floor in FLOORS:
                        counts[f"dup_in_top10_{floor}"] += int(any(r.mpi_id == truth and res.score >= floor for r, res in ranked))
                    counts["dup_in_candidates"] += int(any(r.mpi_id == truth for r, _ in cands))

    dups = counts["duplicate_n"] or 1
    looks = sum(counts[f"{k}_n"] for k in LOOKALIKES) or 1
    return {
        "top1": round(counts["dup_top1"] / dups, 4),
        "duplicates": counts["duplicate_n"],
        "lookalikes": {k: counts[f"{k}_n"] for k in LOOKALIKES},
        "caught_409": round(counts["dup_caught"] / dups, 4),
        "precision_409": round(counts["blocks_right"] / counts["blocks"], 4) if counts["blocks"] else None,
        "lookalikes_blocked": round(sum(counts[f"{k}_blocked"] for k in LOOKALIKES) / looks, 4),
        "lookalikes_blocked_by_kind": {k: counts[f"{k}_blocked"] for k in LOOKALIKES},
        "in_match_results": round(counts["dup_in_match"] / dups, 4),
        "in_match_by_min_score": {str(f): round(counts[f"dup_in_top10_{f}"] / dups, 4) for f in FLOORS},
        "listed_possible": round(counts["dup_listed"] / dups, 4),
        "blocking_recall": round(counts["dup_in_candidates"] / dups, 4),
        "query_ms": {"p50": round(_pct(latencies, 0.5), 2), "p95": round(_pct(latencies, 0.95), 2)},
        "candidates_mean": round(sum(candidates_read) / len(candidates_read), 1),
        "candidates_max": max(candidates_read),
        "candidates_p95": _pct([float(c) for c in candidates_read], 0.95),
        "misses_by_error": {e: dict(v) for e, v in sorted(by_error.items())},
        "trace": trace,
        "calibration": {
            f"{b / 20:.2f}-{(b + 1) / 20:.2f}": {"pairs": n, "true_share": round(k / n, 3)}
            for b, (n, k) in sorted(calibration.items())
            if n
        },
    }


CHILD_PROBES = ("duplicate", "twin", "namesake")


def _child_body(rec: dict[str, Any], mother: str | None) -> dict[str, Any]:
    body = _body(rec)
    if not rec["first_name"]:
        body.pop("first_name", None)
    body["date_of_birth_estimated"] = bool(rec.get("date_of_birth_estimated"))
    if mother:
        body["related_persons"] = [{"mpi_id": mother, "relationship": "mother"}]
    return body


async def load_children(registry: Registry, records: list[dict[str, Any]], actor: str) -> dict[str, str]:
    """Register a campaign population's mothers, then its children linked to them; record id -> MPI ID."""
    mpi_of: dict[str, str] = {}
    for kind in ("mother", "original"):
        chosen = [r for r in records if r["kind"] == kind]
        for i in range(0, len(chosen), 2000):
            chunk = chosen[i : i + 2000]
            items = []
            for rec in chunk:
                body = RegisterIn.model_validate(_child_body(rec, mpi_of.get(rec.get("mother_record_id") or "")))
                items.append((body, registry.person(body)))
            async with registry.store.write(actor) as tx:
                ids = await registry.insert_new(tx, items)
            mpi_of.update({rec["record_id"]: mpi_id for rec, mpi_id in zip(chunk, ids, strict=True)})
    return mpi_of


async def run_children(size: int, queries: int, seed: int, data: Path, scorer: str = "learned") -> dict[str, Any]:
    """Campaign children (``synth.generate_children``): caught and look-alikes blocked, with and without the mothers.

    Mothers and the children's first registrations are loaded (each child linked to its
    mother); every later registration of a child, twin and namesake of another mother is
    then scored as register scores it: once with the mothers linked on both sides, once
    with no link anywhere (what the registry did before issue 22). ``scorer``: as --scorers.
    """
    store = node_store(Settings(data_dir=str(data), sqlite_synchronous="NORMAL"))
    await store.open()
    registry = registry_of(store, Settings(matcher=SCORERS[scorer]))
    registry.matcher = _scorer(scorer, registry.frequencies)
    matcher = registry.matcher
    records = list(synth.generate_children(size, seed=seed))
    started = time.perf_counter()
    mpi_of = await load_children(registry, records, "bench")
    async with store.writer.begin() as conn:
        await conn.exec_driver_sql("ANALYZE")
    load_s = time.perf_counter() - started
    certain = matcher.thresholds.certain
    counts: dict[str, int] = defaultdict(int)
    probes = defaultdict(list)
    for rec in records:
        if rec["kind"] in CHILD_PROBES and len(probes[rec["kind"]]) < queries:
            probes[rec["kind"]].append(rec)
    async with store.read() as conn:
        for kind, recs in probes.items():
            for rec in recs:
                linked = replace(synth.to_person(rec), mother_mpi_id=mpi_of.get(rec.get("mother_record_id") or ""))
                cands = await registry.candidates(conn, linked)
                truth = mpi_of.get(rec["related_record_id"]) if kind == "duplicate" else None
                for mode, query, people in (
                    ("links", linked, cands),
                    ("no_links", replace(linked, mother_mpi_id=None),
                     [(row, replace(p, mother_mpi_id=None)) for row, p in cands]),
                ):
                    ranked = matcher.rank(query, people, limit=1, min_score=0.0)
                    top = ranked[0] if ranked else None
                    blocked = top is not None and top[1].score >= certain and top[1].hard_conflict is None
                    counts[f"{mode}_{kind}_n"] += 1
                    counts[f"{mode}_{kind}_blocked"] += int(blocked)
                    if kind == "duplicate":
                        counts[f"{mode}_caught"] += int(blocked and top is not None and top[0].mpi_id == truth)
                        counts[f"{mode}_wrong"] += int(blocked and top is not None and top[0].mpi_id != truth)
    await store.close()
    out: dict[str, Any] = {
        "size": size, "scorer": scorer, "load_s": round(load_s, 1),
        "records": {k: sum(1 for r in records if r["kind"] == k) for k in ("mother", "original", *CHILD_PROBES)},
        "queried": {k: len(v) for k, v in probes.items()},
    }
    for mode in ("links", "no_links"):
        dups = counts[f"{mode}_duplicate_n"] or 1
        out[mode] = {
            "caught_409": round(counts[f"{mode}_caught"] / dups, 4),
            "blocked_on_another_child": counts[f"{mode}_wrong"],
            "twins_blocked": round(counts[f"{mode}_twin_blocked"] / (counts[f"{mode}_twin_n"] or 1), 4),
            "namesakes_blocked": round(counts[f"{mode}_namesake_blocked"] / (counts[f"{mode}_namesake_n"] or 1), 4),
        }
    return out


def report_children(results: list[dict[str, Any]]) -> str:
    lines = [
        f"Campaign children benchmark, {dt.date.today()}, real node store (SQLite): synth.generate_children",
        "",
        "| records | scorer | mode | caught 409 | blocked on another child | twins blocked | namesakes (another mother) blocked |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for mode in ("links", "no_links"):
            m = r[mode]
            lines.append(
                f"| {r['size']:,} | {r['scorer']} | {mode.replace('_', ' ')} | {m['caught_409']} | {m['blocked_on_another_child']} "
                f"| {m['twins_blocked']} | {m['namesakes_blocked']} |"
            )
    for r in results:
        lines.append(f"\nAt {r['size']:,} ({r['scorer']}): records {r['records']}, queried {r['queried']}")
    return "\n".join(lines)


def report(results: list[dict[str, Any]]) -> str:
    lines = [
        f"Matching benchmark, {dt.date.today()}, {os.cpu_count()} cores, real node store (SQLite)",
        "",
        "| scorer | identities | errors | caught 409 (>= 0.95) | top-1 | 409 precision (>= 0.995) | look-alikes blocked (<= 0.005) "
        "| in /mpi/match (>= 0.99) | of which >= 0.70 | blocking recall | query p50/p95 ms | candidates mean/max | import/s (>= 1000) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['scorer']} | {r['size']:,} | {r.get('errors', 'widened')} | {r['caught_409']} | {r['top1']} | {r['precision_409']} | {r['lookalikes_blocked']} "
            f"| {r['in_match_results']} | {r['listed_possible']} | {r['blocking_recall']} | {r['query_ms']['p50']}/{r['query_ms']['p95']} "
            f"| {r['candidates_mean']}/{r['candidates_max']} | {r.get('import_per_s')} |"
        )
    for r in results:
        lines += ["", f"Calibration of {r['scorer']} at {r['size']:,} (score bucket: pairs, observed share of true matches)", ""]
        lines += [f"- {bucket}: {v['pairs']} pairs, {v['true_share']}" for bucket, v in r["calibration"].items()]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--queries", type=int, default=3000, help="duplicates and look-alikes of each kind to query")
    parser.add_argument("--import-rows", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--children", action="store_true",
                        help="campaign children (estimated dates, mothers linked): with and without the links")
    parser.add_argument("--scorers", default="learned,fs", help="scorers to measure on the same store and probes: learned, fs")
    parser.add_argument("--errors", choices=synth.ERROR_MIXES, default="widened",
                        help="the duplicates' error mix: widened (default) or classic (the generator before issue 20)")
    parser.add_argument("--model", type=Path, default=None, help="score 'learned' with this model file (default: the shipped one)")
    parser.add_argument("--febrl", action="store_true", help="also run bench_matcher_core.py: FEBRL 3/4 against Splink")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-out" / "match.json")
    parser.add_argument(
        "--keep", type=Path, default=None,
        help="load into this (new) node folder and keep it, e.g. for bench_api.py --keep (one size only)",
    )
    args = parser.parse_args()
    if args.model:
        use_model(args.model)
    results = []
    for size in (int(s) for s in args.sizes.split(",")):
        data = args.keep or Path(tempfile.mkdtemp(prefix=f"mpi-match-{size}-"))
        try:
            data.mkdir(parents=True, exist_ok=True)
            if not (data / "mpi.sqlite3").exists() and node_cli(
                ["init", "--data-dir", str(data), "--country", "SN", "--region", "DKR"]
            ) != 0:
                raise SystemExit("init failed")
            print(f"size {size:,}", file=sys.stderr, flush=True)
            if args.children:
                for scorer in args.scorers.split(","):
                    fresh = data / f"children-{scorer}"  # one fresh node each: the load is part of the run
                    if node_cli(["init", "--data-dir", str(fresh), "--country", "SN", "--region", "DKR"]) != 0:
                        raise SystemExit("init failed")
                    results.append(asyncio.run(run_children(size, args.queries, args.seed, fresh, scorer)))
            else:
                results += asyncio.run(
                    run(size, args.queries, args.import_rows, args.seed, data, args.scorers.split(","), args.errors)
                )
        finally:
            if not args.keep:
                shutil.rmtree(data, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(report_children(results) if args.children else report(results))
    if args.febrl:
        print()
        sys.stdout.flush()
        subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_matcher_core.py")], check=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
