"""Comparison features of pairs of people, as one numpy matrix.

ONE function for every caller that scores (register, ``/mpi/match``, import, the hub's
dedup, FHIR ``$match``, the training script): ``pair_features(people, left, right, group)``
compares many (left, right) pairs at once, each in a query group (the set one query is
scored against), and returns a ``(pairs, len(FEATURES))`` float matrix, column ``j`` being
``FEATURES[j]``; ``features(query, candidates, frequencies)`` is one group of it (the
query against its candidate set).  Pure: no database, no HTTP.  Each person is prepared
once however many pairs hold it; string comparisons go through rapidfuzz's
``process.cpdist`` (one call per column for all the pairs), dates and codes through numpy.

Missing evidence is ``NaN`` (a birth date, a sex, a region, a phone absent on either side),
never a made-up value: the trees route missing values the way they learned to.

Columns, by group:

- names, for each of the four pairings ``ff`` (first/first), ``ll`` (last/last), ``fl``
  (query first/candidate last) and ``lf`` (query last/candidate first): Jaro-Winkler of the
  normalised names (``jw``), Jaro-Winkler of the phonetic keys (``jwp``), edit distance
  (``ed``, optimal string alignment, capped at 4), exact equality (``eq``), phonetic
  equality (``ph``), token overlap (``tok``: shared phonetic token keys over the smaller
  name's tokens, so "Mame Diarra" / "Diarra" overlap fully);
- the whole name: token-sort and token-set ratios, Jaro-Winkler of "first last" against
  "first last" and of the sorted phonetic tokens; ``name_tokens_q``/``_c`` (compound names);
- frequency: log10 share of each name in the registry (query and candidate sides, first and
  last) and of the full name (``NameFrequencies``; ``NaN`` without frequencies);
- birth date: ``dob_missing_q``/``_c``, ``dob_exact``, ``dob_year_diff`` (signed, query minus
  candidate), ``dob_abs_days``, ``dob_same_month``, ``dob_same_day``, ``dob_dm_swapped``
  (03/11 against 11/03), ``dob_placeholder_q``/``_c`` (1 January, 1 July), ``age_q``;
- ``sex_eq``, ``region_eq``, ``phone_eq``, ``ext_eq`` (a shared/differing external id);
- the Fellegi-Sunter evidence of the same pair (``fs_*``, passed in by the caller, which
  computes it anyway for ``matched_fields``) and the candidate's place in its set:
  ``set_size``, ``set_rank`` (0 = best FS evidence), ``set_gap`` (own evidence minus the
  best other candidate's; ``+40`` alone in its set), ``set_close`` (how many candidates have
  near-equal names).

Appended columns (``EXTRA_FEATURES``, each computed by its own helper below, after the rest):

- ``registry_size``: log10 of the registry's identities (``NameFrequencies.total``; ``NaN``
  without frequencies): the same evidence means less among a million than among 20,000;
- campaign evidence (issue 22, ``_campaign``): ``dob_estimated`` (how many of the two dates
  are estimates: 0, 1, 2), ``dob_est_gap`` (days apart over the tolerance of the older date,
  ``family.birth_date_tolerance_days``: months for an infant, two years for an adult; ``NaN``
  unless a date is estimated). An estimated date never agrees exactly: ``dob_exact``,
  ``dob_same_month``, ``dob_same_day`` and ``dob_dm_swapped`` are ``NaN`` for such pairs;
  ``same_mother`` (1 the same linked mother, 0 two different ones, ``NaN`` unless both are
  linked) and ``mother_links`` (how many of the two sides have a mother linked);
- ``phone_holders``: how many candidates of the set hold the query's phone (a household
  phone: mother and children share it; ``NaN`` without a phone). The registry keeps no
  count of holders, so the set is the measure.

Adding a column means appending its name to ``FEATURES``, computing it here and retraining
(``scripts/train_matcher.py``): the model file names the features it was trained on and
``LearnedModel`` refuses a file whose list differs.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from numpy.typing import NDArray
from rapidfuzz import fuzz, process
from rapidfuzz.distance import OSA, JaroWinkler

from shared.matching.family import birth_date_tolerance_days, mother_agreement
from shared.matching.frequencies import NameFrequencies
from shared.matching.model import Person
from shared.matching.normalize import normalize_name, squeeze_doubles
from shared.matching.phonetic import phonetic_key, token_key
from shared.matching.score import is_placeholder_date

__all__ = ["EXTRA_FEATURES", "FEATURES", "FS_FEATURES", "features", "is_placeholder_date", "pair_features"]

_PAIRINGS = ("ff", "ll", "fl", "lf")
_NAME_COLS = ("jw", "jwp", "ed", "eq", "ph", "tok")
FS_FEATURES: tuple[str, ...] = (
    "fs_total",
    "fs_first",
    "fs_last",
    "fs_dob",
    "fs_gender",
    "fs_region",
    "fs_phone",
    "fs_ext",
)
EXTRA_FEATURES: tuple[str, ...] = (
    "registry_size",
    "dob_estimated",
    "dob_est_gap",
    "same_mother",
    "mother_links",
    "phone_holders",
)
FEATURES: tuple[str, ...] = (
    *(f"{p}_{c}" for p in _PAIRINGS for c in _NAME_COLS),
    "full_sort",
    "full_set",
    "full_jw",
    "full_phon_jw",
    "name_tokens_q",
    "name_tokens_c",
    "freq_first_q",
    "freq_first_c",
    "freq_last_q",
    "freq_last_c",
    "freq_full_c",
    "dob_missing_q",
    "dob_missing_c",
    "dob_exact",
    "dob_year_diff",
    "dob_abs_days",
    "dob_same_month",
    "dob_same_day",
    "dob_dm_swapped",
    "dob_placeholder_q",
    "dob_placeholder_c",
    "age_q",
    "sex_eq",
    "region_eq",
    "phone_eq",
    "ext_eq",
    *FS_FEATURES,
    "set_size",
    "set_rank",
    "set_gap",
    "set_close",
    *EXTRA_FEATURES,
)
_COL = {name: j for j, name in enumerate(FEATURES)}
_NAN = float("nan")
_ALONE_GAP = 40.0  # set_gap of a candidate alone in its set: far ahead of "nobody"
_TODAY_ORDINAL = datetime.date(2026, 1, 1).toordinal()  # fixed: a feature must not drift with the clock


@dataclass(frozen=True, slots=True)
class _N:
    norm: str
    flat: str  # no spaces, doubled letters squeezed
    phon: str
    keys: frozenset[str]
    sorted_phon: str
    tokens: int  # how many tokens
    one_key: str | None  # the token key of a one-token name


@lru_cache(maxsize=262_144)
def _n(raw: str) -> _N:
    norm = normalize_name(raw)
    keys = [token_key(t) for t in norm.split()]
    return _N(
        norm=norm,
        flat=squeeze_doubles(norm.replace(" ", "")),
        phon=phonetic_key(raw),
        keys=frozenset(keys),
        sorted_phon=" ".join(sorted(keys)),
        tokens=len(keys),
        one_key=keys[0] if len(keys) == 1 else None,
    )


@lru_cache(maxsize=65_536)
def _phone(phone: str | None) -> str | None:
    if not phone:
        return None
    digits = "".join(ch for ch in phone if ch.isdigit())
    return digits[-9:] if len(digits) >= 7 else None


def _sex(g: str | None) -> str | None:
    g = g.upper() if g else None
    return g if g in ("M", "F") else None


def _log_share(share: float, total: int) -> float:
    return math.log10(max(share, 1.0 / max(total, 1)))


def _overlap(a: frozenset[str], b: frozenset[str]) -> float:
    if not a or not b:
        return _NAN
    return len(a & b) / min(len(a), len(b))


def features(
    query: Person,
    candidates: Sequence[Person],
    frequencies: NameFrequencies | None = None,
    fs_parts: NDArray[np.float64] | None = None,
) -> NDArray[np.float64]:
    """The feature matrix of ``query`` against every candidate (rows in ``candidates`` order).

    ``fs_parts``: the Fellegi-Sunter evidence of each pair, shape ``(n, len(FS_FEATURES))``
    (total first, then the weighted bits of each comparison), as ``Matcher.evidence_matrix``
    gives it; ``NaN`` columns without it.  One query group of ``pair_features``.
    """
    n = len(candidates)
    if n == 0:
        return np.full((0, len(FEATURES)), np.nan, dtype=np.float64)
    return pair_features(
        [query, *candidates], np.zeros(n, dtype=np.int64), np.arange(1, n + 1, dtype=np.int64),
        np.zeros(n, dtype=np.int64), frequencies, fs_parts,
    )


@dataclass(frozen=True, slots=True)
class _People:
    """What the columns read of each person, once per person however many pairs it is in.

    Strings and codes are object arrays (``None``: missing): equality is numpy's elementwise
    ``==`` over the pairs.
    """

    first: list[_N]
    last: list[_N]
    blank: NDArray[np.bool_]  # (people, 2): first, last name normalises to nothing
    flat: NDArray[np.object_]  # (people, 2): first and last name, flat spelling
    phon: NDArray[np.object_]
    one_key: NDArray[np.object_]  # the token key of a one-token name, None for 0 or several tokens
    full: NDArray[np.object_]  # "first last", normalised
    full_phon: NDArray[np.object_]  # every phonetic token key, sorted
    tokens: NDArray[np.float64]
    dob: NDArray[np.float64]  # (people, 5): known, year, month, day, ordinal
    placeholder: NDArray[np.float64]
    age: NDArray[np.float64]
    codes: NDArray[np.object_]  # (people, 3): sex, region, phone
    has_ids: NDArray[np.bool_]


def _people(people: Sequence[Person]) -> _People:
    first = [_n(p.first_name) for p in people]
    last = [_n(p.last_name) for p in people]
    both = list(zip(first, last, strict=True))
    n = len(people)
    dobs = [p.date_of_birth for p in people]
    return _People(
        first=first,
        last=last,
        blank=np.array([(not a.flat, not b.flat) for a, b in both], dtype=bool).reshape(n, 2),
        flat=_objects([(a.flat, b.flat) for a, b in both], n, 2),
        phon=_objects([(a.phon, b.phon) for a, b in both], n, 2),
        one_key=_objects([(a.one_key, b.one_key) for a, b in both], n, 2),
        full=_objects([f"{a.norm} {b.norm}" for a, b in both], n),
        full_phon=_objects([" ".join(sorted(a.keys | b.keys)) for a, b in both], n),
        tokens=np.array([a.tokens + b.tokens for a, b in both], dtype=np.float64),
        dob=np.array(
            [(1.0, d.year, d.month, d.day, d.toordinal()) if d is not None else (0.0, 0.0, 0.0, 0.0, 0.0) for d in dobs],
            dtype=np.float64,
        ).reshape(n, 5),
        placeholder=np.array([_NAN if d is None else float(is_placeholder_date(d)) for d in dobs], dtype=np.float64),
        age=np.array([_NAN if d is None else (_TODAY_ORDINAL - d.toordinal()) / 365.25 for d in dobs],
                     dtype=np.float64),
        codes=_objects([(_sex(p.gender), _region(p.region_code), _phone(p.phone_number)) for p in people], n, 3),
        has_ids=np.array([bool(p.external_ids) for p in people], dtype=bool),
    )


def _objects(values: list[Any], *shape: int) -> NDArray[np.object_]:
    out = np.empty(len(values), dtype=object)
    out[:] = values if len(shape) == 1 else [None] * len(values)
    if len(shape) == 1:
        return out
    table = np.empty(shape, dtype=object)
    for j in range(shape[1]):
        table[:, j] = [v[j] for v in values]
    return table


def _region(code: str | None) -> str | None:
    return code.strip().upper() if code and code.strip() else None


def _equal(q: NDArray[np.object_], c: NDArray[np.object_]) -> NDArray[np.float64]:
    """1/0 where both sides are known, NaN where either is missing."""
    known = (q != None) & (c != None)  # noqa: E711 (elementwise)
    return np.where(known, q == c, np.nan)


def pair_features(
    people: Sequence[Person],
    left: NDArray[np.int64],
    right: NDArray[np.int64],
    group: NDArray[np.int64],
    frequencies: NameFrequencies | None = None,
    fs_parts: NDArray[np.float64] | None = None,
) -> NDArray[np.float64]:
    """The feature matrix of many pairs at once: row ``i`` compares ``people[left[i]]`` (the
    query) with ``people[right[i]]`` (its candidate).

    ``group[i]`` names the query set row ``i`` belongs to: the set-level columns (``set_size``,
    ``set_rank``, ``set_gap``, ``set_close``) are computed within each group, the rows of a
    group in their order here standing for the candidates' order.  Each person's names,
    dates and codes are prepared once however many pairs hold it; strings are compared with
    ``process.cpdist`` over all pairs at once, the rest with numpy.  ``features(query,
    candidates)`` is one group of this.
    """
    n = len(left)
    x = np.full((n, len(FEATURES)), np.nan, dtype=np.float64)
    if n == 0:
        return x
    left = np.asarray(left, dtype=np.int64)
    right = np.asarray(right, dtype=np.int64)
    group = np.asarray(group, dtype=np.int64)
    pp = _people(people)
    flats, phons = pp.flat, pp.phon

    def col(name: str) -> NDArray[np.float64]:
        return x[:, _COL[name]]

    for pairing, qi, ci in (("ff", 0, 0), ("ll", 1, 1), ("fl", 0, 1), ("lf", 1, 0)):
        qs, cs = flats[left, qi], flats[right, ci]
        x[:, _COL[f"{pairing}_jw"]] = process.cpdist(qs, cs, scorer=JaroWinkler.normalized_similarity)
        x[:, _COL[f"{pairing}_jwp"]] = process.cpdist(
            phons[left, qi], phons[right, ci], scorer=JaroWinkler.normalized_similarity
        )
        x[:, _COL[f"{pairing}_ed"]] = np.minimum(process.cpdist(qs, cs, scorer=OSA.distance), 4)
        x[:, _COL[f"{pairing}_eq"]] = qs == cs
        x[:, _COL[f"{pairing}_ph"]] = phons[left, qi] == phons[right, ci]
        kq, kc = pp.one_key[left, qi], pp.one_key[right, ci]
        tok = x[:, _COL[f"{pairing}_tok"]]
        single = (kq != None) & (kc != None)  # noqa: E711 (elementwise)
        tok[single] = kq[single] == kc[single]
        names_q, names_c = (pp.first, pp.last)[qi], (pp.first, pp.last)[ci]
        for i in np.flatnonzero(~single):
            tok[i] = _overlap(names_q[left[i]].keys, names_c[right[i]].keys)
        empty = pp.blank[left, qi] | pp.blank[right, ci]
        if empty.any():
            for c in _NAME_COLS:
                x[empty, _COL[f"{pairing}_{c}"]] = np.nan

    q_full, c_full = pp.full[left], pp.full[right]
    col("full_sort")[:] = process.cpdist(q_full, c_full, scorer=fuzz.token_sort_ratio) / 100.0
    col("full_set")[:] = process.cpdist(q_full, c_full, scorer=fuzz.token_set_ratio) / 100.0
    col("full_jw")[:] = process.cpdist(q_full, c_full, scorer=JaroWinkler.normalized_similarity)
    col("full_phon_jw")[:] = process.cpdist(pp.full_phon[left], pp.full_phon[right],
                                            scorer=JaroWinkler.normalized_similarity)
    col("name_tokens_q")[:] = pp.tokens[left]
    col("name_tokens_c")[:] = pp.tokens[right]

    freq = frequencies
    if freq is not None and freq.total >= 100:
        t = freq.total
        share_f = np.array([_log_share(freq.first_name_share(a.norm), t) for a in pp.first], dtype=np.float64)
        share_l = np.array([_log_share(freq.last_name_share(b.norm), t) for b in pp.last], dtype=np.float64)
        full_people = np.array(
            [math.log10(max(freq.full_name_people(a.norm, b.norm), 1)) for a, b in zip(pp.first, pp.last, strict=True)],
            dtype=np.float64,
        )
        col("freq_first_q")[:] = share_f[left]
        col("freq_last_q")[:] = share_l[left]
        col("freq_first_c")[:] = share_f[right]
        col("freq_last_c")[:] = share_l[right]
        col("freq_full_c")[:] = full_people[right]

    _dates(x, pp, left, right)

    codes_q, codes_c = pp.codes[left], pp.codes[right]
    for j, name in enumerate(("sex_eq", "region_eq", "phone_eq")):
        col(name)[:] = _equal(codes_q[:, j], codes_c[:, j])
    if pp.has_ids.any():
        ext = col("ext_eq")
        for i in np.flatnonzero(pp.has_ids[left]):
            ext[i] = _ext(people[left[i]].external_ids, people[right[i]].external_ids)

    _set_columns(x, group, fs_parts)
    _registry_size(x, frequencies)
    _campaign(x, people, left, right)
    _phone_holders(x, group)
    return x


def _set_columns(x: NDArray[np.float64], group: NDArray[np.int64], fs_parts: NDArray[np.float64] | None) -> None:
    """Each row's place in its query group: size, rank and gap by FS evidence, near-equal names."""
    n = len(group)
    if n and group[0] == group[-1] and not group.any():  # one query's set (register, match)
        grp, size, labels = group, np.array([n]), np.zeros(1)
    else:
        labels, grp, size = np.unique(group, return_inverse=True, return_counts=True)
    start = np.concatenate(([0], np.cumsum(size)[:-1]))
    if fs_parts is not None:
        x[:, _COL[FS_FEATURES[0]] : _COL[FS_FEATURES[-1]] + 1] = fs_parts
        total = fs_parts[:, 0]
        # per group, a stable sort on -total: the rows of a group in their order break ties
        order = np.lexsort((np.arange(n), -total, grp))
        rank = np.empty(n)
        rank[order] = np.arange(n) - start[grp[order]]
        x[:, _COL["set_rank"]] = rank
        best = total[order[start]]
        second = np.where(size > 1, total[order[np.minimum(start + 1, n - 1)]], np.nan)
        is_best = rank == 0
        others_best = np.where(is_best, second[grp], best[grp])
        gap = np.clip(total - others_best, -_ALONE_GAP, _ALONE_GAP)
        x[:, _COL["set_gap"]] = np.where(size[grp] == 1, _ALONE_GAP, gap)
    x[:, _COL["set_size"]] = size[grp]
    close = (x[:, _COL["full_sort"]] >= 0.85) | (x[:, _COL["full_phon_jw"]] >= 0.95)
    x[:, _COL["set_close"]] = np.bincount(grp, weights=close, minlength=len(labels))[grp]


def _registry_size(x: NDArray[np.float64], frequencies: NameFrequencies | None) -> None:
    if frequencies is not None and frequencies.total >= 100:
        x[:, _COL["registry_size"]] = math.log10(frequencies.total)


def _campaign(x: NDArray[np.float64], people: Sequence[Person], left: NDArray[np.int64],
              right: NDArray[np.int64]) -> None:
    """Estimated birth dates and linked mothers (issue 22); runs after ``_dates``, whose exact columns it clears."""
    est = np.array([p.date_of_birth_estimated for p in people], dtype=bool)
    either = est[left] | est[right]
    x[:, _COL["dob_estimated"]] = est[left].astype(np.float64) + est[right]
    if either.any():
        today = datetime.date.today()  # the tolerance grows with the age, as the scorers' (family)
        gaps = x[:, _COL["dob_est_gap"]]
        for i in np.flatnonzero(either):
            q, d = people[left[i]].date_of_birth, people[right[i]].date_of_birth
            if q is not None and d is not None:
                gaps[i] = abs((q - d).days) / birth_date_tolerance_days(min(q, d), today)
        for name in ("dob_exact", "dob_same_month", "dob_same_day", "dob_dm_swapped"):
            x[either, _COL[name]] = np.nan
    mothers = [p.mother_mpi_id for p in people]
    linked = np.array([bool(m) for m in mothers], dtype=bool)
    x[:, _COL["mother_links"]] = linked[left].astype(np.float64) + linked[right]
    same = x[:, _COL["same_mother"]]
    for i in np.flatnonzero(linked[left]):
        agreement = mother_agreement(mothers[left[i]], mothers[right[i]])
        same[i] = _NAN if agreement is None else float(agreement)


def _phone_holders(x: NDArray[np.float64], group: NDArray[np.int64]) -> None:
    """Candidates of the query's set holding the query's phone (from ``phone_eq``); NaN where no pair of the set knows."""
    eq = x[:, _COL["phone_eq"]]
    known = ~np.isnan(eq)
    if not known.any():
        return
    _, grp = np.unique(group, return_inverse=True)
    holders = np.bincount(grp, weights=np.where(known, eq, 0.0))
    any_known = np.bincount(grp, weights=known.astype(np.float64)) > 0
    x[:, _COL["phone_holders"]] = np.where(any_known[grp], holders[grp], np.nan)


def _ext(a: object, b: object) -> float:
    from collections.abc import Mapping

    assert isinstance(a, Mapping) and isinstance(b, Mapping)
    if not b:
        return _NAN
    shared = [k for k in a if k in b and a[k] and b[k]]
    if not shared:
        return _NAN
    return float(any(a[k] == b[k] for k in shared))


def _dates(x: NDArray[np.float64], pp: _People, left: NDArray[np.int64], right: NDArray[np.int64]) -> None:
    q, c = pp.dob[left], pp.dob[right]
    kq, kc = q[:, 0] == 1.0, c[:, 0] == 1.0
    both = kq & kc
    x[:, _COL["dob_missing_q"]] = ~kq
    x[:, _COL["dob_missing_c"]] = ~kc
    x[:, _COL["dob_placeholder_c"]] = pp.placeholder[right]
    x[:, _COL["dob_placeholder_q"]] = pp.placeholder[left]
    x[:, _COL["age_q"]] = pp.age[left]
    yq, mq, dq, oq = q[:, 1], q[:, 2], q[:, 3], q[:, 4]
    y, m, dd, o = c[:, 1], c[:, 2], c[:, 3], c[:, 4]
    nan = np.nan
    x[:, _COL["dob_exact"]] = np.where(both, (y == yq) & (m == mq) & (dd == dq), nan)
    x[:, _COL["dob_year_diff"]] = np.where(both, yq - y, nan)
    x[:, _COL["dob_abs_days"]] = np.where(both, np.abs(oq - o), nan)
    x[:, _COL["dob_same_month"]] = np.where(both, m == mq, nan)
    x[:, _COL["dob_same_day"]] = np.where(both, dd == dq, nan)
    swapped = (m == dq) & (dd == mq) & (m != dd)
    x[:, _COL["dob_dm_swapped"]] = np.where(both, swapped, nan)
