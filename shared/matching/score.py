"""Pairwise scoring: Fellegi-Sunter evidence between two ``Person``s, turned into a calibrated probability.

Owns: comparison levels (rapidfuzz Jaro-Winkler graded, phonetic, compound-name partial
agreement, birth-date levels including 1 January / 1 July placeholders), the name-frequency
adjustment (``NameFrequencies``, in ``frequencies``), hard conflicts, bands and
candidate ranking.

``MatchResult.matched_fields`` vocabulary (agreement only; disagreement is never listed):

- ``first_name`` / ``last_name``: same name once normalised (case, accents, apostrophes,
  spaces, doubled letters)
- ``first_name_phonetic`` / ``last_name_phonetic``: same West African phonetic key or known
  variant (Ousmane/Usman, Fatou/Fatoumata)
- ``first_name_fuzzy`` / ``last_name_fuzzy``: close spelling (Jaro-Winkler) or one compound
  name contained in the other (Mame Diarra / Diarra); two names that are each common in the
  registry (Amadou / Mamadou, Kane / Koné) are different names, not close spellings
- ``names_swapped``: the names agree only with first and last name crossed over
- ``date_of_birth``: same date, not a placeholder
- ``date_of_birth_day_month_swapped``: 03/11 against 11/03 of the same year
- ``date_of_birth_year_off_by_one``: same day and month, years one apart
- ``birth_year``: same year only (including placeholder dates clerks use when only the
  year is known: 1 January and 1 July)
- ``date_of_birth_estimated``: one date at least is an estimate and the two are within its
  tolerance (``family.estimated_dob_agreement``: months for an infant, two years for an adult);
  an estimated date never counts as the same date
- ``mother``: the same linked mother (two different linked mothers weigh against)
- ``gender``, ``region_code``, ``phone_number``: equal
- ``dhis2_uid``: same DHIS2 UID; ``external_id``: another shared external identifier

Hard conflicts (``MatchResult.hard_conflict``), which keep the score below ``certain``:
``dhis2_uid`` (two different DHIS2 UIDs), ``sex_and_birth_date`` (known sexes differ and the
birth dates are not equal), ``twin`` (same family name and exact birth date, other first name;
``twin_same_mother``: the same linked mother and birth date, another sex or first name,
``family.twins``, which every scorer caps, the learned one too).
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, TypeVar

from rapidfuzz.distance import OSA, JaroWinkler

from shared.matching.family import (
    MOTHER_DIFFERENT_BITS,
    MOTHER_SAME_BITS,
    estimated_dob_agreement,
    mother_agreement,
    same_child_bits,
    twins,
)
from shared.matching.frequencies import NameFrequencies
from shared.matching.model import COMPARISONS, MatchParams, Person, default_params
from shared.matching.normalize import normalize_name, squeeze_doubles
from shared.matching.phonetic import phonetic_key, token_key

__all__ = [
    "MatchResult",
    "Matcher",
    "NameFrequencies",
    "Thresholds",
    "comparison_vector",
    "evidence_detail",
    "is_placeholder_date",
]

K = TypeVar("K")

# Name levels (see model.LEVELS)
N_EXACT, N_PHONETIC, N_FUZZY_HIGH, N_PARTIAL, N_FUZZY_LOW, N_ELSE = range(6)
# Date-of-birth levels
(
    D_EXACT,
    D_SWAP,
    D_YEAR_OFF1,
    D_PLACEHOLDER_SAME,
    D_SAME_MONTH,
    D_YEAR_ONLY,
    D_SAME_YEAR,
    D_NEAR_YEAR,
    D_ELSE,
) = range(9)

# An estimated date against another date (``family.estimated_dob_agreement``): never exact.
_ESTIMATED_LEVEL = {"close": D_SAME_MONTH, "within": D_YEAR_ONLY, "near": D_NEAR_YEAR, "far": D_ELSE}
# Dates a child's two records may carry: the same, a slip, or estimates within their tolerance.
_CLOSE_DATE_LEVELS = frozenset((D_EXACT, D_SWAP, D_PLACEHOLDER_SAME, D_SAME_MONTH, D_YEAR_ONLY))
_SAME_YEAR_LEVELS = frozenset((D_EXACT, D_SWAP, D_SAME_MONTH, D_PLACEHOLDER_SAME, D_YEAR_ONLY, D_SAME_YEAR))
# Region and birth-year frequencies refine weaker evidence than names do: a tighter bound.
_TF_CAP_CONTEXT = 2.0
_CLOSE_LEVELS = frozenset((N_FUZZY_HIGH, N_FUZZY_LOW))  # spelling closeness only
JW_HIGH = 0.92
JW_LOW = 0.80
DHIS2 = "dhis2_uid"

_FIELD_OF_NAME_LEVEL = {
    N_EXACT: "",
    N_PHONETIC: "_phonetic",
    N_FUZZY_HIGH: "_fuzzy",
    N_PARTIAL: "_fuzzy",
    N_FUZZY_LOW: "_fuzzy",
}
_FIELD_OF_DOB_LEVEL = {
    D_EXACT: "date_of_birth",
    D_SWAP: "date_of_birth_day_month_swapped",
    D_YEAR_OFF1: "date_of_birth_year_off_by_one",
    D_SAME_MONTH: "birth_year",
    D_PLACEHOLDER_SAME: "birth_year",
    D_YEAR_ONLY: "birth_year",
    D_SAME_YEAR: "birth_year",
}
_I_FIRST, _I_LAST, _I_DOB, _I_GENDER, _I_REGION, _I_PHONE, _I_EXT = range(7)
# The hot path indexes comparisons by position; fail at import if the vocabulary moves.
assert COMPARISONS == (
    "first_name",
    "last_name",
    "date_of_birth",
    "gender",
    "region_code",
    "phone_number",
    "external_id",
)


def evidence_detail(result: MatchResult) -> dict[str, Any]:
    """What a review item keeps of a score: the features that carried it (learned matcher)."""
    if not result.features:
        return {}
    return {"features": [{"feature": name, "log_odds": weight} for name, weight in result.features]}


def is_placeholder_date(d: datetime.date) -> bool:
    """1 January and 1 July: what clerks write when only the birth year is known."""
    return d.day == 1 and d.month in (1, 7)


@dataclass(frozen=True, slots=True)
class MatchResult:
    score: float  # probability that the pair is the same person, 0..1, rounded to 4 places
    matched_fields: list[str]
    band: str | None  # "certain", "probable", "possible" or None
    hard_conflict: str | None  # None, "dhis2_uid", "sex_and_birth_date" or "twin"
    # Which features carried the score (learned matcher): (feature, log-odds contribution),
    # largest first; empty for the Fellegi-Sunter scorer.
    features: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True, slots=True)
class Thresholds:
    certain: float = 0.95
    probable: float = 0.85
    possible: float = 0.70


@dataclass(frozen=True, slots=True)
class _Name:
    norm: str  # normalised, with spaces (the frequency table's key)
    flat: str  # no spaces, doubled letters squeezed: equality here is "exact"
    phon: str
    token_keys: frozenset[str]


@lru_cache(maxsize=262_144)
def _name(raw: str) -> _Name:
    norm = normalize_name(raw)
    return _Name(
        norm=norm,
        flat=squeeze_doubles(norm.replace(" ", "")),
        phon=phonetic_key(raw),
        token_keys=frozenset(token_key(t) for t in norm.split()),
    )


@dataclass(frozen=True, slots=True)
class _Features:
    first: _Name
    last: _Name
    dob: datetime.date | None
    gender: str | None
    region: str | None
    phone: str | None
    dhis2: str | None
    other_ids: frozenset[tuple[str, str]]
    dob_estimated: bool = False
    mother: str | None = None


def _phone_digits(phone: str | None) -> str | None:
    if not phone:
        return None
    digits = "".join(ch for ch in phone if ch.isdigit())
    # The last 9 digits identify a subscriber whether or not the country code was typed.
    return digits[-9:] if len(digits) >= 7 else None


def _features(p: Person) -> _Features:
    gender = p.gender.upper() if p.gender else None
    ids = p.external_ids
    dhis2 = ids.get(DHIS2) or None
    other = frozenset((k, v) for k, v in ids.items() if k != DHIS2 and v) if ids else frozenset()
    return _Features(
        first=_name(p.first_name),
        last=_name(p.last_name),
        dob=p.date_of_birth,
        gender=gender if gender in ("M", "F") else None,
        region=p.region_code.strip().upper() or None if p.region_code else None,
        phone=_phone_digits(p.phone_number),
        dhis2=dhis2,
        other_ids=other,
        dob_estimated=p.date_of_birth_estimated,
        mother=p.mother_mpi_id,
    )


def _name_level(a: _Name, b: _Name) -> int | None:
    if not a.flat or not b.flat:
        return None
    if a.flat == b.flat:
        return N_EXACT
    if a.phon == b.phon:
        return N_PHONETIC
    jw = max(JaroWinkler.similarity(a.flat, b.flat), JaroWinkler.similarity(a.phon, b.phon))
    # One slip of the finger (insert, delete, substitute, swap neighbours) is close whatever
    # Jaro-Winkler says about short names ("Aw"/"Awa", "Fatpu"/"Fatou").
    edits = OSA.distance(a.flat, b.flat, score_cutoff=2)
    if jw >= JW_HIGH or (edits <= 1 and min(len(a.flat), len(b.flat)) >= 2):
        return N_FUZZY_HIGH
    ka, kb = a.token_keys, b.token_keys
    if ka != kb and (ka <= kb or kb <= ka):
        return N_PARTIAL
    if jw >= JW_LOW or edits <= 2:
        return N_FUZZY_LOW
    return N_ELSE


def _dob_level(a: datetime.date | None, b: datetime.date | None) -> int | None:
    if a is None or b is None:
        return None
    placeholder = is_placeholder_date(a) or is_placeholder_date(b)
    if a.year == b.year:
        # 7 January against 1 July is a swap before it is a placeholder
        if a != b and a.day == b.month and a.month == b.day:
            return D_SWAP
        if placeholder:
            # The same placeholder twice is stronger than one: few strangers share it.
            return D_PLACEHOLDER_SAME if a == b else D_YEAR_ONLY
        if a == b:
            return D_EXACT
        if a.month == b.month:
            return D_SAME_MONTH
        return D_SAME_YEAR
    if abs(a.year - b.year) == 1:
        if not placeholder and a.month == b.month and a.day == b.day:
            return D_YEAR_OFF1
        return D_NEAR_YEAR
    return D_ELSE


def _dob_level_of(a: _Features, b: _Features) -> tuple[int | None, bool]:
    """The date level, and whether an estimate set it (then it is compared with a tolerance)."""
    if a.dob_estimated or b.dob_estimated:
        agreement = estimated_dob_agreement(a.dob, b.dob, a.dob_estimated, b.dob_estimated, datetime.date.today())
        return (None if agreement is None else _ESTIMATED_LEVEL[agreement]), True
    return _dob_level(a.dob, b.dob), False


def _eq_level(a: str | None, b: str | None) -> int | None:
    if a is None or b is None:
        return None
    return 0 if a == b else 1


def _ext_level(a: _Features, b: _Features) -> int | None:
    if a.dhis2 and b.dhis2:
        return 0 if a.dhis2 == b.dhis2 else 1
    if a.other_ids and b.other_ids:
        keys_a = {k for k, _ in a.other_ids}
        shared = [kv for kv in a.other_ids if kv in b.other_ids]
        if shared:
            return 0
        # Different values under the same scheme disagree; unrelated schemes say nothing.
        if any(k in keys_a for k, _ in b.other_ids):
            return 1
    return None


def comparison_vector(query: Person, candidate: Person, allow_swap: bool = True) -> tuple[int | None, ...]:
    """Levels of every comparison (``model.COMPARISONS`` order): what the estimators learn from.

    With ``allow_swap`` the names are read crossed over when only that way do both agree
    (closely), as ``Matcher`` does, so swapped duplicates do not teach that names disagree.
    """
    a, b = _features(query), _features(candidate)
    lf, ll = _name_level(a.first, b.first), _name_level(a.last, b.last)
    if allow_swap and not (lf is not None and ll is not None and lf <= N_FUZZY_HIGH and ll <= N_FUZZY_HIGH):
        sf, sl = _name_level(a.first, b.last), _name_level(a.last, b.first)
        if sf is not None and sl is not None and sf <= N_FUZZY_HIGH and sl <= N_FUZZY_HIGH:
            lf, ll = sf, sl
    return (
        lf,
        ll,
        _dob_level_of(a, b)[0],
        _eq_level(a.gender, b.gender),
        _eq_level(a.region, b.region),
        _eq_level(a.phone, b.phone),
        _ext_level(a, b),
    )


class Matcher:
    """Scores pairs of persons; holds the weights, thresholds and registry name frequencies."""

    def __init__(
        self,
        params: MatchParams | None = None,
        frequencies: NameFrequencies | None = None,
        thresholds: Thresholds = Thresholds(),
    ) -> None:
        self.params = params if params is not None else default_params()
        self.frequencies = frequencies
        self.thresholds = thresholds
        # Calibration coefficients scale whole comparisons (see MatchParams), so they are
        # folded into the weight tables once here rather than applied per pair.
        w = {
            c: tuple(x * self.params.coefficient(c) for x in levels)
            for c, levels in self.params.weights().items()
        }
        self._c_dob = self.params.coefficient("date_of_birth")
        self._c_region = self.params.coefficient("region_code")
        self._c_first = self.params.coefficient("first_name")
        self._c_last = self.params.coefficient("last_name")
        self._w_first = w["first_name"]
        self._w_last = w["last_name"]
        self._w_cross = tuple((x + y) / 2 for x, y in zip(self._w_first, self._w_last, strict=True))
        self._w_dob = w["date_of_birth"]
        self._w_gender = w["gender"]
        self._w_region = w["region_code"]
        self._w_phone = w["phone_number"]
        self._w_ext = w["external_id"]
        self._swap_bits = self.params.swap_bits
        self._tf_cap = self.params.tf_cap_bits
        self._cap = thresholds.certain - 0.01

    # -- term frequency ---------------------------------------------------------------
    def _tf_bits(self, value: str, first: bool) -> float:
        freq = self.frequencies
        return 0.0 if freq is None else freq.tf_bits(0 if first else 1, value, self._tf_cap)

    def _distinct(self, a: _Name, b: _Name, field: int) -> bool:
        """Two established names close in spelling (Amadou/Mamadou): not the same name."""
        freq = self.frequencies
        return freq is not None and freq.established(field, a.norm) and freq.established(field, b.norm)

    def _names(
        self, qf: _Name, ql: _Name, cf: _Name, cl: _Name, crossed: bool
    ) -> tuple[float, float, int | None, int | None]:
        lf = _name_level(qf, cf)
        ll = _name_level(ql, cl)
        if not crossed:
            if lf in _CLOSE_LEVELS and self._distinct(qf, cf, 0):
                lf = N_ELSE
            if ll in _CLOSE_LEVELS and self._distinct(ql, cl, 1):
                ll = N_ELSE
        first_bits = last_bits = 0.0
        if crossed:
            # A crossed pair is one side's first name against the other's last name: weigh it
            # with both tables alike, so that compare(a, b) == compare(b, a).
            w = self._w_cross
            if lf is not None:
                first_bits = w[lf] + (self._cross_tf(cf.norm) if lf == N_EXACT else 0.0)
            if ll is not None:
                last_bits = w[ll] + (self._cross_tf(cl.norm) if ll == N_EXACT else 0.0)
            return first_bits, last_bits, lf, ll
        if lf == N_EXACT and ll == N_EXACT and self.frequencies is not None:
            tf_first, tf_last = self._tf_bits(cf.norm, True), self._tf_bits(cl.norm, False)
            joint = self.frequencies.full_name_bits(cf.norm, cl.norm, 2 * self._tf_cap)
            if joint is not None and joint < tf_first + tf_last:
                # the full name is more common than its two names taken apart: split the
                # joint adjustment evenly between them
                tf_first = tf_last = joint / 2
            return (
                self._w_first[lf] + self._c_first * tf_first,
                self._w_last[ll] + self._c_last * tf_last,
                lf,
                ll,
            )
        if lf is not None:
            first_bits = self._w_first[lf]
            if lf == N_EXACT:
                first_bits += self._c_first * self._tf_bits(cf.norm, True)
        if ll is not None:
            last_bits = self._w_last[ll]
            if ll == N_EXACT:
                last_bits += self._c_last * self._tf_bits(cl.norm, False)
        return first_bits, last_bits, lf, ll

    def _cross_tf(self, value: str) -> float:
        return (self._c_first * self._tf_bits(value, True) + self._c_last * self._tf_bits(value, False)) / 2

    def prior_bits(self) -> float:
        """log2 prior odds for one candidate pair, given the registry's current size."""
        freq = self.frequencies
        prior = self.params.pair_prior(freq.total if freq is not None and freq.total else None)
        return math.log2(prior / (1.0 - prior))

    def _evaluate(self, a: _Features, b: _Features, prior_bits: float | None = None) -> MatchResult:
        evidence, fields, conflict = self._evidence(a, b)
        total = (self.prior_bits() if prior_bits is None else prior_bits) + evidence
        # 2**-x cannot overflow here: evidence is bounded by a few hundred bits at worst.
        score = 1.0 / (1.0 + 2.0 ** (-total)) if total > -1000 else 0.0
        if conflict is not None and score > self._cap:
            score = self._cap
        score = round(score, 4)
        t = self.thresholds
        band = (
            "certain"
            if score >= t.certain
            else "probable"
            if score >= t.probable
            else "possible"
            if score >= t.possible
            else None
        )
        return MatchResult(score=score, matched_fields=fields, band=band, hard_conflict=conflict)

    def evidence_bits(self, query: Person, candidate: Person) -> float:
        """Sum of weighted log2 Bayes factors, before the prior."""
        return self._evidence(_features(query), _features(candidate))[0]

    def evidence_parts(self, query: Person, candidate: Person) -> list[float]:
        """log2 Bayes factor of each comparison (``COMPARISONS`` order, missing = 0), as weighted.

        What the calibration of the shipped parameters learns its coefficients from.
        """
        parts = [0.0] * len(COMPARISONS)
        self._evidence(_features(query), _features(candidate), parts)
        return parts

    def _evidence(
        self, a: _Features, b: _Features, parts: list[float] | None = None
    ) -> tuple[float, list[str], str | None]:
        first_bits, last_bits, lf, ll = self._names(a.first, a.last, b.first, b.last, False)
        swapped = False
        if not (lf is not None and lf <= N_FUZZY_HIGH and ll is not None and ll <= N_FUZZY_HIGH):
            s_first, s_last, s_lf, s_ll = self._names(a.first, a.last, b.last, b.first, True)
            if s_first + s_last + self._swap_bits > first_bits + last_bits:
                first_bits, last_bits, lf, ll, swapped = s_first + self._swap_bits, s_last, s_lf, s_ll, True

        total = first_bits + last_bits
        if parts is not None:
            parts[_I_FIRST], parts[_I_LAST] = first_bits, last_bits
        fields: list[str] = []
        if lf is not None and lf != N_ELSE:
            fields.append("first_name" + _FIELD_OF_NAME_LEVEL[lf])
        if ll is not None and ll != N_ELSE:
            fields.append("last_name" + _FIELD_OF_NAME_LEVEL[ll])
        if swapped:
            fields.append("names_swapped")

        ld, estimated = _dob_level_of(a, b)
        freq = self.frequencies
        if ld is not None:
            bits = self._w_dob[ld]
            if freq is not None and ld in _SAME_YEAR_LEVELS and not estimated:
                assert b.dob is not None
                bits += self._c_dob * freq.tf_bits(3, str(b.dob.year), _TF_CAP_CONTEXT)
            total += bits
            if parts is not None:
                parts[_I_DOB] = bits
            field = _FIELD_OF_DOB_LEVEL.get(ld)
            if estimated:
                field = "date_of_birth_estimated" if ld in (D_SAME_MONTH, D_YEAR_ONLY) else None
            if field:
                fields.append(field)
        lg = _eq_level(a.gender, b.gender)
        # Same first name, same sex: the name already said it (Fatou is a woman), so the
        # agreement is not counted twice; a disagreement still counts.
        if swapped:
            crossed = [level for level in (lf, ll) if level is not None]
            named = min(crossed) if crossed else None
        else:
            named = lf
        if lg == 0 and named is not None and named <= N_FUZZY_HIGH:
            lg = None
            fields.append("gender")
        if lg is not None:
            total += self._w_gender[lg]
            if parts is not None:
                parts[_I_GENDER] = self._w_gender[lg]
            if lg == 0:
                fields.append("gender")
        lr = _eq_level(a.region, b.region)
        if lr is not None:
            bits = self._w_region[lr]
            if freq is not None and lr == 0:
                assert b.region is not None
                bits += self._c_region * freq.tf_bits(2, b.region, _TF_CAP_CONTEXT)
            total += bits
            if parts is not None:
                parts[_I_REGION] = bits
            if lr == 0:
                fields.append("region_code")
        lp = _eq_level(a.phone, b.phone)
        # A shared phone is shared by the household: once the birth dates are years apart or
        # the first names differ outright, it says "relative" (parent and child named alike,
        # twins), not "same person", so it is not counted.
        if lp == 0 and (ld == D_ELSE or lf == N_ELSE):
            lp = None
        if lp is not None:
            total += self._w_phone[lp]
            if parts is not None:
                parts[_I_PHONE] = self._w_phone[lp]
            if lp == 0:
                fields.append("phone_number")
        le = _ext_level(a, b)
        if le is not None:
            total += self._w_ext[le]
            if parts is not None:
                parts[_I_EXT] = self._w_ext[le]
            if le == 0:
                fields.append(DHIS2 if a.dhis2 and a.dhis2 == b.dhis2 else "external_id")
        same_mother = mother_agreement(a.mother, b.mother)
        if same_mother is not None:
            total += MOTHER_SAME_BITS if same_mother else MOTHER_DIFFERENT_BITS
            if same_mother:
                fields.append("mother")
                total += same_child_bits(
                    same_mother,
                    ld in _CLOSE_DATE_LEVELS,
                    not swapped and (lf is None or lf <= N_FUZZY_HIGH),
                    lg == 1,
                )

        conflict: str | None = None
        if a.dhis2 and b.dhis2 and a.dhis2 != b.dhis2:
            conflict = DHIS2
        elif not swapped and twins(a.mother, b.mother, a.dob, b.dob, lg == 1, lf is not None and lf >= N_FUZZY_LOW):
            conflict = "twin_same_mother"
        elif lg == 1 and ld is not None and ld != D_EXACT:
            conflict = "sex_and_birth_date"
        elif (
            not swapped
            and ld == D_EXACT
            and ll is not None
            and ll <= N_FUZZY_HIGH
            and lf is not None
            and lf >= N_FUZZY_LOW
        ):
            conflict = "twin"

        return total, fields, conflict

    def compare(self, query: Person, candidate: Person) -> MatchResult:
        return self._evaluate(_features(query), _features(candidate))

    def rank(
        self,
        query: Person,
        candidates: Iterable[tuple[K, Person]],
        limit: int = 10,
        min_score: float | None = None,
    ) -> list[tuple[K, MatchResult]]:
        """Best candidates first, at least ``min_score`` (default: the ``possible`` threshold)."""
        floor = self.thresholds.possible if min_score is None else min_score
        qf = _features(query)
        prior_bits = self.prior_bits()
        scored = []
        for key, person in candidates:
            result = self._evaluate(qf, _features(person), prior_bits)
            if result.score >= floor:
                scored.append((key, result))
        # Stable sort: among equal scores the caller's order (most shared keys first) wins.
        scored.sort(key=lambda kr: kr[1].score, reverse=True)
        return scored[:limit]
