"""Accuracy and speed of the pure matcher (no database), on synthetic West African data and FEBRL.

Owns: the benchmark protocol.  (a) Synthetic: every generated non-duplicate record is
registered in an in-memory blocking index; every record is then queried as a new
registration (duplicates should hit their original with score >= 0.95, look-alikes and
originals should hit nothing that high).  (b) FEBRL 3 and 4 from ``recordlinkage``, fields
given name, surname, date of birth and state only: parameters fitted by our EM without
labels, against Splink (DuckDB, unsupervised) in the same run.

    python scripts/bench_matcher_core.py --n 20000            # synthetic + FEBRL + Splink
    python scripts/bench_matcher_core.py --skip-febrl          # synthetic only, no extra deps
    python scripts/bench_matcher_core.py --fit                 # refit shipped params.json

FEBRL and Splink need recordlinkage, splink and duckdb: they live in their own venv at
``.bench-venv/`` (never in the project's dependencies).  When they are missing the script
creates that venv and re-executes itself there.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from synth import generate, to_person  # noqa: E402

from shared.identities.candidates import weight  # noqa: E402
from shared.matching.blocking import BUCKET_CAP, index_keys, query_keys  # noqa: E402
from shared.matching.em import calibrate, estimate, estimate_u, fit_supervised, regularise  # noqa: E402
from shared.matching.model import COMPARISONS, FALLBACK, MatchParams, Person, default_params  # noqa: E402
from shared.matching.phonetic import phonetic_key  # noqa: E402
from shared.matching.score import Matcher, NameFrequencies, comparison_vector  # noqa: E402
from shared.settings import Settings  # noqa: E402

BENCH_VENV = ROOT / ".bench-venv"
CANDIDATE_CAP = Settings().candidate_limit  # what registration scores at most
CERTAIN = 0.95


# ---------------------------------------------------------------------------------------
# (a) synthetic population
# ---------------------------------------------------------------------------------------
class Index:
    """In-memory stand-in for the storage layer's blocking-key table."""

    def __init__(self) -> None:
        self.buckets: defaultdict[int, list[int]] = defaultdict(list)

    def add(self, i: int, p: Person) -> None:
        for k in index_keys(p):
            self.buckets[k].append(i)

    def candidates(self, p: Person, exclude: int | None = None) -> tuple[list[int], int]:
        """Candidates as the store gives them (buckets over the cap skipped, pre-scored, cut),
        and how many shared a key at all."""
        keys = query_keys(p)
        score: defaultdict[int, float] = defaultdict(float)
        for k in set(keys):
            bucket = self.buckets.get(k)
            if bucket and len(bucket) <= BUCKET_CAP:
                for i in bucket:
                    score[i] += weight(len(bucket))
        score.pop(exclude, None)  # type: ignore[arg-type]
        ordered = sorted(score, key=lambda i: (-score[i], i))[:CANDIDATE_CAP]
        return ordered, len(score)


def _registry(records: list[dict[str, Any]]) -> tuple[list[int], dict[int, Person], Index]:
    people = {i: to_person(r) for i, r in enumerate(records)}
    registered = [i for i, r in enumerate(records) if r["kind"] != "duplicate"]
    index = Index()
    for i in registered:
        index.add(i, people[i])
    return registered, people, index


def fit_default(n: int, seed: int, calibration: str = "textbook") -> MatchParams:
    """Shipped parameters: m from true pairs, u from random pairs, then a logistic calibration.

    u comes from random pairs of the registry, not from blocked pairs: blocked non-matches
    agree on names by construction, and counting them would make every name agreement look
    worthless.  The calibration (prior and scale) is then fitted on the blocked candidate
    pairs, which is exactly the population ``rank`` scores.
    """
    records = list(generate(n, seed))
    registered, people, index = _registry(records)
    blocked: list[tuple[int, int, bool]] = []
    for qi, rec in enumerate(records):
        cands, _ = index.candidates(people[qi], exclude=qi)
        blocked.extend((qi, ci, records[ci]["person_id"] == rec["person_id"]) for ci in cands)
    m_fit = fit_supervised(
        ((comparison_vector(people[q], people[c]), True) for q, c, y in blocked if y),
        base=FALLBACK,
        allow_only_matches=True,
    )
    rng = random.Random(seed)
    u = estimate_u(
        comparison_vector(people[rng.choice(registered)], people[rng.choice(registered)])
        for _ in range(300_000)
    )
    m = dict(m_fit.m)
    # DHIS2 UIDs are too rare in a sample to count reliably; keep the hand-set, near-certain
    # weights for them.
    m["external_id"], u["external_id"] = FALLBACK.m["external_id"], FALLBACK.u["external_id"]
    raw = regularise(
        MatchParams(prior=0.5, m=m, u=u, swap_bits=FALLBACK.swap_bits, tf_cap_bits=FALLBACK.tf_cap_bits)
    )
    m, u = dict(raw.m), dict(raw.u)
    matcher = Matcher(raw, NameFrequencies.from_people(people[i] for i in registered))
    labels = [y for _, _, y in blocked]
    n_registry = len(registered)
    if calibration == "coefficients":
        rows = [matcher.evidence_parts(people[q], people[c]) for q, c, _ in blocked]
        coefs, intercept = calibrate(rows, labels)
        coefficients = {c: round(k, 4) for c, k in zip(COMPARISONS, coefs, strict=True)}
        # DHIS2 UIDs are too rare in the sample for a coefficient of their own.
        coefficients["external_id"] = 1.0
        share = 2.0**intercept * n_registry
    elif calibration == "intercept":
        rows = [[matcher.evidence_bits(people[q], people[c])] for q, c, _ in blocked]
        _, intercept = calibrate(rows, labels, intercept_only=True)
        coefficients = {}
        share = 2.0**intercept * n_registry
    else:  # textbook: the share of registrations that are duplicates, no fitting
        coefficients = {}
        share = sum(1 for r in records if r["kind"] == "duplicate") / len(records)
    print(f"fit: {len(blocked)} blocked pairs, duplicate share {share:.3g}, coefficients {coefficients}")
    return MatchParams(
        prior=share / n_registry,
        m=m,
        u=u,
        swap_bits=raw.swap_bits,
        tf_cap_bits=raw.tf_cap_bits,
        coefficients=coefficients,
        duplicate_share=share,
    )


def bench_synthetic(n: int, seed: int, params: MatchParams | None, verbose: bool) -> dict[str, Any]:
    records = list(generate(n, seed))
    t0 = time.perf_counter()
    registered, people, index = _registry(records)
    build_s = time.perf_counter() - t0
    freq = NameFrequencies.from_people(people[i] for i in registered)
    matcher = Matcher(params, freq)

    by_kind: Counter[str] = Counter()
    caught = top1 = among = top10 = blocked_recall = capped_recall = 0
    tops: list[tuple[str, float, bool]] = []  # best candidate of every query: kind, score, right?
    blocks = blocks_right = 0
    false_blocks: Counter[str] = Counter()
    n_cands: list[int] = []
    times: list[float] = []
    calib: defaultdict[int, list[int]] = defaultdict(lambda: [0, 0])
    missed_errors: Counter[str] = Counter()
    dup_errors: Counter[str] = Counter()
    misses: list[str] = []
    buckets = (0.0, 0.5, 0.7, 0.85, 0.95, 0.99, 0.999)

    for qi, rec in enumerate(records):
        kind = rec["kind"]
        by_kind[kind] += 1
        q = people[qi]
        t = time.perf_counter()
        cands, n_all = index.candidates(q, exclude=qi)
        ranked = matcher.rank(q, ((ci, people[ci]) for ci in cands), limit=len(cands) or 1, min_score=0.0)
        times.append(time.perf_counter() - t)
        n_cands.append(n_all)
        pid = rec["person_id"]
        for ci, res in ranked:
            b = max(i for i, lo in enumerate(buckets) if res.score >= lo)
            calib[b][0] += 1
            calib[b][1] += records[ci]["person_id"] == pid
        best = ranked[0] if ranked else None
        if best is not None and best[1].hard_conflict is None:
            tops.append((kind, best[1].score, records[best[0]]["person_id"] == pid))
        is_block = best is not None and best[1].score >= CERTAIN and best[1].hard_conflict is None
        if is_block:
            assert best is not None
            blocks += 1
            if records[best[0]]["person_id"] == pid:
                blocks_right += 1
            else:
                false_blocks[kind] += 1
        if kind == "duplicate":
            orig = int(rec["related_record_id"][1:]) - 1
            errs = rec.get("errors", [])
            dup_errors.update(set(errs))
            in_block = orig in cands
            blocked_recall += in_block or orig in _all_candidates(index, q, qi)
            capped_recall += in_block
            if best is not None and best[0] == orig:
                top1 += 1
                if is_block:
                    caught += 1
            if any(ci == orig and r.score >= matcher.thresholds.possible for ci, r in ranked):
                among += 1
            if any(ci == orig for ci, _ in ranked[:10]):
                top10 += 1
            if not (is_block and best is not None and best[0] == orig):
                missed_errors.update(set(errs))
                if verbose and len(misses) < 40:
                    o = records[orig]
                    sc = next((r for ci, r in ranked if ci == orig), None)
                    misses.append(
                        f"  {errs} {o['first_name']} {o['last_name']} {o['date_of_birth']} {o['region_code']} "
                        f"{o['phone_number']} | {rec['first_name']} {rec['last_name']} {rec['date_of_birth']} "
                        f"{rec['region_code']} {rec['phone_number']} -> "
                        f"{sc.score if sc else 'not blocked'} {sc.hard_conflict if sc else ''}"
                    )

    dups = by_kind["duplicate"]
    looks = by_kind["twin"] + by_kind["namesake"] + by_kind["parent_child"]
    times_ms = sorted(t * 1000 for t in times)
    result = {
        "records": len(records),
        "registered": len(registered),
        "duplicates": dups,
        "lookalikes": looks,
        "kinds": dict(by_kind),
        "caught_409": caught / dups,
        "top1": top1 / dups,
        "original_among_results": among / dups,
        "original_in_top10_any_score": top10 / dups,
        "blocking_recall": blocked_recall / dups,
        "blocking_recall_capped": capped_recall / dups,
        "precision_409": blocks_right / blocks if blocks else 1.0,
        "lookalikes_blocked": sum(false_blocks[k] for k in ("twin", "namesake", "parent_child"))
        / max(looks, 1),
        "false_blocks_by_kind": dict(false_blocks),
        "lookalikes_blocked_by_kind": {
            k: false_blocks[k] / by_kind[k] if by_kind[k] else 0.0
            for k in ("twin", "namesake", "parent_child")
        },
        "originals_blocked": false_blocks["original"] / by_kind["original"],
        "mean_candidates": statistics.fmean(n_cands),
        "p95_candidates": sorted(n_cands)[int(0.95 * len(n_cands))],
        "p50_ms": times_ms[len(times_ms) // 2],
        "p95_ms": times_ms[int(0.95 * len(times_ms))],
        "index_build_s": build_s,
        "calibration": [
            (buckets[b], calib[b][0], calib[b][1] / calib[b][0] if calib[b][0] else None)
            for b in sorted(calib)
        ],
        "threshold_curve": [
            (
                th,
                sum(1 for k, sc, ok in tops if k == "duplicate" and ok and sc >= th) / dups,
                sum(1 for _, sc, ok in tops if ok and sc >= th)
                / max(1, sum(1 for _, sc, _ in tops if sc >= th)),
            )
            for th in (0.5, 0.7, 0.85, 0.9, 0.95, 0.98)
        ],
        "miss_rate_by_error": {e: missed_errors[e] / dup_errors[e] for e in sorted(dup_errors)},
    }
    if verbose:
        print("\n".join(misses))
    return result


def _all_candidates(index: Index, q: Person, qi: int) -> set[int]:
    out: set[int] = set()
    for k in query_keys(q):
        out.update(index.buckets.get(k, ()))
    out.discard(qi)
    return out


def bench_compare_speed(params: MatchParams | None) -> float:
    records = list(generate(2000, 99))
    people = [to_person(r) for r in records]
    matcher = Matcher(params, NameFrequencies.from_people(people))
    pairs = [(people[i], people[(i * 7 + 3) % len(people)]) for i in range(len(people))]
    t = time.perf_counter()
    for _ in range(5):
        for a, b in pairs:
            matcher.compare(a, b)
    return (time.perf_counter() - t) / (5 * len(pairs)) * 1e6


SPELLING_PAIRS = [
    ("Diallo", "Jallow"),
    ("Diallo", "Dyallo"),
    ("Coulibaly", "Kulibali"),
    ("Ousmane", "Usman"),
    ("Ouattara", "Watara"),
    ("Keïta", "Keita"),
    ("Djibril", "Jibril"),
    ("Khady", "Kady"),
    ("Thierno", "Tierno"),
    ("Gnima", "Nyima"),
    ("Cheikh", "Sheikh"),
    ("Seydou", "Saidou"),
    ("Oumar", "Umar"),
    ("Moussa", "Musa"),
    ("Touré", "Touray"),
    ("Conté", "Conteh"),
    ("Cissé", "Sisse"),
    ("Hawa", "Awa"),
    ("Mame Diarra", "Mamediarra"),
    ("Diarra", "Jarra"),
    ("Dramé", "Drammeh"),
    ("Mbaye", "M'Baye"),
    ("Ndiaye", "N'Diaye"),
    ("Coumba", "Kumba"),
    ("Ousseynou", "Usseinu"),
    ("Souleymane", "Suleiman"),
    ("Boubacar", "Bubacarr"),
    ("Yacouba", "Yakuba"),
]


def bench_phonetic_vs_soundex(n: int, seed: int) -> dict[str, float]:
    """What the West African keys add over Soundex.

    Three views: known spelling pairs (French/English spellings, the variant table) that get
    one key; duplicate name pairs from the generator that keep their key; and random pairs of
    different last names that collide (the price of a coarser key).
    """
    from shared.matching.phonetic import VARIANT_GROUPS, skeleton

    def ours(s: str) -> str:
        return phonetic_key(s)

    def ours_blocking(s: str) -> str:
        return skeleton(phonetic_key(s))

    keys = {"phonetic_key": ours, "blocking_skeleton": ours_blocking, "soundex": soundex}
    pairs = list(SPELLING_PAIRS)
    table_pairs = [(g[0], v) for g in VARIANT_GROUPS for v in g[1:] if v != g[0]]
    out: dict[str, float] = {}
    for name, fn in keys.items():
        out[f"spelling_pairs_same_key_{name}"] = sum(fn(a) == fn(b) for a, b in pairs) / len(pairs)
        out[f"variant_table_same_key_{name}"] = sum(fn(a) == fn(b) for a, b in table_pairs) / len(table_pairs)
    records = list(generate(n, seed))
    by_id = {r["record_id"]: r for r in records}
    dup_pairs = []
    for r in records:
        if r["kind"] != "duplicate" or "swap_names" in r.get("errors", []):
            continue
        o = by_id[r["related_record_id"]]
        dup_pairs += [(r["first_name"], o["first_name"]), (r["last_name"], o["last_name"])]
    rng = random.Random(seed)
    last_names = sorted({r["last_name"] for r in records if r["kind"] == "original"})
    random_pairs = [tuple(rng.sample(last_names, 2)) for _ in range(20000)]
    for name, fn in keys.items():
        out[f"duplicate_names_same_key_{name}"] = sum(fn(a) == fn(b) for a, b in dup_pairs) / len(dup_pairs)
        out[f"distinct_last_names_collide_{name}"] = sum(fn(a) == fn(b) for a, b in random_pairs) / len(
            random_pairs
        )
    return out


def bench_blocking_keys(n: int, seed: int) -> dict[str, dict[str, float]]:
    """Blocking recall and candidates with our name keys against the same recipes on Soundex."""
    import shared.matching.blocking as blocking

    records = list(generate(n, seed))
    original = blocking._name_skeletons

    def soundex_keys(raw: str) -> list[str]:
        tokens = raw.split()
        keys = [soundex(raw)] if soundex(raw) else []
        return (
            keys + [soundex(t) for t in tokens[1:] if soundex(t) and soundex(t) not in keys] if keys else []
        )

    out: dict[str, dict[str, float]] = {}
    try:
        for label, fn in (("west_african_keys", original), ("soundex", soundex_keys)):
            blocking._name_skeletons = fn  # type: ignore[assignment]
            _, people, index = _registry(records)
            found = total = 0
            reads: list[int] = []
            for qi, rec in enumerate(records):
                cands = _all_candidates(index, people[qi], qi)
                reads.append(len(cands))
                if rec["kind"] == "duplicate":
                    total += 1
                    found += int(rec["related_record_id"][1:]) - 1 in cands
            out[label] = {"blocking_recall": found / total, "mean_candidates": statistics.fmean(reads)}
    finally:
        blocking._name_skeletons = original
    return out


def soundex(name: str) -> str:
    from shared.matching.normalize import compact

    s = compact(name)
    if not s:
        return ""
    codes = {
        **dict.fromkeys("BFPV", "1"),
        **dict.fromkeys("CGJKQSXZ", "2"),
        **dict.fromkeys("DT", "3"),
        "L": "4",
        **dict.fromkeys("MN", "5"),
        "R": "6",
    }
    out = s[0]
    last = codes.get(s[0], "")
    for ch in s[1:]:
        code = codes.get(ch, "")
        if code and code != last:
            out += code
        if ch not in "HW":
            last = code
    return (out + "000")[:4]


def bench_scale(n: int, seed: int) -> dict[str, Any]:
    """Bucket sizes and candidates read per query in a registry of ``n`` identities."""
    index = Index()
    t = time.perf_counter()
    queries: list[Person] = []
    for i, rec in enumerate(generate(n, seed, dup_rate=0.0, lookalike_rate=0.0)):
        p = to_person(rec)
        index.add(i, p)
        if i % max(1, n // 2000) == 0:
            queries.append(p)
    build = time.perf_counter() - t
    sizes = sorted(len(b) for b in index.buckets.values())
    reads = sorted(len(_all_candidates(index, q, -1)) for q in queries)
    import datetime

    md = Person("Mamadou", "Diallo", datetime.date(1990, 6, 15), "M", "DKR")
    md_nodob = Person("Mamadou", "Diallo", None, "M", "DKR")
    return {
        "registry": n,
        "build_s": build,
        "keys": len(index.buckets),
        "largest_bucket": sizes[-1],
        "p99_bucket": sizes[int(0.99 * len(sizes))],
        "candidates_per_query_mean": statistics.fmean(reads),
        "candidates_per_query_p95": reads[int(0.95 * len(reads))],
        "candidates_per_query_max": reads[-1],
        "mamadou_diallo_1990": len(_all_candidates(index, md, -1)),
        "mamadou_diallo_no_dob": len(_all_candidates(index, md_nodob, -1)),
    }


# ---------------------------------------------------------------------------------------
# (b) FEBRL, ours against Splink
# ---------------------------------------------------------------------------------------
def _ensure_bench_venv(argv: Sequence[str]) -> None:
    try:
        import duckdb  # noqa: F401
        import recordlinkage  # noqa: F401
        import splink  # noqa: F401
    except ImportError:
        pass
    else:
        return
    py = BENCH_VENV / "bin" / "python"
    # sys.prefix, not the interpreter path: a venv made from another venv's python
    # resolves to the same base interpreter.
    if Path(sys.prefix).resolve() == BENCH_VENV.resolve():
        raise SystemExit("bench venv exists but lacks recordlinkage/splink/duckdb")
    if not py.exists():
        print(f"creating {BENCH_VENV} for recordlinkage, splink, duckdb ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(BENCH_VENV)], check=True)
        (BENCH_VENV / ".gitignore").write_text("*\n")
    subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "recordlinkage", "splink", "duckdb", "rapidfuzz"], check=True
    )
    os.execv(str(py), [str(py), __file__, *argv])


def _febrl_person(row: Any) -> Person:
    import datetime

    import pandas as pd

    def s(v: Any) -> str:
        return "" if v is None or (isinstance(v, float) and pd.isna(v)) else str(v).strip()

    dob = None
    raw = s(row.date_of_birth)
    if len(raw) == 8 and raw.isdigit():
        try:
            dob = datetime.date(int(raw[:4]), int(raw[4:6]), int(raw[6:]))
        except ValueError:
            dob = None
    return Person(
        first_name=s(row.given_name),
        last_name=s(row.surname),
        date_of_birth=dob,
        region_code=s(row.state) or None,
    )


def _febrl_data(name: str) -> tuple[Any, set[tuple[str, str]], bool]:
    import recordlinkage.datasets as ds

    if name == "febrl3":
        df, links = ds.load_febrl3(return_links=True)
        true = {tuple(sorted(p)) for p in links.tolist()}
        return df, true, True  # type: ignore[return-value]
    a, b, links = ds.load_febrl4(return_links=True)
    a = a.copy()
    b = b.copy()
    import pandas as pd

    df = pd.concat([a, b])
    true = {(x, y) for x, y in links.tolist()}
    return (a, b), true, False  # type: ignore[return-value]


def _prf(pred: set[tuple[str, str]], true: set[tuple[str, str]]) -> tuple[float, float, float]:
    tp = len(pred & true)
    p = tp / len(pred) if pred else 1.0
    r = tp / len(true)
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def bench_febrl(name: str, threshold: float) -> dict[str, Any]:
    data, true, dedup = _febrl_data(name)
    if dedup:
        people = {rid: _febrl_person(row) for rid, row in zip(data.index, data.itertuples(), strict=True)}
        left = right = list(people)
    else:
        a, b = data
        people = {rid: _febrl_person(row) for rid, row in zip(a.index, a.itertuples(), strict=True)}
        people.update({rid: _febrl_person(row) for rid, row in zip(b.index, b.itertuples(), strict=True)})
        left, right = list(a.index), list(b.index)
    index: defaultdict[int, list[str]] = defaultdict(list)
    for rid in right:
        for k in index_keys(people[rid]):
            index[k].append(rid)
    pairs: set[tuple[str, str]] = set()
    for rid in left:
        for k in query_keys(people[rid]):
            for other in index.get(k, ()):
                if other == rid:
                    continue
                pairs.add(tuple(sorted((rid, other))) if dedup else (rid, other))  # type: ignore[arg-type]
    pair_list = sorted(pairs)
    blocking_recall = len(pairs & true) / len(true)
    vectors = [comparison_vector(people[x], people[y]) for x, y in pair_list]
    # u from random pairs (almost all non-matches), then EM for m and the prior: no labels.
    rng = random.Random(0)
    ids = list(people)
    random_vectors = [
        comparison_vector(people[rng.choice(ids)], people[rng.choice(ids)]) for _ in range(50_000)
    ]
    u = estimate_u(random_vectors)
    base = default_params()
    fitted = estimate(
        vectors,
        init=base,
        fixed_u={c: u[c] for c in ("first_name", "last_name", "date_of_birth", "region_code") if c in u},
    )
    # EM's mixture weight is the match rate among blocked pairs; scoring needs the prior of
    # any pair of records, so the expected number of matches is spread over all pairs.
    all_pairs = len(left) * (len(left) - 1) / 2 if dedup else len(left) * len(right)
    expected_matches = fitted.prior * len(vectors)
    fitted = MatchParams(
        prior=expected_matches / all_pairs,
        m=fitted.m,
        u=fitted.u,
        swap_bits=fitted.swap_bits,
        tf_cap_bits=fitted.tf_cap_bits,
    )
    freq = NameFrequencies.from_people(people.values())
    matcher = Matcher(fitted, freq)
    t = time.perf_counter()
    scores = [matcher.compare(people[x], people[y]).score for x, y in pair_list]
    per_pair_us = (time.perf_counter() - t) / max(1, len(pair_list)) * 1e6
    pred = {pr for pr, s in zip(pair_list, scores, strict=True) if s >= threshold}
    p, r, f1 = _prf(pred, true)
    best = max(
        (_prf({pr for pr, s in zip(pair_list, scores, strict=True) if s >= th}, true)[2], th)
        for th in (0.5, 0.7, 0.8, 0.85, 0.9, 0.95, 0.99)
    )
    # registration view: each record's best-scored partner is its true duplicate
    best_partner: dict[str, tuple[float, str]] = {}
    for (x, y), s in zip(pair_list, scores, strict=True):
        for q, c in ((x, y), (y, x)) if dedup else ((y, x),):
            if s > best_partner.get(q, (-1.0, ""))[0]:
                best_partner[q] = (s, c)
    with_dup = defaultdict(set)
    for x, y in true:
        with_dup[y].add(x)
        if dedup:
            with_dup[x].add(y)
    first_right = sum(1 for q, cs in with_dup.items() if best_partner.get(q, (0, ""))[1] in cs) / len(
        with_dup
    )
    return {
        "set": name,
        "pairs_scored": len(pair_list),
        "true_pairs": len(true),
        "blocking_recall": blocking_recall,
        "P": p,
        "R": r,
        "F1": f1,
        "best_F1": best[0],
        "best_threshold": best[1],
        "prior": fitted.prior,
        "right_first": first_right,
        "us_per_pair": per_pair_us,
    }


def bench_splink(name: str, threshold: float) -> dict[str, Any]:
    """Splink 5 (DuckDB), unsupervised: u by random sampling, then EM, on the same four fields."""
    import splink.comparison_library as cl
    from splink import Linker, SettingsCreator, block_on
    from splink.backends.duckdb import DuckDBAPI

    data, true, dedup = _febrl_data(name)
    cols = ["given_name", "surname", "date_of_birth", "state"]
    if dedup:
        frames = [data.reset_index()[["rec_id", *cols]].rename(columns={"rec_id": "unique_id"})]
        left_ids: set[str] = set()
    else:
        frames = [d.reset_index()[["rec_id", *cols]].rename(columns={"rec_id": "unique_id"}) for d in data]
        left_ids = set(data[0].index)
    settings = SettingsCreator(
        link_type="dedupe_only" if dedup else "link_only",
        comparisons=[
            cl.NameComparison("given_name"),
            cl.NameComparison("surname"),
            cl.DateOfBirthComparison("date_of_birth", input_is_string=True, datetime_format="%Y%m%d"),
            cl.ExactMatch("state"),
        ],
        blocking_rules_to_generate_predictions=[
            block_on("given_name"),
            block_on("surname"),
            block_on("date_of_birth"),
            block_on("substr(given_name, 1, 2)", "substr(surname, 1, 2)"),
        ],
    )
    t = time.perf_counter()
    db_api = DuckDBAPI()
    sdfs = [db_api.register(f) for f in frames]
    linker = Linker(sdfs if len(sdfs) > 1 else sdfs[0], settings, log_level=40)
    linker.training.estimate_u_using_random_sampling(max_pairs=1e6, seed=1)
    linker.training.estimate_parameters_using_expectation_maximisation(block_on("date_of_birth"))
    linker.training.estimate_parameters_using_expectation_maximisation(block_on("surname"))
    linker.training.estimate_parameters_using_expectation_maximisation(block_on("given_name"))
    preds = linker.inference.predict(threshold_match_probability=0.01).as_pandas_dataframe()
    elapsed = time.perf_counter() - t

    def pairs_at(th: float) -> set[tuple[str, str]]:
        sel = preds[preds.match_probability >= th]
        out: set[tuple[str, str]] = set()
        for x, y in zip(sel.unique_id_l, sel.unique_id_r, strict=True):
            if dedup:
                out.add((min(x, y), max(x, y)))
            else:
                out.add((x, y) if x in left_ids else (y, x))
        return out

    result: dict[str, Any] = {"set": name, "seconds": elapsed, "pairs_scored": len(preds)}
    for th in sorted({threshold, 0.95}):
        p, r, f1 = _prf(pairs_at(th), true)
        result[f"P@{th}"], result[f"R@{th}"], result[f"F1@{th}"] = p, r, f1
    result["best_F1"] = max(_prf(pairs_at(th), true)[2] for th in (0.5, 0.7, 0.8, 0.85, 0.9, 0.95, 0.99))
    return result


# ---------------------------------------------------------------------------------------
def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def _ok(met: bool) -> str:
    return "met" if met else "**not met**"


def _by_kind(syn: dict[str, Any]) -> str:
    fb, kinds = syn["false_blocks_by_kind"], syn["kinds"]
    return ", ".join(f"{k} {fb.get(k, 0)}/{kinds.get(k, 0)}" for k in ("twin", "namesake", "parent_child"))


def render_markdown(r: dict[str, Any], command: str) -> str:
    """The figures of one run, target beside measured."""
    syn = r["synthetic"]
    lines = [
        "# Matching engine: measured accuracy and speed",
        "",
        f"One run of `{command}` (2-core machine shared with other work, CPython 3.11).",
        "Synthetic population: `scripts/synth.py`, seed 2 for evaluation; the shipped `params.json`",
        "was fitted on a different population (seed 1). FEBRL: parameters fitted by our EM without labels.",
        "",
        "## (a) Synthetic West African population, registration view",
        "",
        f"{syn['records']:,} records: {syn['registered']:,} registered (originals and look-alikes), "
        f"{syn['duplicates']:,} duplicates, {syn['lookalikes']:,} look-alikes ({syn['kinds']}). Every record is "
        "queried as a new registration against all registered records but itself.",
        "",
        "| figure | target | measured | |",
        "|---|---|---|---|",
        f"| duplicates caught (true original ranked first with score >= 0.95, no hard conflict) | >= 92% | "
        f"{_pct(syn['caught_409'])} | {_ok(syn['caught_409'] >= 0.92)} |",
        f"| precision of >= 0.95 blocks (all queries) | >= 99.5% | {_pct(syn['precision_409'])} | "
        f"{_ok(syn['precision_409'] >= 0.995)} |",
        f"| look-alikes wrongly >= 0.95 | <= 0.5% | {_pct(syn['lookalikes_blocked'])} "
        f"(by kind {_by_kind(syn)}) | "
        f"{_ok(syn['lookalikes_blocked'] <= 0.005)} |",
        f"| original among ranked results (score >= possible 0.70) | >= 99% | {_pct(syn['original_among_results'])} | "
        f"{_ok(syn['original_among_results'] >= 0.99)} |",
        f"| original among the top 10 at any score | - | {_pct(syn['original_in_top10_any_score'])} | |",
        f"| original ranked first (any score) | - | {_pct(syn['top1'])} | |",
        f"| blocking recall (duplicate shares >= 1 key with its original) | >= 99% | {_pct(syn['blocking_recall'])} | "
        f"{_ok(syn['blocking_recall'] >= 0.99)} |",
        f"| blocking recall within the 300 candidates sharing most keys | - | {_pct(syn['blocking_recall_capped'])} | |",
        f"| originals (no duplicate registered) wrongly >= 0.95 | - | {_pct(syn['originals_blocked'])} | |",
        f"| mean / p95 candidates per query ({syn['registered']:,} registered) | bounded | "
        f"{syn['mean_candidates']:.1f} / {syn['p95_candidates']} | |",
        f"| ms per query (keys, candidate lookup, rank), p50 / p95 | < 10 ms | {syn['p50_ms']:.3f} / {syn['p95_ms']:.3f} | "
        f"{_ok(syn['p95_ms'] < 10)} |",
        f"| compare() per pair | < 50 us | {r['compare_us']:.1f} us | {_ok(r['compare_us'] < 50)} |",
        "",
        "Calibration over every scored (query, candidate) pair: the score is meant as a probability.",
        "",
        "| score bucket | pairs | observed share of true matches |",
        "|---|---|---|",
    ]
    bounds = [row[0] for row in syn["calibration"]] + [1.0]
    for (lo, n, share), hi in zip(syn["calibration"], bounds[1:], strict=True):
        lines.append(f"| [{lo}, {hi}) | {n:,} | {'-' if share is None else f'{share:.3f}'} |")
    if "threshold_curve" in syn:
        lines += [
            "",
            "If the blocking threshold were elsewhere (best candidate without hard conflict, all queries):",
            "",
            "| threshold | duplicates caught | precision of blocks |",
            "|---|---|---|",
        ]
        lines += [f"| {th} | {_pct(c)} | {_pct(p)} |" for th, c, p in syn["threshold_curve"]]
    lines += [
        "",
        "Share of duplicates *not* caught, by the errors the generator put in them (one duplicate can carry several):",
        "",
        "| error | missed |",
        "|---|---|",
    ]
    lines += [
        f"| {e} | {_pct(v)} |" for e, v in sorted(syn["miss_rate_by_error"].items(), key=lambda kv: -kv[1])
    ]
    if "scale" in r:
        sc = r["scale"]
        lines += [
            "",
            f"### Candidates read at {sc['registry']:,} identities (no duplicates, 2,000 sampled queries)",
            "",
            "| figure | measured |",
            "|---|---|",
            f"| distinct keys / largest bucket / p99 bucket | {sc['keys']:,} / {sc['largest_bucket']:,} / {sc['p99_bucket']} |",
            f"| candidates per query: mean / p95 / max | {sc['candidates_per_query_mean']:.0f} / "
            f"{sc['candidates_per_query_p95']} / {sc['candidates_per_query_max']} |",
            f"| Mamadou Diallo, 15 June 1990, Dakar | {sc['mamadou_diallo_1990']:,} |",
            f"| Mamadou Diallo, no birth date, Dakar | {sc['mamadou_diallo_no_dob']:,} |",
            f"| index build (pure Python dict) | {sc['build_s']:.0f} s |",
        ]
    ph = r["phonetic"]
    bl = r["blocking_vs_soundex"]
    lines += [
        "",
        "### What the West African keys add over Soundex",
        "",
        "| measure | phonetic_key (scoring) | skeleton (blocking) | Soundex |",
        "|---|---|---|---|",
    ]
    for label, key in [
        (
            "French/English spelling pairs with one key (28 pairs, e.g. Diallo/Jallow, Ousmane/Usman)",
            "spelling_pairs_same_key",
        ),
        ("variant-table pairs with one key (Fatou/Fatoumata, Cissé/Ceesay ...)", "variant_table_same_key"),
        ("generated duplicate name pairs that keep one key", "duplicate_names_same_key"),
        ("distinct last names that collide (random pairs)", "distinct_last_names_collide"),
    ]:
        lines.append(
            f"| {label} | {_pct(ph[key + '_phonetic_key'])} | {_pct(ph[key + '_blocking_skeleton'])} | {_pct(ph[key + '_soundex'])} |"
        )
    lines += [
        "",
        "Same blocking recipes with Soundex in place of our name keys (synthetic population above): "
        f"recall {_pct(bl['soundex']['blocking_recall'])}, {bl['soundex']['mean_candidates']:.1f} candidates per query; "
        f"ours {_pct(bl['west_african_keys']['blocking_recall'])}, {bl['west_african_keys']['mean_candidates']:.1f}.",
    ]
    if "febrl" in r:
        lines += [
            "",
            "## (b) FEBRL, given name + surname + date of birth + state only",
            "",
            "Ours: our blocking keys, u from 50,000 random pairs, m and the match rate by our EM (no labels); "
            "scored at our `probable` threshold 0.85. Splink 5 (DuckDB): `estimate_u_using_random_sampling` + EM "
            "(blocked on date of birth, surname, given name), `predict`, same four fields, same run.",
            "",
            "| set | method | P | R | F1 | best F1 over thresholds (labels) | target |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in r["febrl"]:
            o = row["ours"]
            met = o["P"] >= 0.99 and o["F1"] >= 0.93
            if "splink" in row:
                met = met and o["F1"] >= row["splink"]["F1@0.85"]
            lines.append(
                f"| {o['set']} | ours, score >= 0.85 | {o['P']:.3f} | {o['R']:.3f} | {o['F1']:.3f} | {o['best_F1']:.3f} | "
                f"P >= 0.99, F1 >= 0.93, F1 >= Splink: {_ok(met)} |"
            )
            if "splink" in row:
                sp = row["splink"]
                for th in (0.85, 0.95):
                    lines.append(
                        f"| {sp['set']} | Splink, p >= {th} | {sp[f'P@{th}']:.3f} | {sp[f'R@{th}']:.3f} | "
                        f"{sp[f'F1@{th}']:.3f} | {sp['best_F1']:.3f} | |"
                    )
        lines += [
            "",
            "| set | our blocking recall | pairs scored | right person first (records with a true pair) | target |",
            "|---|---|---|---|---|",
        ]
        for row in r["febrl"]:
            o = row["ours"]
            lines.append(
                f"| {o['set']} | {_pct(o['blocking_recall'])} | {o['pairs_scored']:,} | {_pct(o['right_first'])} | "
                f">= 99%: {_ok(o['right_first'] >= 0.99)} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description="pure-matcher benchmark")
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=2)
    ap.add_argument("--fit", action="store_true", help="refit shared/matching/params.json (seed 1) first")
    ap.add_argument("--fit-n", type=int, default=40_000)
    ap.add_argument("--skip-febrl", action="store_true")
    ap.add_argument("--skip-splink", action="store_true")
    ap.add_argument(
        "--scale-n", type=int, default=0, help="also measure candidates read at this registry size"
    )
    ap.add_argument("--verbose", action="store_true", help="print missed duplicates")
    ap.add_argument("--json", type=Path, help="write all figures as JSON here")
    ap.add_argument("--markdown", type=Path, help="write the figures, target beside measured, here")
    ap.add_argument("--render", type=Path, help="only render --markdown from a JSON written by --json")
    args = ap.parse_args(argv)
    command = "python scripts/bench_matcher_core.py " + " ".join(argv)
    if args.render:
        report_in = json.loads(args.render.read_text())
        if args.markdown:
            args.markdown.write_text(render_markdown(report_in, report_in.get("command", command)))
        return 0
    if not args.skip_febrl:
        _ensure_bench_venv(argv)

    report: dict[str, Any] = {"command": command}
    params: MatchParams | None = None
    if args.fit:
        params = fit_default(args.fit_n, 1)
        path = ROOT / "shared" / "matching" / "params.json"
        path.write_text(json.dumps(params.to_json(), indent=1) + "\n")
        print(f"wrote {path}")
    report["compare_us"] = bench_compare_speed(params)
    print(f"compare(): {report['compare_us']:.1f} us per pair")
    report["phonetic"] = bench_phonetic_vs_soundex(args.n, args.seed)
    print("phonetic vs soundex:", json.dumps(report["phonetic"], indent=1))
    report["blocking_vs_soundex"] = bench_blocking_keys(args.n, args.seed)
    print("blocking keys vs soundex:", json.dumps(report["blocking_vs_soundex"], indent=1))
    report["synthetic"] = bench_synthetic(args.n, args.seed, params, args.verbose)
    print("synthetic:", json.dumps(report["synthetic"], indent=1))
    if args.scale_n:
        report["scale"] = bench_scale(args.scale_n, args.seed + 100)
        print("scale:", json.dumps(report["scale"], indent=1))
    if not args.skip_febrl:
        report["febrl"] = []
        for name in ("febrl3", "febrl4"):
            ours = bench_febrl(name, 0.85)
            print("ours:", json.dumps(ours, indent=1))
            row: dict[str, Any] = {"ours": ours}
            if not args.skip_splink:
                theirs = bench_splink(name, 0.85)
                print("splink:", json.dumps(theirs, indent=1))
                row["splink"] = theirs
            report["febrl"].append(row)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str) + "\n")
    if args.markdown:
        args.markdown.write_text(render_markdown(report, command))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
