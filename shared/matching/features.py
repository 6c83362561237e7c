"""Comparison features of one query against a whole candidate set, as one numpy matrix.

ONE function for every caller that scores (register, ``/mpi/match``, import, the hub's
dedup, FHIR ``$match``, the training script): ``features(query, candidates, frequencies)``
returns a ``(len(candidates), len(FEATURES))`` float matrix, column ``j`` being
``FEATURES[j]``.  Pure: no database, no HTTP.  String comparisons go through rapidfuzz's
``process.cpdist`` (one call per column for the whole set), dates and codes through numpy.

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

__all__ = ["EXTRA_FEATURES", "FEATURES", "FS_FEATURES", "features", "is_placeholder_date"]

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
    gives it; ``NaN`` columns without it.
    """
    n = len(candidates)
    x = np.full((n, len(FEATURES)), np.nan, dtype=np.float64)
    if n == 0:
        return x
    qf, ql = _n(query.first_name), _n(query.last_name)
    cf = [_n(c.first_name) for c in candidates]
    cl = [_n(c.last_name) for c in candidates]

    def col(name: str) -> NDArray[np.float64]:
        return x[:, _COL[name]]

    for pairing, qn, cn in (("ff", qf, cf), ("ll", ql, cl), ("fl", qf, cl), ("lf", ql, cf)):
        flats = [c.flat for c in cn]
        qs = [qn.flat] * n
        x[:, _COL[f"{pairing}_jw"]] = process.cpdist(qs, flats, scorer=JaroWinkler.normalized_similarity)
        x[:, _COL[f"{pairing}_jwp"]] = process.cpdist(
            [qn.phon] * n, [c.phon for c in cn], scorer=JaroWinkler.normalized_similarity
        )
        x[:, _COL[f"{pairing}_ed"]] = np.minimum(process.cpdist(qs, flats, scorer=OSA.distance), 4)
        x[:, _COL[f"{pairing}_eq"]] = [float(qn.flat == c.flat) for c in cn]
        x[:, _COL[f"{pairing}_ph"]] = [float(qn.phon == c.phon) for c in cn]
        x[:, _COL[f"{pairing}_tok"]] = [_overlap(qn.keys, c.keys) for c in cn]
        if not qn.flat:
            for c in _NAME_COLS:
                x[:, _COL[f"{pairing}_{c}"]] = np.nan
        else:
            empty = np.array([not c.flat for c in cn])
            if empty.any():
                for c in _NAME_COLS:
                    x[empty, _COL[f"{pairing}_{c}"]] = np.nan

    q_full = f"{qf.norm} {ql.norm}"
    c_full = [f"{a.norm} {b.norm}" for a, b in zip(cf, cl, strict=True)]
    col("full_sort")[:] = process.cpdist([q_full] * n, c_full, scorer=fuzz.token_sort_ratio) / 100.0
    col("full_set")[:] = process.cpdist([q_full] * n, c_full, scorer=fuzz.token_set_ratio) / 100.0
    col("full_jw")[:] = process.cpdist([q_full] * n, c_full, scorer=JaroWinkler.normalized_similarity)
    q_phon = " ".join(sorted(qf.keys | ql.keys))
    c_phon = [" ".join(sorted(a.keys | b.keys)) for a, b in zip(cf, cl, strict=True)]
    col("full_phon_jw")[:] = process.cpdist([q_phon] * n, c_phon, scorer=JaroWinkler.normalized_similarity)
    col("name_tokens_q")[:] = len(qf.norm.split()) + len(ql.norm.split())
    col("name_tokens_c")[:] = [len(a.norm.split()) + len(b.norm.split()) for a, b in zip(cf, cl, strict=True)]

    freq = frequencies
    if freq is not None and freq.total >= 100:
        t = freq.total
        col("freq_first_q")[:] = _log_share(freq.first_name_share(qf.norm), t)
        col("freq_last_q")[:] = _log_share(freq.last_name_share(ql.norm), t)
        col("freq_first_c")[:] = [_log_share(freq.first_name_share(a.norm), t) for a in cf]
        col("freq_last_c")[:] = [_log_share(freq.last_name_share(b.norm), t) for b in cl]
        col("freq_full_c")[:] = [math.log10(max(freq.full_name_people(a.norm, b.norm), 1)) for a, b in zip(cf, cl, strict=True)]

    _dates(x, query.date_of_birth, [c.date_of_birth for c in candidates])

    qs_ = _sex(query.gender)
    if qs_ is not None:
        col("sex_eq")[:] = [_NAN if (s := _sex(c.gender)) is None else float(s == qs_) for c in candidates]
    qr = query.region_code.strip().upper() if query.region_code else None
    if qr:
        col("region_eq")[:] = [
            float(c.region_code.strip().upper() == qr) if c.region_code and c.region_code.strip() else _NAN
            for c in candidates
        ]
    qp = _phone(query.phone_number)
    if qp is not None:
        col("phone_eq")[:] = [_NAN if (p := _phone(c.phone_number)) is None else float(p == qp) for c in candidates]
    if query.external_ids:
        col("ext_eq")[:] = [_ext(query.external_ids, c.external_ids) for c in candidates]

    if fs_parts is not None:
        x[:, _COL[FS_FEATURES[0]] : _COL[FS_FEATURES[-1]] + 1] = fs_parts
        total = fs_parts[:, 0]
        order = np.argsort(-total, kind="stable")
        rank = np.empty(n)
        rank[order] = np.arange(n)
        col("set_rank")[:] = rank
        if n == 1:
            col("set_gap")[:] = _ALONE_GAP
        else:
            best, second = total[order[0]], total[order[1]]
            others_best = np.where(np.arange(n) == order[0], second, best)
            col("set_gap")[:] = np.clip(total - others_best, -_ALONE_GAP, _ALONE_GAP)
    col("set_size")[:] = n
    close = (x[:, _COL["full_sort"]] >= 0.85) | (x[:, _COL["full_phon_jw"]] >= 0.95)
    col("set_close")[:] = int(close.sum())
    _registry_size(x, frequencies)
    _campaign(x, query, candidates)
    _phone_holders(x)
    return x


def _registry_size(x: NDArray[np.float64], frequencies: NameFrequencies | None) -> None:
    if frequencies is not None and frequencies.total >= 100:
        x[:, _COL["registry_size"]] = math.log10(frequencies.total)


def _campaign(x: NDArray[np.float64], query: Person, candidates: Sequence[Person]) -> None:
    """Estimated birth dates and linked mothers (issue 22); runs after ``_dates``, whose exact columns it clears."""
    q_est = query.date_of_birth_estimated
    c_est = np.array([c.date_of_birth_estimated for c in candidates], dtype=bool)
    x[:, _COL["dob_estimated"]] = float(q_est) + c_est
    either = c_est | q_est
    q = query.date_of_birth
    if either.any() and q is not None:
        today = datetime.date.today()  # the tolerance grows with the age, as the scorers' (family)
        gaps = np.full(len(candidates), np.nan)
        for i, c in enumerate(candidates):
            d = c.date_of_birth
            if either[i] and d is not None:
                gaps[i] = abs((q - d).days) / birth_date_tolerance_days(min(q, d), today)
        x[:, _COL["dob_est_gap"]] = gaps
    if either.any():
        for name in ("dob_exact", "dob_same_month", "dob_same_day", "dob_dm_swapped"):
            x[either, _COL[name]] = np.nan
    qm = query.mother_mpi_id
    mothers = [c.mother_mpi_id for c in candidates]
    x[:, _COL["mother_links"]] = [float(bool(qm)) + bool(m) for m in mothers]
    if qm:
        x[:, _COL["same_mother"]] = [_NAN if (a := mother_agreement(qm, m)) is None else float(a) for m in mothers]


def _phone_holders(x: NDArray[np.float64]) -> None:
    """Candidates of the set holding the query's phone (from ``phone_eq``)."""
    eq = x[:, _COL["phone_eq"]]
    if not np.isnan(eq).all():
        x[:, _COL["phone_holders"]] = float(np.nansum(eq))


def _ext(a: object, b: object) -> float:
    from collections.abc import Mapping

    assert isinstance(a, Mapping) and isinstance(b, Mapping)
    if not b:
        return _NAN
    shared = [k for k in a if k in b and a[k] and b[k]]
    if not shared:
        return _NAN
    return float(any(a[k] == b[k] for k in shared))


def _dates(x: NDArray[np.float64], q: datetime.date | None, cands: Sequence[datetime.date | None]) -> None:
    n = len(cands)
    known = np.array([d is not None for d in cands])
    x[:, _COL["dob_missing_q"]] = float(q is None)
    x[:, _COL["dob_missing_c"]] = (~known).astype(np.float64)
    x[:, _COL["dob_placeholder_c"]] = [_NAN if d is None else float(is_placeholder_date(d)) for d in cands]
    if q is None:
        return
    x[:, _COL["dob_placeholder_q"]] = float(is_placeholder_date(q))
    x[:, _COL["age_q"]] = (_TODAY_ORDINAL - q.toordinal()) / 365.25
    if not known.any():
        return
    y = np.array([d.year if d is not None else 0 for d in cands], dtype=np.float64)
    m = np.array([d.month if d is not None else 0 for d in cands], dtype=np.float64)
    dd = np.array([d.day if d is not None else 0 for d in cands], dtype=np.float64)
    o = np.array([d.toordinal() if d is not None else 0 for d in cands], dtype=np.float64)
    nan = np.full(n, np.nan)
    x[:, _COL["dob_exact"]] = np.where(known, (y == q.year) & (m == q.month) & (dd == q.day), nan)
    x[:, _COL["dob_year_diff"]] = np.where(known, q.year - y, nan)
    x[:, _COL["dob_abs_days"]] = np.where(known, np.abs(q.toordinal() - o), nan)
    x[:, _COL["dob_same_month"]] = np.where(known, m == q.month, nan)
    x[:, _COL["dob_same_day"]] = np.where(known, dd == q.day, nan)
    swapped = (m == q.day) & (dd == q.month) & (m != dd)
    x[:, _COL["dob_dm_swapped"]] = np.where(known, swapped, nan)
