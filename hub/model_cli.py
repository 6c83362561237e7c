"""mpi-hub model train|list|use: the learned matcher retrained on the reviewers' decisions.

``train`` builds the labelled pairs of every ``merge`` and ``not_same`` decision at the hub
(``shared.review.labels``: the two identities as they stood, through the one feature function
``shared.matching.features``), adds the generator's pairs (``scripts/train_matcher.py``'s
``pairs_of``: a population of ``--pairs`` people, registered in a scratch node store and
queried through the real candidate code), retrains with the script's ``train`` core, and
compares the new model with the current one on a held-out set nobody trained on: a second
generated population and one decision in five. A model that is worse is refused (exit 1,
one line); an accepted one is stored in the hub's database (``matcher_model``) as the current
model, under a version that ends with a hash of its trees. Sync takes it to the nodes
(``shared.sync.modelsync``); ``use`` rolls back to a model held before.

Training needs scikit-learn (the ``train`` extra) and the project's source tree
(``scripts/``); nodes and the hub score with numpy only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import hashlib
import importlib.util
import io
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from shared import modelstore
from shared.cli import CliError, OneLineParser, positive_int
from shared.compose import services
from shared.matching import FEATURES, LearnedMatcher, LearnedModel, NameFrequencies
from shared.matching.features import FS_FEATURES, features
from shared.matching.score import _features
from shared.review import labels
from shared.settings import Settings

__all__ = ["add_model_commands"]

_ROOT = Path(__file__).resolve().parent.parent
_SCRIPT = _ROOT / "scripts" / "train_matcher.py"
# The kinds of train_matcher.KINDS a decision is counted as in the held-out figures.
_SAME_KIND, _OTHER_KIND = "duplicate", "namesake"
_HELD_OUT_EVERY = 5  # one decision in five is kept out of training to judge the model on
_MEASURES = ("caught", "precision", "lookalikes_blocked", "top1")
_PRECISION_TARGET, _LOOKALIKE_TARGET = 0.995, 0.005  # issue 20's: at certain, precision >= 99.5%, <= 0.5% blocked


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.from_env(None, database_url=args.database_url)


def _training_script() -> ModuleType:
    """``scripts/train_matcher.py``, the one training core (imported, never copied)."""
    if importlib.util.find_spec("sklearn") is None:
        raise CliError("mpi-hub model train needs scikit-learn, which serving does not: "
                       "pip install 'mpi[train]' (or: pip install 'scikit-learn>=1.4')")
    if not _SCRIPT.exists():
        raise CliError(f"mpi-hub model train needs the project's source tree: {_SCRIPT} is missing")
    spec = importlib.util.spec_from_file_location("train_matcher", _SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["train_matcher"] = module  # its dataclasses look their module up while they are made
    spec.loader.exec_module(module)
    return module


async def _read_hub(settings: Settings) -> tuple[list[labels.LabelledPair], LearnedModel, NameFrequencies]:
    """The decisions, the current model and the registry's name frequencies."""
    # The frequencies' load also brings the current model into the matcher.
    async with services(settings, "hub", sign=False) as hub:
        matcher = hub.matcher
        if not isinstance(matcher, LearnedMatcher):
            raise CliError("MPI_MATCHER is fellegi_sunter: there is no learned model to retrain")
        async with hub.store.read() as conn:
            pairs = await labels.pairs(conn, hub.store.dialect)
        return pairs, matcher.model, hub.frequencies


def _generated(tm: ModuleType, size: int, seed: int, fresh: int) -> dict[str, Any]:
    """The generator's labelled pairs of one population (``train_matcher.pairs_of``)."""
    data_dir = Path(tempfile.mkdtemp(prefix=f"mpi-model-{size}-"))
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            if tm.node_cli(["init", "--data-dir", str(data_dir), "--country", "SN", "--region", "DKR"]) != 0:
                raise CliError("could not create the scratch node store for the generator's pairs")
        part: dict[str, Any] = asyncio.run(tm.pairs_of(size, seed, fresh, data_dir))
        return part
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def _label_rows(pairs: list[labels.LabelledPair], frequencies: NameFrequencies, first_group: int,
                kinds: tuple[str, ...], repeat: int) -> dict[str, np.ndarray]:
    """Feature rows of the decisions: the first identity as the query, the second its set of one."""
    from shared.matching import Matcher

    scorer = Matcher(frequencies=frequencies)
    xs, ys, groups, kind = [], [], [], []
    for n, pair in enumerate(pairs):
        fs = np.zeros((1, len(FS_FEATURES)))
        parts = [0.0] * (len(FS_FEATURES) - 1)
        fs[0, 0] = scorer._evidence(_features(pair.a), _features(pair.b), parts)[0]
        fs[0, 1:] = parts
        row = features(pair.a, [pair.b], frequencies, fs)
        xs.append(np.repeat(row, repeat, axis=0))
        ys.append(np.full(repeat, int(pair.same), dtype=np.int8))
        groups.append(np.full(repeat, first_group + n))
        kind.append(np.full(repeat, kinds.index(_SAME_KIND if pair.same else _OTHER_KIND), dtype=np.int8))
    if not xs:
        return {"x": np.zeros((0, len(FEATURES))), "y": np.zeros(0, dtype=np.int8), "group": np.zeros(0, dtype=np.int64),
                "kind": np.zeros(0, dtype=np.int8)}
    return {"x": np.vstack(xs), "y": np.concatenate(ys), "group": np.concatenate(groups), "kind": np.concatenate(kind)}


def _join(*parts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([p[k] for p in parts if len(p["y"])]) for k in ("x", "y", "group", "kind")}


def _held_out(pair: labels.LabelledPair) -> bool:
    digest = hashlib.sha256(f"{pair.item_id}".encode()).digest()
    return digest[0] % _HELD_OUT_EVERY == 0


def _model_file(tm: ModuleType, trained: Any, meta: dict[str, Any], seed: int) -> bytes:
    """The new model's file: the script's exported trees, its version ending in a hash of them."""
    arrays = tm.export(trained.clf, trained.iso)
    digest = hashlib.sha256(json.dumps(FEATURES).encode())
    for name in sorted(arrays):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(arrays[name]).tobytes())
    version = f"learned-{dt.date.today().isoformat()}-s{seed}-{digest.hexdigest()[:12]}"
    meta = {**meta, "version": version}
    sample, clf = trained.sample_x, trained.clf
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer, version=np.array(version), feature_names=np.array(FEATURES), meta=np.array(json.dumps(meta)),
        check_x=sample, check_raw=clf.decision_function(sample), check_proba=clf.predict_proba(sample)[:, 1],
        **arrays,
    )
    return buffer.getvalue()


def _figures(tm: ModuleType, model: LearnedModel, data: dict[str, np.ndarray]) -> dict[str, float]:
    raw, _ = model.raw(data["x"])
    figures: dict[str, float] = tm.evaluate(model.probability(raw), raw, data)
    return figures


def _worse(before: dict[str, float], after: dict[str, float], tolerance: float) -> list[str]:
    """What the new model does worse than the current one: a measure that regresses past tolerance.

    Caught may not fall. Precision may not fall below the current model's or the target (99.5%,
    whichever is lower), and the look-alikes blocked may not rise above the current model's or
    the target (0.5%, whichever is higher): a model that catches more at the target precision
    is better even if the current one was more cautious.
    """
    out = []
    if after["caught"] < before["caught"] - tolerance:
        out.append(f"caught {before['caught']:.2%} -> {after['caught']:.2%}")
    if after["precision"] < min(before["precision"], _PRECISION_TARGET) - tolerance:
        out.append(f"precision {before['precision']:.2%} -> {after['precision']:.2%}")
    if after["lookalikes_blocked"] > max(before["lookalikes_blocked"], _LOOKALIKE_TARGET) + tolerance:
        out.append(f"look-alikes blocked {before['lookalikes_blocked']:.2%} -> {after['lookalikes_blocked']:.2%}")
    return out


def _print_table(rows: list[tuple[str, dict[str, float], dict[str, float]]]) -> None:
    print(f"{'held-out set':<22} {'measure':<20} {'before':>8} {'after':>8}")
    for name, before, after in rows:
        for m in _MEASURES:
            if m in before:
                print(f"{name:<22} {m:<20} {before[m]:>8.2%} {after[m]:>8.2%}")


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _train(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    tm = _training_script()
    settings = _settings(args)
    pairs, current, frequencies = asyncio.run(_read_hub(settings))
    kinds: tuple[str, ...] = tuple(tm.KINDS)
    kept = [p for p in pairs if not _held_out(p)]
    judged = [p for p in pairs if _held_out(p)]
    say(f"{len(pairs)} review decision(s): {len(kept)} to train on, {len(judged)} held out; "
        f"current model {current.version}")
    fresh = max(50, args.pairs // 10)
    generated = _generated(tm, args.pairs, args.seed + args.pairs, fresh)
    held_gen = _generated(tm, max(500, args.pairs // 2), args.seed + args.pairs + 7919, fresh // 2)
    say(f"generator: {len(generated['y']):,} pairs to train on, {len(held_gen['y']):,} held out "
        f"({time.perf_counter() - started:.0f} s)")
    base = int(generated["group"].max()) + 1
    train_labels = _label_rows(kept, frequencies, base, kinds, args.label_weight)
    data = _join(generated, train_labels)
    rows_in, weight = tm.prepare(data, args.seed)
    trained = tm.train(rows_in["x"], rows_in["y"], rows_in["group"], args.seed, weight=weight, kind=rows_in["kind"],
                       folds=args.folds, params=tm.Params(iterations=args.iterations))
    judged_rows = _label_rows(judged, frequencies, 0, kinds, 1)
    meta = {
        "trained_on": {"generator_people": args.pairs, "seed": args.seed, "decisions": len(kept),
                       "label_weight": args.label_weight, "pairs": trained.pairs},
        "model": {"kind": "HistGradientBoostingClassifier", "iterations": args.iterations, "folds": args.folds},
        "out_of_fold": trained.figures,
        "reliability": trained.reliability,
        "previous": current.version,
    }
    data_file = _model_file(tm, trained, meta, args.seed)
    new = modelstore.load_bytes(data_file)
    rows = [("generator", _figures(tm, current, held_gen), _figures(tm, new, held_gen))]
    if len(judged_rows["y"]):
        rows.append(("review decisions", _figures(tm, current, judged_rows), _figures(tm, new, judged_rows)))
    _print_table(rows)
    worse = [f"{name}: {w}" for name, before, after in rows for w in _worse(before, after, args.tolerance)]
    if worse:
        raise CliError(f"model refused, worse than {current.version} on the held-out set: {'; '.join(worse)}")
    meta["held_out"] = {name: after for name, _, after in rows}
    if args.out:
        Path(args.out).write_bytes(data_file)
    ref = asyncio.run(_store(settings, data_file, meta))
    print(f"accepted model {ref.version} (sha256 {ref.sha256[:16]}…, {len(data_file) / 1024:.0f} KiB): "
          f"current at the hub, nodes take it on their next sync ({time.perf_counter() - started:.0f} s)")
    return 0


async def _store(settings: Settings, data: bytes, meta: dict[str, Any]) -> modelstore.ModelRef:
    async with services(settings, "hub", frequencies=False, sign=False) as hub:
        async with hub.store.write("mpi-hub model train") as tx:
            ref = await modelstore.save_model(tx, data, meta, make_current=True)
            tx.audit("model_train", None, version=ref.version, sha256=ref.sha256, held_out=meta.get("held_out"))
        return ref


async def _list(args: argparse.Namespace) -> int:
    async with services(_settings(args), "hub", frequencies=False, sign=False) as hub, hub.store.read() as conn:
        models = await modelstore.list_models(conn)
    for m in models:
        print(json.dumps(m) if args.json else
              f"{'*' if m['current'] else ' '} {m['version']:<48} {m['sha256'][:16]}  {m['created_at'] or 'shipped'}")
    return 0


async def _use(args: argparse.Namespace) -> int:
    async with services(_settings(args), "hub", frequencies=False, sign=False) as hub, hub.store.write("mpi-hub model use") as tx:
        try:
            await modelstore.set_current(tx, args.version)
        except LookupError as exc:
            raise CliError(f"{exc}: see mpi-hub model list") from None
    print(f"model {args.version} is current at the hub: nodes take it on their next sync")
    return 0


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("a share between 0 and 1, e.g. 0.005 for half a point")
    return value


def add_model_commands(sub: Any, db: Any) -> None:
    """``mpi-hub model ...`` in the hub's parser (``db`` adds --database-url)."""
    model = sub.add_parser("model", help="the learned matcher: retrain on the reviewers' decisions, list, roll back")
    model_sub = model.add_subparsers(dest="model_command", required=True, parser_class=OneLineParser)
    train = model_sub.add_parser("train", help="retrain on the generator's pairs and every merge/not_same decision; "
                                 "refuse a model worse than the current one; store an accepted one as current")
    db(train)
    train.add_argument("--out", default=None, metavar="FILE", help="also write the accepted model's file here")
    train.add_argument("--pairs", type=positive_int, default=30000, metavar="N",
                       help="people in the generated population whose pairs are added (held-out: N/2 more)")
    train.add_argument("--seed", type=int, default=2026)
    train.add_argument("--iterations", type=positive_int, default=150, help="boosting iterations")
    train.add_argument("--folds", type=positive_int, default=4, help="folds of the out-of-fold calibration")
    train.add_argument("--label-weight", type=positive_int, default=5, help="how many generated pairs a decision weighs")
    train.add_argument("--tolerance", type=_share, default=0.005,
                       help="loss allowed on a held-out measure before the model is refused (share; 0.005 = half a point)")
    train.set_defaults(func=_train)
    listing = model_sub.add_parser("list", help="the models the hub holds; * marks the current one")
    db(listing)
    listing.add_argument("--json", action="store_true", help="one JSON object a line")
    listing.set_defaults(func=_list)
    use = model_sub.add_parser("use", help="make a model the hub holds current again (a roll-back)")
    db(use)
    use.add_argument("version")
    use.set_defaults(func=_use)
