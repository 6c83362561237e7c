"""The learned matcher: gradient-boosted trees over ``features``, calibrated, inferred in plain numpy.

Owns: loading the shipped model file (``matcher_model.npz``, written by
``scripts/train_matcher.py``), tree inference vectorised over a whole candidate set and all
trees at once, the calibration (isotonic, fitted on out-of-fold predictions, stored in the
file) that keeps the score a probability, the per-feature contributions that say which
features carried a score (each split's change of the expected value along the path taken,
summed over trees), and ``LearnedMatcher``, the scorer every caller uses.

The trees are trained with scikit-learn (a training-only extra); nodes need only numpy.
``LearnedMatcher`` keeps ``Matcher``'s interface and its Fellegi-Sunter comparisons for what
they describe best: ``matched_fields`` (same vocabulary), the hard conflicts (a conflict keeps
the score below ``certain``, as before) and the FS evidence, which is one input of the trees.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from shared.matching.features import FEATURES, FS_FEATURES, pair_features
from shared.matching.frequencies import NameFrequencies
from shared.matching.model import MatchParams, Person
from shared.matching.score import Matcher, MatchResult, Thresholds, _features

__all__ = ["MODEL_FILE", "LearnedMatcher", "LearnedModel", "default_model", "matcher_of"]

K = TypeVar("K")
MODEL_FILE = "matcher_model.npz"
_TOP = 3  # features reported per result


@dataclass(frozen=True)
class LearnedModel:
    """Trees padded to one node count: arrays of shape (trees, nodes)."""

    version: str
    feature_names: tuple[str, ...]
    feature: NDArray[np.int64]
    threshold: NDArray[np.float64]
    left: NDArray[np.int64]
    right: NDArray[np.int64]
    missing_left: NDArray[np.bool_]
    leaf: NDArray[np.bool_]
    value: NDArray[np.float64]  # leaf value (raw log odds, shrinkage applied)
    mean: NDArray[np.float64]  # expected value under the node (count-weighted leaves): for contributions
    baseline: float
    depth: int
    calib_x: NDArray[np.float64]  # isotonic calibration: raw log odds -> probability
    calib_y: NDArray[np.float64]
    meta: dict[str, Any]
    # set in __post_init__
    _f_feature: NDArray[np.int64] = field(init=False, repr=False)
    _f_threshold: NDArray[np.float64] = field(init=False, repr=False)
    _f_left: NDArray[np.int64] = field(init=False, repr=False)
    _f_right: NDArray[np.int64] = field(init=False, repr=False)
    _f_missing_left: NDArray[np.bool_] = field(init=False, repr=False)
    _f_value: NDArray[np.float64] = field(init=False, repr=False)
    _f_mean: NDArray[np.float64] = field(init=False, repr=False)
    _f_roots: NDArray[np.int64] = field(init=False, repr=False)

    @classmethod
    def load(cls, path: Path | Any) -> LearnedModel:
        with np.load(path, allow_pickle=False) as z:
            names = tuple(str(s) for s in z["feature_names"])
            if names != FEATURES:
                raise ValueError(
                    f"model {path} was trained on other features than shared.matching.features computes; retrain it"
                )
            return cls(
                version=str(z["version"]),
                feature_names=names,
                feature=z["feature"].astype(np.int64),
                threshold=z["threshold"].astype(np.float64),
                left=z["left"].astype(np.int64),
                right=z["right"].astype(np.int64),
                missing_left=z["missing_left"].astype(bool),
                leaf=z["leaf"].astype(bool),
                value=z["value"].astype(np.float64),
                mean=z["mean"].astype(np.float64),
                baseline=float(z["baseline"]),
                depth=int(z["depth"]),
                calib_x=z["calib_x"].astype(np.float64),
                calib_y=z["calib_y"].astype(np.float64),
                meta=json.loads(str(z["meta"])),
            )

    def __post_init__(self) -> None:
        # Flat node arrays (index = tree * nodes + node), leaves looping onto themselves, so
        # a walk is a fixed number of 1-D gathers with no test for "arrived".
        trees, size = self.feature.shape
        base = (np.arange(trees) * size)[:, None]
        own = base + np.arange(size)[None, :]
        flat = {
            "_f_feature": self.feature.ravel(),
            "_f_threshold": np.where(self.leaf, np.inf, self.threshold).ravel(),
            "_f_left": np.where(self.leaf, own, base + self.left).ravel(),
            "_f_right": np.where(self.leaf, own, base + self.right).ravel(),
            "_f_missing_left": (self.missing_left | self.leaf).ravel(),
            "_f_value": self.value.ravel(),
            "_f_mean": self.mean.ravel(),
            "_f_roots": base.ravel(),
        }
        for name, array in flat.items():
            object.__setattr__(self, name, array)

    def raw(
        self, x: NDArray[np.float64], explain: bool = False
    ) -> tuple[NDArray[np.float64], NDArray[np.float64] | None]:
        """Raw log odds of each row (and, with ``explain``, each feature's contribution to it).

        Every row walks every tree at once: one gather per level, ``depth`` levels.
        A split sends ``x <= threshold`` left and a missing value where training sent it.
        """
        n, width = x.shape
        flat_x = np.ascontiguousarray(x).ravel()
        offsets = (np.arange(n) * width)[:, None]
        node = np.broadcast_to(self._f_roots[None, :], (n, len(self._f_roots)))
        contrib = np.zeros(n * width) if explain else None
        for _ in range(self.depth):
            feat = self._f_feature[node]
            v = flat_x[offsets + feat]
            go_left = (v <= self._f_threshold[node]) | (np.isnan(v) & self._f_missing_left[node])
            nxt = np.where(go_left, self._f_left[node], self._f_right[node])
            if contrib is not None:
                # a leaf loops onto itself: its delta is 0
                delta = self._f_mean[nxt] - self._f_mean[node]
                contrib += np.bincount((offsets + feat).ravel(), weights=delta.ravel(), minlength=n * width)
            node = nxt
        out = self.baseline + self._f_value[node].sum(axis=1)
        return out, None if contrib is None else contrib.reshape(n, width)

    def raw_batched(self, x: NDArray[np.float64], rows: int = 1024) -> NDArray[np.float64]:
        """``raw`` of many rows, a block of ``rows`` at a time: the walk's (rows, trees)
        index arrays stay small enough for the cache, and memory flat however many rows."""
        if len(x) <= rows:
            return self.raw(x)[0]
        return np.concatenate([self.raw(x[i : i + rows])[0] for i in range(0, len(x), rows)])

    def _leaves(self, x: NDArray[np.float64], first: int, last: int) -> NDArray[np.float64]:
        """The leaf value each row reaches in trees ``first`` to ``last`` - 1, shape (rows, trees)."""
        n, width = x.shape
        flat_x = np.ascontiguousarray(x).ravel()
        offsets = (np.arange(n) * width)[:, None]
        roots = self._f_roots[first:last]
        node = np.broadcast_to(roots[None, :], (n, len(roots)))
        for _ in range(self.depth):
            v = flat_x[offsets + self._f_feature[node]]
            go_left = (v <= self._f_threshold[node]) | (np.isnan(v) & self._f_missing_left[node])
            node = np.where(go_left, self._f_left[node], self._f_right[node])
        return self._f_value[node]

    def raw_at_least(self, x: NDArray[np.float64], floor: float, rows: int = 1024) -> NDArray[np.float64]:
        """``raw`` of the rows whose probability may reach ``floor`` (rounded to 4 places, as
        scores are), ``-inf`` for the others; the rows kept get the very values of ``raw``.

        The first half of the trees is walked for every row; a row whose log odds so far,
        plus the largest leaf of every tree left, stays under ``floor`` cannot reach it, and
        only the others walk the rest (in the hub's dedup, about 5% of the pairs).
        """
        trees = len(self._f_roots)
        first = trees // 2
        leaf_max = np.where(self.leaf, self.value, -np.inf).max(axis=1)
        rest_max = float(leaf_max[first:].sum())
        out = np.full(len(x), -np.inf)
        for start in range(0, len(x), rows):
            block = x[start : start + rows]
            head = self._leaves(block, 0, first)
            bound = self.baseline + head.sum(axis=1) + rest_max + 1e-9
            alive = np.flatnonzero(self.probability(bound).round(4) >= floor)
            if len(alive):
                tail = self._leaves(block[alive], first, trees)
                values = np.ascontiguousarray(np.concatenate([head[alive], tail], axis=1))
                out[start + alive] = self.baseline + values.sum(axis=1)
        return out

    def probability(self, raw: NDArray[np.float64]) -> NDArray[np.float64]:
        """Calibrated probability of raw log odds (monotone, piecewise linear between knots)."""
        return np.interp(raw, self.calib_x, self.calib_y)


@lru_cache(maxsize=1)
def default_model() -> LearnedModel:
    """The shipped model (``shared/matching/matcher_model.npz``)."""
    ref = resources.files("shared.matching").joinpath(MODEL_FILE)
    with resources.as_file(ref) as path:
        return LearnedModel.load(path)


class LearnedMatcher(Matcher):
    """``Matcher`` whose score is the learned model's calibrated probability.

    One candidate set is scored at once (``score_set``): the features of the whole set, the
    trees over all of them.  ``compare`` is a set of one.
    """

    def __init__(
        self,
        params: MatchParams | None = None,
        frequencies: NameFrequencies | None = None,
        thresholds: Thresholds = Thresholds(),
        model: LearnedModel | None = None,
    ) -> None:
        super().__init__(params, frequencies, thresholds)
        self.model = model if model is not None else default_model()


    @property
    def version(self) -> str:
        return self.model.version

    def score_set(self, query: Person, people: Sequence[Person]) -> list[MatchResult]:
        """One result per person, in order, each with the features that carried it."""
        if not people:
            return []
        scores, _, described, x = self._scores(query, people)
        return self._results(range(len(people)), scores, described, x)

    def _scores(
        self, query: Person, people: Sequence[Person]
    ) -> tuple[NDArray[np.float64], NDArray[np.float64], list[tuple[list[str], str | None]], NDArray[np.float64]]:
        """(score, raw log odds, (matched_fields, hard_conflict), feature rows) of each person."""
        n = len(people)
        return self.score_pairs(
            [query, *people], np.zeros(n, dtype=np.int64), np.arange(1, n + 1, dtype=np.int64), np.zeros(n, dtype=np.int64)
        )

    def score_pairs(
        self,
        people: Sequence[Person],
        left: NDArray[np.int64],
        right: NDArray[np.int64],
        group: NDArray[np.int64],
        floor: float | None = None,
    ) -> tuple[NDArray[np.float64], NDArray[np.float64], list[tuple[list[str], str | None]], NDArray[np.float64]]:
        """Many pairs at once, ``people[left[i]]`` (the query of group ``group[i]``) against
        ``people[right[i]]``: (score, raw log odds, (matched_fields, hard_conflict), feature rows).

        What ``rank`` and ``score_set`` do for one query's set, for many sets together (the
        hub's dedup): the features in one matrix (``pair_features``), the trees over all rows.
        ``floor``: only the scores at or above it are wanted (the dedup's ``probable``): a
        row the trees show cannot reach it is scored no higher than the calibration's
        lowest value (``LearnedModel.raw_at_least``); every other score is the same.
        """
        n = len(left)
        own = [_features(p) for p in people]  # the FS view of each person, once
        fs = np.zeros((n, len(FS_FEATURES)))
        described: list[tuple[list[str], str | None]] = []
        parts = [0.0] * (len(FS_FEATURES) - 1)
        for i, (a, b) in enumerate(zip(left.tolist(), right.tolist(), strict=True)):
            parts[:] = [0.0] * (len(FS_FEATURES) - 1)
            total, fields, conflict = self._evidence(own[a], own[b], parts)
            fs[i, 0] = total
            fs[i, 1:] = parts
            described.append((fields, conflict))
        x = pair_features(people, left, right, group, self.frequencies, fs)
        raw = self.model.raw_batched(x) if floor is None else self.model.raw_at_least(x, floor)
        scores = self.model.probability(raw)
        # Campaign evidence (linked mothers, estimated dates) is among the trees' features
        # (``dob_estimated``, ``dob_est_gap``, ``same_mother``, ``mother_links``): those pairs
        # are scored by the trees like every other; twins of one mother stay capped below.
        # A hard conflict keeps the score below certain, as with the Fellegi-Sunter scorer,
        # except "twin" (same family name and birth date, another first name): the trees
        # were trained on twins and weigh that themselves (none of 345 held-out twins
        # reached certain without the cap, while 0.7% of duplicates did), so it stays a
        # hint for the reviewer on results under certain and is dropped above.
        capped = np.array([c is not None and c != "twin" for _, c in described], dtype=bool).reshape(n)
        scores = np.where(capped & (scores > self._cap), self._cap, scores).round(4)
        described = [
            (fields, None if c == "twin" and scores[i] >= self.thresholds.certain else c)
            for i, (fields, c) in enumerate(described)
        ]
        return scores, raw, described, x

    def _results(
        self,
        rows: Sequence[int],
        scores: NDArray[np.float64],
        described: list[tuple[list[str], str | None]],
        x: NDArray[np.float64],
    ) -> list[MatchResult]:
        """The results of ``rows``; the contributions computed here, for the rows a caller keeps
        that score at least ``possible`` (the ones a review item or a person may look at)."""
        t = self.thresholds
        shown = [i for i in rows if scores[i] >= t.possible]
        contrib = self.model.raw(x[shown], explain=True)[1] if shown else None
        at = {i: k for k, i in enumerate(shown)}
        names = self.model.feature_names
        out = []
        for i in rows:
            carried: tuple[tuple[str, float], ...] = ()
            if contrib is not None and i in at:
                row = contrib[at[i]]
                top = np.argsort(-np.abs(row))[:_TOP]
                carried = tuple((names[j], round(float(row[j]), 2)) for j in top if row[j] != 0.0)
            score = float(scores[i])
            band = (
                "certain"
                if score >= t.certain
                else "probable"
                if score >= t.probable
                else "possible"
                if score >= t.possible
                else None
            )
            fields, conflict = described[i]
            out.append(
                MatchResult(score=score, matched_fields=fields, band=band, hard_conflict=conflict, features=carried)
            )
        return out

    def compare(self, query: Person, candidate: Person) -> MatchResult:
        return self.score_set(query, [candidate])[0]

    def rank(
        self,
        query: Person,
        candidates: Iterable[tuple[K, Person]],
        limit: int = 10,
        min_score: float | None = None,
    ) -> list[tuple[K, MatchResult]]:
        floor = self.thresholds.possible if min_score is None else min_score
        listed = list(candidates)
        if not listed:
            return []
        scores, raw, described, x = self._scores(query, [p for _, p in listed])
        # Calibration is flat in places (isotonic): among equal scores the raw log odds order
        # the candidates, then the caller's order (most shared keys first; the sort is stable).
        order = sorted((i for i in range(len(listed)) if scores[i] >= floor), key=lambda i: (-scores[i], -raw[i]))
        kept = order[:limit]
        return [(listed[i][0], r) for i, r in zip(kept, self._results(kept, scores, described, x), strict=True)]


def matcher_of(kind: str, frequencies: NameFrequencies, thresholds: Thresholds = Thresholds()) -> Matcher:
    """The scorer a server uses (``MPI_MATCHER``): "learned" (default) or "fellegi_sunter"."""
    if kind == "fellegi_sunter":
        return Matcher(frequencies=frequencies, thresholds=thresholds)
    if kind != "learned":
        raise ValueError(f"unknown matcher {kind!r}")
    return LearnedMatcher(frequencies=frequencies, thresholds=thresholds)
