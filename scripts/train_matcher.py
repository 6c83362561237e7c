#!/usr/bin/env python3
"""Train the learned matcher: labelled pairs from the generator, through the real candidate code.

Reproducible (seeded) and CPU-modest.  Steps:

1. for each size in ``--sizes``, a population from ``scripts/synth.py`` (seed ``--seed`` + size,
   never the benchmark's seed 7); its originals are loaded into a fresh node store (SQLite);
2. every duplicate and look-alike, and ``--fresh`` people never registered, is a query: its
   candidates come from ``Registry.candidates`` (blocking keys, best 30: the same code as
   register and ``/mpi/match``), so the negatives are the hard candidates a node really sees;
   each (query, candidate) pair is labelled by the truth, grouped by query;
3. the feature matrix of each set (``shared.matching.features``, with the Fellegi-Sunter
   evidence of the shipped parameters);
4. scikit-learn's ``HistGradientBoostingClassifier``, out-of-fold predictions grouped by query
   (``--folds``), an isotonic calibration fitted on them (raw log odds -> probability), then
   the final model on every pair;
5. the trees exported to ``shared/matching/matcher_model.npz`` (plain arrays, inferred with
   numpy by ``shared.matching.learned``), with the calibration, the version string, the
   training figures, and a sample of rows with scikit-learn's own raw predictions (the
   test checks the numpy inference against them).

    MPI_EXTRAS=test,train scripts/test --co -q >/dev/null   # once: installs scikit-learn
    .venv/bin/python scripts/train_matcher.py
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

import synth  # noqa: E402
from bench_api import _body  # noqa: E402

from node.cli import main as node_cli  # noqa: E402
from node.storage import node_store  # noqa: E402
from shared.compose import registry_of  # noqa: E402
from shared.matching.features import FEATURES, FS_FEATURES, features  # noqa: E402
from shared.matching.score import _features  # noqa: E402
from shared.schemas import RegisterIn  # noqa: E402
from shared.settings import Settings  # noqa: E402

OUT = ROOT / "shared" / "matching" / "matcher_model.npz"
KINDS = ("duplicate", "twin", "namesake", "parent_child", "fresh")


async def pairs_of(size: int, seed: int, fresh: int, data: Path) -> dict[str, Any]:
    """Feature rows, labels, query groups and query kinds of one population."""
    store = node_store(Settings(data_dir=str(data), sqlite_synchronous="NORMAL"))
    await store.open()
    registry = registry_of(store, Settings(matcher="fellegi_sunter"))
    matcher, frequencies = registry.matcher, registry.frequencies
    originals, probes = [], []
    for rec in synth.generate(size, seed=seed):
        (originals if rec["kind"] == "original" else probes).append(rec)
    probes += [r | {"kind": "fresh"} for r in synth.generate(fresh, seed=seed + 1, dup_rate=0.0, lookalike_rate=0.0)]
    mpi_of: dict[str, str] = {}
    seen_uids: set[str] = set()
    for i in range(0, len(originals), 2000):
        chunk = originals[i : i + 2000]
        items = []
        for rec in chunk:
            if rec.get("dhis2_uid") in seen_uids:
                rec["dhis2_uid"] = None
            seen_uids.add(rec.get("dhis2_uid") or "")
            items.append((RegisterIn.model_validate(_body(rec)), synth.to_person(rec)))
        async with store.write("train") as tx:
            ids = await registry.insert_new(tx, items)
        mpi_of.update({rec["record_id"]: mpi_id for rec, mpi_id in zip(chunk, ids, strict=True)})
    xs, ys, groups, kinds = [], [], [], []
    async with store.read() as conn:
        for q, rec in enumerate(probes):
            person = synth.to_person(rec)
            cands = await registry.candidates(conn, person)
            if not cands:
                continue
            truth = mpi_of.get(rec["related_record_id"]) if rec["kind"] == "duplicate" else None
            qf = _features(person)
            fs = np.zeros((len(cands), len(FS_FEATURES)))
            for i, (_, p) in enumerate(cands):
                parts = [0.0] * (len(FS_FEATURES) - 1)
                fs[i, 0] = matcher._evidence(qf, _features(p), parts)[0]
                fs[i, 1:] = parts
            xs.append(features(person, [p for _, p in cands], frequencies, fs))
            ys.append(np.array([row.mpi_id == truth for row, _ in cands], dtype=np.int8))
            groups.append(np.full(len(cands), q))
            kinds.append(np.full(len(cands), KINDS.index(rec["kind"]), dtype=np.int8))
    await store.close()
    return {"x": np.vstack(xs), "y": np.concatenate(ys), "group": np.concatenate(groups), "kind": np.concatenate(kinds)}


def export(clf: Any, iso: Any) -> dict[str, np.ndarray]:
    """The fitted trees as padded arrays (trees x nodes), with each node's expected value."""
    predictors = [it[0] for it in clf._predictors]
    size = max(len(p.nodes) for p in predictors)
    shape = (len(predictors), size)
    arrays = {
        "feature": np.zeros(shape, dtype=np.int32),
        "threshold": np.zeros(shape),
        "left": np.zeros(shape, dtype=np.int32),
        "right": np.zeros(shape, dtype=np.int32),
        "missing_left": np.zeros(shape, dtype=bool),
        "leaf": np.ones(shape, dtype=bool),
        "value": np.zeros(shape),
        "mean": np.zeros(shape),
    }
    depth = 0
    for t, p in enumerate(predictors):
        nodes = p.nodes
        k = len(nodes)
        arrays["feature"][t, :k] = nodes["feature_idx"]
        arrays["threshold"][t, :k] = nodes["num_threshold"]
        arrays["left"][t, :k] = nodes["left"]
        arrays["right"][t, :k] = nodes["right"]
        arrays["missing_left"][t, :k] = nodes["missing_go_to_left"]
        arrays["leaf"][t, :k] = nodes["is_leaf"]
        arrays["value"][t, :k] = nodes["value"]
        depth = max(depth, int(nodes["depth"].max()))
        mean = np.zeros(k)

        def fill(i: int, nodes: Any = nodes, mean: np.ndarray = mean) -> tuple[float, float]:
            if nodes["is_leaf"][i]:
                mean[i] = nodes["value"][i]
                return float(mean[i]), float(nodes["count"][i])
            ml, cl = fill(int(nodes["left"][i]))
            mr, cr = fill(int(nodes["right"][i]))
            mean[i] = (ml * cl + mr * cr) / max(cl + cr, 1.0)
            return float(mean[i]), cl + cr

        fill(0)
        arrays["mean"][t, :k] = mean
    arrays["baseline"] = np.array(float(np.ravel(clf._baseline_prediction)[0]))
    arrays["depth"] = np.array(depth + 1)
    arrays["calib_x"] = np.asarray(iso.X_thresholds_, dtype=np.float64)
    arrays["calib_y"] = np.asarray(iso.y_thresholds_, dtype=np.float64)
    return arrays


def evaluate(prob: np.ndarray, raw: np.ndarray, data: dict[str, Any], certain: float = 0.95) -> dict[str, float]:
    """Per query: does the best candidate reach ``certain``, and is it the right one."""
    by_group: dict[int, list[int]] = defaultdict(list)
    for i, g in enumerate(data["group"]):
        by_group[int(g)].append(i)
    n = defaultdict(int)
    for rows in by_group.values():
        kind = KINDS[int(data["kind"][rows[0]])]
        best = max(rows, key=lambda i: raw[i])
        blocked = prob[best] >= certain
        n[kind] += 1
        if blocked:
            n["blocks"] += 1
            n["right"] += int(data["y"][best])
            n[f"{kind}_blocked"] += 1
        if kind == "duplicate":
            n["dup_top1"] += int(data["y"][best])
            n["dup_caught"] += int(blocked and data["y"][best])
    looks = sum(n[k] for k in ("twin", "namesake", "parent_child")) or 1
    return {
        "caught": round(n["dup_caught"] / max(n["duplicate"], 1), 4),
        "precision": round(n["right"] / max(n["blocks"], 1), 4),
        "lookalikes_blocked": round(sum(n[f"{k}_blocked"] for k in ("twin", "namesake", "parent_child")) / looks, 4),
        "fresh_blocked": round(n["fresh_blocked"] / max(n["fresh"], 1), 4),
        "top1": round(n["dup_top1"] / max(n["duplicate"], 1), 4),
    }


def train(data: dict[str, Any], *, seed: int, folds: int, iterations: int, started: float | None = None) -> dict[str, Any]:
    """The training core: trees and calibration on labelled pairs ``data`` (x, y, group, kind).

    Returns the fitted classifier and calibration, the out-of-fold figures and reliability table,
    and the rows it trained on (x, y, group, after thinning and blinding). ``mpi-hub model
    train`` calls this too, with the hub's review decisions added to ``data``.
    """
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.isotonic import IsotonicRegression
    from sklearn.model_selection import GroupKFold

    args = argparse.Namespace(seed=seed, folds=folds, iterations=iterations)
    started = time.perf_counter() if started is None else started
    # Easy negatives (FS evidence under -3 bits: 60% of the pairs, none of 99.5% of true
    # pairs) are thinned to one in five, weighed five: the same fit in half the CPU.
    easy = (data["y"] == 0) & (data["x"][:, FEATURES.index("fs_total")] < -3.0)
    keep = ~easy | (np.random.default_rng(args.seed + 1).random(len(easy)) < 0.2)
    weight = np.where(easy, 5.0, 1.0)[keep]
    data = {k: v[keep] for k, v in data.items()}
    x, y, group = data["x"], data["y"], data["group"]
    # A registry under 100 identities has no name frequencies (a new node, a test): some
    # queries are shown without them, so the trees learn where a missing frequency goes.
    x = x.copy()
    blind = np.isin(group, np.random.default_rng(args.seed).choice(np.unique(group), size=len(np.unique(group)) // 10, replace=False))
    x[np.ix_(blind, [FEATURES.index(n) for n in FEATURES if n.startswith("freq_")])] = np.nan
    print(f"{len(y):,} pairs, {int(y.sum()):,} true, {len(np.unique(group)):,} queries "
          f"({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)

    def model() -> Any:
        return HistGradientBoostingClassifier(
            max_iter=args.iterations,
            learning_rate=0.15,
            max_leaf_nodes=31,
            max_depth=8,
            min_samples_leaf=20,
            l2_regularization=1.0,
            early_stopping=False,
            random_state=args.seed,
        )

    oof = np.zeros(len(y))
    folds = list(GroupKFold(n_splits=args.folds).split(x, y, group))
    for k, (train, test) in enumerate(folds):
        oof[test] = model().fit(x[train], y[train], sample_weight=weight[train]).decision_function(x[test])
        print(f"fold {k + 1}/{args.folds} ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
    # The shipped calibration is fitted on every out-of-fold prediction; the figures and the
    # reliability table below use one fitted on the other folds only (honest, not in-sample).
    iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(oof, y, sample_weight=weight)
    oof_prob = np.zeros(len(y))
    for train, test in folds:
        fold_iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(oof[train], y[train], sample_weight=weight[train])
        oof_prob[test] = fold_iso.predict(oof[test])
    figures = evaluate(oof_prob, oof, data)
    # Reliability of the out-of-fold calibrated scores (what the README's table shows)
    edges = [0.0, 0.05, 0.2, 0.5, 0.7, 0.85, 0.95, 0.99, 1.0001]
    reliability = []
    for lo, hi in zip(edges, edges[1:], strict=False):
        sel = (oof_prob >= lo) & (oof_prob < hi)
        if sel.any():
            reliability.append({"bucket": f"{lo:.2f}-{min(hi, 1.0):.2f}", "pairs": int(weight[sel].sum()),
                                "mean_score": round(float(np.average(oof_prob[sel], weights=weight[sel])), 4),
                                "true_share": round(float(np.average(y[sel], weights=weight[sel])), 4)})
    clf = model().fit(x, y, sample_weight=weight)
    return {"clf": clf, "iso": iso, "figures": figures, "reliability": reliability, "x": x, "y": y, "group": group}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="30000,60000")
    parser.add_argument("--fresh", type=int, default=3000, help="never-registered people queried per size")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--iterations", type=int, default=150)
    parser.add_argument("--cache", type=Path, default=ROOT / "bench-out" / "train-pairs.npz")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--version", default=None, help="model version (default: learned-<date>-<seed>)")
    args = parser.parse_args()
    started = time.perf_counter()
    if args.cache.exists():
        with np.load(args.cache) as z:
            data = {k: z[k] for k in z.files}
        if data["x"].shape[1] != len(FEATURES):
            raise SystemExit(f"{args.cache} holds other features: delete it")
        print(f"pairs from {args.cache}", file=sys.stderr)
    else:
        parts = []
        offset = 0
        for size in (int(s) for s in args.sizes.split(",")):
            data_dir = Path(tempfile.mkdtemp(prefix=f"mpi-train-{size}-"))
            try:
                if node_cli(["init", "--data-dir", str(data_dir), "--country", "SN", "--region", "DKR"]) != 0:
                    raise SystemExit("init failed")
                part = asyncio.run(pairs_of(size, args.seed + size, args.fresh, data_dir))
            finally:
                shutil.rmtree(data_dir, ignore_errors=True)
            part["group"] = part["group"] + offset
            offset = int(part["group"].max()) + 1
            parts.append(part)
            print(f"size {size:,}: {len(part['y']):,} pairs, {int(part['y'].sum()):,} true", file=sys.stderr, flush=True)
        data = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        args.cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(args.cache, **data)
    trained = train(data, seed=args.seed, folds=args.folds, iterations=args.iterations, started=started)
    clf, iso, figures, reliability = trained["clf"], trained["iso"], trained["figures"], trained["reliability"]
    x, y, group = trained["x"], trained["y"], trained["group"]
    rng = np.random.default_rng(args.seed)
    sample = rng.choice(len(y), size=min(300, len(y)), replace=False)
    version = args.version or f"learned-{dt.date.today().isoformat()}-s{args.seed}"
    meta = {
        "version": version,
        "trained_on": {"sizes": args.sizes, "seed": args.seed, "fresh": args.fresh, "pairs": int(len(y)),
                       "true_pairs": int(y.sum()), "queries": int(len(np.unique(group)))},
        "model": {"kind": "HistGradientBoostingClassifier", "iterations": args.iterations, "max_leaf_nodes": 31, "max_depth": 8,
                  "learning_rate": 0.15, "folds": args.folds},
        "out_of_fold": figures,
        "reliability": reliability,
    }
    arrays = export(clf, iso)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        args.out,
        version=np.array(version),
        feature_names=np.array(FEATURES),
        meta=np.array(json.dumps(meta)),
        check_x=x[sample],
        check_raw=clf.decision_function(x[sample]),
        check_proba=clf.predict_proba(x[sample])[:, 1],
        **arrays,
    )
    print(json.dumps(meta, indent=2))
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB, {time.perf_counter() - started:.0f} s)",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
