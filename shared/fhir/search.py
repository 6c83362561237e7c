"""The Patient search parameters (IHE PDQm) we support, parsed into ``Criteria``; no database here.

``SEARCH_PARAMS`` is the one table the parser, the CapabilityStatement and the OpenAPI
document read. Name parameters compare like ``/mpi/search``: case, accents and apostrophes
folded, each word of the value the beginning of a word of the name (``family=dia`` finds
Diallo). Parameters may be repeated (AND); a comma (OR), a modifier (``family:exact``) or an
unknown parameter answers 400: a Master Patient Index must not answer a search it did not
understand with everyone.
"""

from __future__ import annotations

import calendar
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import BadRequest
from ..matching import name_tokens
from .resources import GENDER_IN, check_text

__all__ = ["MAX_COUNT", "SEARCH_PARAMS", "Criteria", "DateRange", "parse_search"]

MAX_COUNT = 200
_MAX_OFFSET = 100_000
_DEFAULT_COUNT = 20

# name, FHIR type, definition, what it does here
SEARCH_PARAMS: list[tuple[str, str, str, str]] = [
    ("_id", "token", "http://hl7.org/fhir/SearchParameter/Resource-id",
     "The MPI ID (a merged-away ID finds the canonical Patient)"),
    ("identifier", "token", "http://hl7.org/fhir/SearchParameter/Patient-identifier",
     "system|value, or |value for any system (MPI ID, DHIS2 UID, other external ids)"),
    ("family", "string", "http://hl7.org/fhir/SearchParameter/individual-family",
     "Each word begins a word of the last name (case and accents ignored)"),
    ("given", "string", "http://hl7.org/fhir/SearchParameter/individual-given",
     "Each word begins a word of the first name (case and accents ignored)"),
    ("name", "string", "http://hl7.org/fhir/SearchParameter/Patient-name",
     "Each word begins a word of the first or last name (case and accents ignored)"),
    ("birthdate", "date", "http://hl7.org/fhir/SearchParameter/individual-birthdate",
     "YYYY, YYYY-MM or YYYY-MM-DD, with an optional prefix eq, ge, gt, le, lt"),
    ("gender", "token", "http://hl7.org/fhir/SearchParameter/individual-gender", "male, female, unknown or other"),
    ("address-state", "string", "http://hl7.org/fhir/SearchParameter/individual-address-state",
     "The region code (DKR, THI, ...)"),
]
_CONTROL_PARAMS = {"_count", "_offset", "_format", "_pretty"}
_REPEATABLE = {"identifier", "family", "given", "name", "birthdate"}


@dataclass(frozen=True, slots=True)
class DateRange:
    low: dt.date | None  # inclusive
    high: dt.date | None  # inclusive


@dataclass
class Criteria:
    """What a Patient search asks for; name words are folded like the search index's tokens."""

    ids: list[str] = field(default_factory=list)
    identifiers: list[tuple[str | None, str]] = field(default_factory=list)  # (system or None: any, value)
    family: list[str] = field(default_factory=list)
    given: list[str] = field(default_factory=list)
    name: list[str] = field(default_factory=list)
    birthdate: list[DateRange] = field(default_factory=list)
    gender: str | None = None  # M, F, U, or "" for a gender nobody here has (other)
    region: str | None = None
    count: int = _DEFAULT_COUNT
    offset: int = 0

    @property
    def words(self) -> list[str]:
        return [*self.family, *self.given, *self.name]


def _bad(message: str, code: str = "invalid_search") -> BadRequest:
    return BadRequest(message, code=code)


def _integer(name: str, raw: str, low: int, high: int) -> int:
    if not raw.isdigit() or len(raw) > 9:
        raise _bad(f"{name} must be a whole number")
    value = int(raw)
    if value < low:
        raise _bad(f"{name} must be at least {low}")
    return min(value, high)


def _date_range(raw: str) -> DateRange:
    prefix, text = (raw[:2], raw[2:]) if raw[:2].isalpha() else ("eq", raw)
    if prefix not in ("eq", "ge", "gt", "le", "lt"):
        raise _bad(f"birthdate prefix {prefix} is not supported (eq, ge, gt, le, lt)")
    try:
        if len(text) == 4 and text.isdigit():
            low, high = dt.date(int(text), 1, 1), dt.date(int(text), 12, 31)
        elif len(text) == 7 and text[4] == "-":
            year, month = int(text[:4]), int(text[5:])
            low, high = dt.date(year, month, 1), dt.date(year, month, calendar.monthrange(year, month)[1])
        elif len(text) == 10:
            low = high = dt.date.fromisoformat(text)
        else:
            raise ValueError(text)
    except ValueError:
        raise _bad("birthdate must be YYYY, YYYY-MM or YYYY-MM-DD, with an optional prefix") from None
    one = dt.timedelta(days=1)
    return {
        "eq": DateRange(low, high),
        "ge": DateRange(low, None),
        "gt": DateRange(high + one, None),
        "le": DateRange(None, high),
        "lt": DateRange(None, low - one),
    }[prefix]


def _words(name: str, raw: str) -> list[str]:
    words = [w[:60] for w in name_tokens(raw)]
    if not words:
        raise _bad(f"{name} needs at least one letter")
    return words


def parse_search(query: Mapping[str, Any]) -> Criteria:
    """Criteria from a query string (a MultiDict: ``getall`` gives every value of a key)."""
    known = {name for name, *_ in SEARCH_PARAMS}
    criteria = Criteria()
    for key in dict.fromkeys(query.keys()):
        values: list[str] = list(query.getall(key))  # type: ignore[attr-defined]
        check_text(key, "a parameter name")
        for value in values:
            check_text(value, key)
        base, colon, modifier = key.partition(":")
        if colon:
            raise _bad(f"the modifier :{modifier} of {base} is not supported", "unsupported_modifier")
        if key not in known and key not in _CONTROL_PARAMS:
            raise _bad(f"unknown search parameter {key}", "unknown_parameter")
        if len(values) > 1 and key not in _REPEATABLE:
            raise _bad(f"{key} given more than once")
        for value in values:
            if "," in value and key not in ("_format",):
                raise _bad(f"{key}: several values separated by commas (OR) are not supported")
            if not value and key not in ("_format", "_pretty"):
                raise _bad(f"{key} is empty")
            _apply(criteria, key, value)
    return criteria


def _apply(criteria: Criteria, key: str, value: str) -> None:
    if key == "_count":
        criteria.count = _integer("_count", value, 0, MAX_COUNT)
    elif key == "_offset":
        criteria.offset = _integer("_offset", value, 0, _MAX_OFFSET)
    elif key == "_id":
        criteria.ids.append(value)
    elif key == "identifier":
        system, bar, ident = value.partition("|")
        if not bar:
            system, ident = "", value
        if not ident:
            raise _bad("identifier needs a value: system|value or |value")
        criteria.identifiers.append((system or None, ident))
    elif key in ("family", "given", "name"):
        getattr(criteria, key).extend(_words(key, value))
    elif key == "birthdate":
        criteria.birthdate.append(_date_range(value))
    elif key == "gender":
        if value not in ("male", "female", "unknown", "other"):
            raise _bad("gender must be male, female, unknown or other")
        criteria.gender = GENDER_IN.get(value, "")
    elif key == "address-state":
        criteria.region = value.strip().upper()
