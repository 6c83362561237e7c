"""Value types of the matcher: the ``Person`` being compared and the ``MatchParams`` that weigh evidence.

Owns: the comparison vocabulary (which comparisons exist and their ordered levels), the
Fellegi-Sunter parameters (m and u probability of each level, prior match probability),
their JSON form, and loading the shipped default fitted on synthetic data (``params.json``,
refitted with ``python scripts/bench_matcher_core.py --fit --skip-febrl``).
"""

from __future__ import annotations

import datetime
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

from shared.matching.family import mother_of

__all__ = ["COMPARISONS", "LEVELS", "MatchParams", "Person", "default_params", "person_of"]


@dataclass(frozen=True, slots=True)
class Person:
    """One identity as the matcher sees it; only these fields carry evidence."""

    first_name: str
    last_name: str
    date_of_birth: datetime.date | None = None
    gender: str | None = None  # "M", "F", "U" or None ("U" counts as missing)
    region_code: str | None = None  # e.g. "DKR"
    phone_number: str | None = None  # E.164, e.g. "+221771234567"
    external_ids: Mapping[str, str] = field(default_factory=dict)  # e.g. {"dhis2_uid": "abcDEF123gh"}
    date_of_birth_estimated: bool = False  # the date is an estimate (from an age): compared with a tolerance
    mother_mpi_id: str | None = None  # the linked mother's MPI ID (``family``)


_NAME_LEVELS = ("exact", "phonetic", "fuzzy_high", "partial", "fuzzy_low", "else")

# Level 0 is the strongest agreement; the last level is disagreement.  A comparison with a
# missing side has no level at all (weight 0).
LEVELS: Mapping[str, tuple[str, ...]] = {
    "first_name": _NAME_LEVELS,
    "last_name": _NAME_LEVELS,
    "date_of_birth": (
        "exact",
        "day_month_swapped",
        "year_off_by_one",
        "placeholder_same",  # the same 1 January / 1 July placeholder on both sides
        "same_month",  # same year and month, another day: a slip on the day
        "year_only",  # same year, one side a 1 January / 1 July placeholder (or two different ones)
        "same_year",  # same year, both real dates, other day/month
        "near_year",  # a year apart, not the same day and month
        "else",
    ),
    "gender": ("agree", "else"),
    "region_code": ("agree", "else"),
    "phone_number": ("agree", "else"),
    "external_id": ("agree", "else"),
}
COMPARISONS: tuple[str, ...] = tuple(LEVELS)


def person_of(record: Any, external: Mapping[str, str] | None = None) -> Person:
    """The matcher's view of anything with the register fields: a stored row, a request body."""
    return Person(
        first_name=record.first_name,
        last_name=record.last_name,
        date_of_birth=record.date_of_birth,
        gender=record.gender,
        region_code=record.region_code,
        phone_number=record.phone_number,
        external_ids=external or {},
        date_of_birth_estimated=bool(getattr(record, "date_of_birth_estimated", False)),
        mother_mpi_id=mother_of(getattr(record, "related_persons", None)),
    )


def _bits(m: float, u: float) -> float:
    return math.log2(max(m, 1e-9) / max(u, 1e-9))


@dataclass(frozen=True, slots=True)
class MatchParams:
    """Fellegi-Sunter parameters.

    ``m[c][k]`` is P(level k of comparison c | same person) and ``u[c][k]`` the same
    among different persons, both over pairs where c is observed on both sides.  ``prior``
    is the share of true matches among the pairs the matcher is asked to score (blocked
    candidates), which is what makes the final figure a calibrated probability.
    ``swap_bits`` is the log2 Bayes factor charged when first and last names only agree
    crossed over.  ``tf_cap_bits`` bounds the name-frequency adjustment.

    The final log2 odds are ``log2(prior / (1 - prior)) + sum(coefficient[c] * bits[c])``.
    Fitted without labels (EM), every coefficient is 1 (textbook Fellegi-Sunter) and
    ``prior`` is the mixture weight.  Fitted on synthetic data, prior and coefficients come
    from a logistic calibration on blocked candidate pairs: it corrects for comparisons
    that are not independent (relatives share a family name, a region and a phone).
    """

    prior: float
    m: Mapping[str, tuple[float, ...]]
    u: Mapping[str, tuple[float, ...]]
    swap_bits: float = -1.0
    tf_cap_bits: float = 5.0
    coefficients: Mapping[str, float] = field(default_factory=dict)
    duplicate_share: float | None = None
    reference_registry: int = 100_000

    def pair_prior(self, registry_size: int | None) -> float:
        """Prior that one candidate is the query's duplicate.

        With ``duplicate_share`` (share of registrations that already have a record), the
        prior is that share spread over the registry, so a score keeps meaning the same
        thing as the registry grows: "Mamadou Diallo, 1990" is weaker evidence among a
        million identities than among ten thousand.  Otherwise ``prior`` as fitted.
        """
        if self.duplicate_share is None:
            return self.prior
        size = max(registry_size or self.reference_registry, 100)
        return min(self.duplicate_share / size, 0.5)

    def coefficient(self, comparison: str) -> float:
        return self.coefficients.get(comparison, 1.0)

    def weight(self, comparison: str, level: int) -> float:
        """log2 Bayes factor of ``level`` for ``comparison``."""
        return _bits(self.m[comparison][level], self.u[comparison][level])

    def weights(self) -> dict[str, tuple[float, ...]]:
        return {c: tuple(self.weight(c, k) for k in range(len(self.m[c]))) for c in self.m}

    def prior_bits(self) -> float:
        return math.log2(self.prior / (1.0 - self.prior))

    def to_json(self) -> dict[str, Any]:
        return {
            "prior": self.prior,
            "m": {c: list(v) for c, v in self.m.items()},
            "u": {c: list(v) for c, v in self.u.items()},
            "swap_bits": self.swap_bits,
            "tf_cap_bits": self.tf_cap_bits,
            "coefficients": dict(self.coefficients),
            "duplicate_share": self.duplicate_share,
            "reference_registry": self.reference_registry,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> MatchParams:
        m = {c: tuple(float(x) for x in v) for c, v in data["m"].items()}
        u = {c: tuple(float(x) for x in v) for c, v in data["u"].items()}
        for c in COMPARISONS:
            if c not in m or c not in u:
                m.setdefault(c, _FALLBACK_M[c])
                u.setdefault(c, _FALLBACK_U[c])
            if not (len(m[c]) == len(u[c]) == len(LEVELS[c])):
                raise ValueError(f"params for {c!r} need {len(LEVELS[c])} levels")
        return cls(
            prior=float(data["prior"]),
            m=m,
            u=u,
            swap_bits=float(data.get("swap_bits", -1.0)),
            tf_cap_bits=float(data.get("tf_cap_bits", 5.0)),
            coefficients={str(k): float(v) for k, v in data.get("coefficients", {}).items()},
            duplicate_share=None if data.get("duplicate_share") is None else float(data["duplicate_share"]),
            reference_registry=int(data.get("reference_registry", 100_000)),
        )


# Hand-set starting point: used when params.json is absent and as the EM initial guess.
_FALLBACK_M: Mapping[str, tuple[float, ...]] = {
    "first_name": (0.80, 0.06, 0.06, 0.03, 0.03, 0.02),
    "last_name": (0.82, 0.06, 0.05, 0.02, 0.03, 0.02),
    "date_of_birth": (0.70, 0.04, 0.05, 0.05, 0.02, 0.03, 0.02, 0.03, 0.06),
    "gender": (0.98, 0.02),
    "region_code": (0.90, 0.10),
    "phone_number": (0.90, 0.10),
    "external_id": (0.995, 0.005),
}
_FALLBACK_U: Mapping[str, tuple[float, ...]] = {
    "first_name": (0.03, 0.01, 0.01, 0.01, 0.04, 0.90),
    "last_name": (0.10, 0.02, 0.02, 0.01, 0.05, 0.80),
    "date_of_birth": (0.00005, 0.00001, 0.0001, 0.0003, 0.0015, 0.0037, 0.012, 0.03, 0.95234),
    "gender": (0.5, 0.5),
    "region_code": (0.15, 0.85),
    "phone_number": (0.002, 0.998),
    "external_id": (0.000001, 0.999999),
}
FALLBACK = MatchParams(prior=0.01, m=_FALLBACK_M, u=_FALLBACK_U)


@lru_cache(maxsize=1)
def default_params() -> MatchParams:
    """The shipped parameters (fitted on synthetic data), or the hand-set fallback."""
    try:
        text = resources.files("shared.matching").joinpath("params.json").read_text(encoding="utf-8")
    except FileNotFoundError:
        return FALLBACK
    return MatchParams.from_json(json.loads(text))
