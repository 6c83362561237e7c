"""Campaign evidence: estimated birth dates and mothers, as small pure comparisons any scorer can call.

Owns: the rule that turns an age into an estimated birth date (the middle of the possible
interval), the tolerance an estimated date is compared with (it grows with the age: months
for an infant, two years for an adult), the agreement of two linked mothers, and what makes
two records twins (same mother, same date, another sex or given name).

An estimated date never agrees exactly: ``estimated_dob_agreement`` answers how close two
dates are against the tolerance, and the scorer maps that onto its own weaker levels.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping
from typing import Any

__all__ = [
    "MOTHER",
    "MOTHER_DIFFERENT_BITS",
    "MOTHER_SAME_BITS",
    "RELATIONSHIPS",
    "SAME_CHILD_BITS",
    "applies",
    "birth_date_tolerance_days",
    "estimated_birth_date",
    "estimated_dob_agreement",
    "links_of",
    "mother_agreement",
    "mother_of",
    "same_child_bits",
    "twins",
]

MOTHER = "mother"
RELATIONSHIPS = ("mother", "father", "guardian", "caregiver")

# log2 Bayes factors of the mother comparison. The same linked mother: few children share a
# mother and a name (m ~ 0.9, u ~ 1/64 among the candidates blocking finds). Two different
# mothers: a clerk links the wrong woman rarely (m ~ 0.02, u ~ 1).
MOTHER_SAME_BITS = 6.0
MOTHER_DIFFERENT_BITS = -6.0
# One mother, a birth date within its tolerance, the same given name (or none yet) and no
# sex against: a sibling would be born further apart, a twin has another name or sex. The
# comparisons are not independent here, so this joint evidence is added once, on top.
SAME_CHILD_BITS = 10.0


def _months_before(day: datetime.date, months: int) -> datetime.date:
    total = day.year * 12 + (day.month - 1) - months
    year, month = divmod(total, 12)
    month += 1
    # The same day of the month, or the last one when that month is shorter.
    for d in (day.day, 30, 29, 28):
        try:
            return datetime.date(year, month, d)
        except ValueError:
            continue
    raise ValueError("unreachable")


def estimated_birth_date(
    on: datetime.date, age_years: int | None = None, age_months: int | None = None
) -> datetime.date:
    """The middle of the interval of birth dates an age allows, at the date ``on``.

    Someone ``N`` years old on ``on`` was born after ``on`` minus N+1 years and on or before
    ``on`` minus N years: the middle is ``on`` minus N years and 6 months. ``M`` months old:
    born within the month before ``on`` minus M months, the middle is 15 days earlier.
    """
    if age_years is not None:
        return _months_before(on, age_years * 12 + 6)
    if age_months is not None:
        return _months_before(on, age_months) - datetime.timedelta(days=15)
    raise ValueError("an age in years or in months is needed")


def birth_date_tolerance_days(dob: datetime.date, today: datetime.date) -> int:
    """How far an estimated date may be from the truth, by the age it gives.

    Under 1 year: 3 months; under 5: 6 months; under 15: a year; older: two years.
    """
    age_days = (today - dob).days
    if age_days < 366:
        return 92
    if age_days < 5 * 366:
        return 183
    if age_days < 15 * 366:
        return 366
    return 731


def estimated_dob_agreement(
    a: datetime.date | None,
    b: datetime.date | None,
    a_estimated: bool,
    b_estimated: bool,
    today: datetime.date,
) -> str | None:
    """How two birth dates agree when one of them at least is an estimate.

    ``"close"`` (within half the tolerance), ``"within"`` (within the tolerance), ``"near"``
    (within twice the tolerance), ``"far"``; None when a date is missing or neither is an
    estimate (the scorer's own date levels apply). Never an exact agreement.
    """
    if a is None or b is None or not (a_estimated or b_estimated):
        return None
    # The older of the two estimates sets the tolerance: it is the vaguer one.
    tolerance = birth_date_tolerance_days(min(a, b), today)
    gap = abs((a - b).days)
    if 2 * gap <= tolerance:
        return "close"
    if gap <= tolerance:
        return "within"
    if gap <= 2 * tolerance:
        return "near"
    return "far"


def applies(a_mother: str | None, b_mother: str | None, a_estimated: bool, b_estimated: bool) -> bool:
    """Whether a pair carries campaign evidence: both mothers linked, or an estimated date on either side.

    (The learned trees were trained on this evidence: they no longer hand such pairs to the
    Fellegi-Sunter score.)
    """
    return bool(a_mother and b_mother) or a_estimated or b_estimated


def mother_agreement(a: str | None, b: str | None) -> bool | None:
    """The same linked mother (True), two different ones (False), or nothing to compare (None)."""
    if not a or not b:
        return None
    return a == b


def twins(
    a_mother: str | None,
    b_mother: str | None,
    a_dob: datetime.date | None,
    b_dob: datetime.date | None,
    sexes_differ: bool,
    given_names_differ: bool,
) -> bool:
    """Two children of one mother born the same day, told apart by sex or given name: not one child."""
    return (
        mother_agreement(a_mother, b_mother) is True
        and a_dob is not None
        and a_dob == b_dob
        and (sexes_differ or given_names_differ)
    )


def same_child_bits(same_mother: bool | None, dates_close: bool, given_names_close: bool, sexes_differ: bool) -> float:
    """The joint evidence of one child: the same mother, a close date, a close given name, no sex against."""
    return SAME_CHILD_BITS if same_mother is True and dates_close and given_names_close and not sexes_differ else 0.0


def links_of(related: Any) -> list[tuple[str, str]]:
    """(MPI ID, relationship) of caregiver links as stored (JSON text) or given (a list); what is malformed is skipped."""
    if related is None or related == "":
        return []
    if isinstance(related, str):
        try:
            related = json.loads(related)
        except ValueError:
            return []
    out: list[tuple[str, str]] = []
    for link in related if isinstance(related, list) else []:
        if isinstance(link, Mapping):
            mpi_id, relationship = link.get("mpi_id"), link.get("relationship")
        else:
            mpi_id, relationship = getattr(link, "mpi_id", None), getattr(link, "relationship", None)
        if isinstance(mpi_id, str) and mpi_id and relationship in RELATIONSHIPS:
            out.append((mpi_id, str(relationship)))
    return out


def mother_of(related: Any) -> str | None:
    """The MPI ID of the mother among caregiver links (stored JSON text, or a list of links), if any."""
    return next((mpi_id for mpi_id, relationship in links_of(related) if relationship == MOTHER), None)
