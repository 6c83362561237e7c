"""The Patient search parameters (IHE PDQm) we support, parsed into ``Criteria``; no database here.

``SEARCH_PARAMS`` is the one table the parser, the CapabilityStatement and the OpenAPI
document read. Name parameters compare like ``/mpi/search``: case, accents and apostrophes
folded, each word of the value the beginning of a word of the name (``family=dia`` finds
Diallo). Parameters may be repeated (AND); a comma (OR), a modifier (``family:exact``) or an
unknown parameter answers 400: a Master Patient Index must not answer a search it did not
understand with everyone.

The limits are ``/mpi/search``'s (``shared.schemas``): ``SEARCH_TEXT_MAX`` characters and
``SEARCH_WORDS_MAX`` words of names in all (``family``, ``given`` and ``name`` together, as
one ``q``), ``_count`` up to ``SEARCH_LIMIT_MAX``, ``_offset`` up to ``SEARCH_OFFSET_MAX``; a
repeatable parameter at most ``SEARCH_REPEAT_MAX`` times, an identifier value as long as an
external id. Past any of them: 400 ``invalid_search``, never a search cut short.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from collections.abc import Mapping
from typing import Any

from ..errors import BadRequest
from ..identities.search import MPI_ID, Criteria, DateRange
from ..matching import name_tokens
from ..schemas import (
    SEARCH_LIMIT_MAX,
    SEARCH_OFFSET_MAX,
    SEARCH_REPEAT_MAX,
    SEARCH_TEXT_MAX,
    SEARCH_WORDS_MAX,
)
from .resources import GENDER_IN, Systems, check_text

__all__ = ["SEARCH_PARAMS", "Criteria", "DateRange", "parse_search"]

_IDENTIFIER_VALUE_MAX = 200  # an external id's longest value (shared.schemas)
_IDENTIFIER_SYSTEM_MAX = 300  # a system URI
_VALUE_MAX = _IDENTIFIER_SYSTEM_MAX + 1 + _IDENTIFIER_VALUE_MAX  # any value, before it is read
_REGION = re.compile(r"[A-Z]{3}")

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


def _bad(message: str, code: str = "invalid_search") -> BadRequest:
    return BadRequest(message, code=code)


def _integer(name: str, raw: str, low: int, high: int) -> int:
    if not raw.isdigit():
        raise _bad(f"{name} must be a whole number")
    value = int(raw) if len(raw) <= 9 else high + 1
    if not low <= value <= high:
        raise _bad(f"{name} must be {low} to {high}")
    return value


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


def parse_search(query: Mapping[str, Any], systems: Systems) -> Criteria:
    """Criteria from a query string (a MultiDict: ``getall`` gives every value of a key).

    Identifier systems are read into the native ones here (``systems``); the limits are
    checked before any value is read, so an oversized search costs no more than its parsing.
    """
    known = {name for name, *_ in SEARCH_PARAMS}
    criteria = Criteria()
    text = 0  # characters of names, as /mpi/search counts its q
    for key in dict.fromkeys(query.keys()):
        values: list[str] = list(query.getall(key))  # type: ignore[attr-defined]
        check_text(key, "a parameter name")
        base, colon, modifier = key.partition(":")
        if colon:
            raise _bad(f"the modifier :{modifier} of {base} is not supported", "unsupported_modifier")
        if key not in known and key not in _CONTROL_PARAMS:
            raise _bad(f"unknown search parameter {key}", "unknown_parameter")
        if len(values) > 1 and key not in _REPEATABLE:
            raise _bad(f"{key} given more than once")
        if len(values) > SEARCH_REPEAT_MAX:
            raise _bad(f"{key} given {len(values)} times: at most {SEARCH_REPEAT_MAX}")
        for value in values:
            check_text(value, key)
            if len(value) > _VALUE_MAX:
                raise _bad(f"{key} is longer than {_VALUE_MAX} characters")
            if "," in value and key not in ("_format",):
                raise _bad(f"{key}: several values separated by commas (OR) are not supported")
            if not value and key not in ("_format", "_pretty"):
                raise _bad(f"{key} is empty")
            if key in ("family", "given", "name"):
                text += len(value.strip())
                if text > SEARCH_TEXT_MAX:
                    raise _bad(f"at most {SEARCH_TEXT_MAX} characters of names (family, given, name) in a search")
            _apply(criteria, systems, key, value)
    if len(criteria.words) > SEARCH_WORDS_MAX:
        raise _bad(f"at most {SEARCH_WORDS_MAX} name words (family, given, name) in a search, "
                   f"not {len(criteria.words)}")
    return criteria


def _identifier(criteria: Criteria, systems: Systems, value: str) -> None:
    system, bar, ident = value.partition("|")
    if not bar:
        system, ident = "", value
    if not ident:
        raise _bad("identifier needs a value: system|value or |value")
    if len(ident) > _IDENTIFIER_VALUE_MAX or len(system) > _IDENTIFIER_SYSTEM_MAX:
        raise _bad(f"identifier: a system of at most {_IDENTIFIER_SYSTEM_MAX} characters, "
                   f"a value of at most {_IDENTIFIER_VALUE_MAX}")
    if not system:
        criteria.identifiers.append((None, ident))
    elif system == systems.mpi_id:
        criteria.identifiers.append((MPI_ID, ident))
    else:
        native = systems.native(system)
        if native is None:
            criteria.nobody = True  # a system this registry does not know: nobody holds it
        else:
            criteria.identifiers.append((native, ident))


def _apply(criteria: Criteria, systems: Systems, key: str, value: str) -> None:
    if key == "_count":
        criteria.count = _integer("_count", value, 0, SEARCH_LIMIT_MAX)
    elif key == "_offset":
        criteria.offset = _integer("_offset", value, 0, SEARCH_OFFSET_MAX)
    elif key == "_id":
        criteria.ids.append(value)
    elif key == "identifier":
        _identifier(criteria, systems, value)
    elif key in ("family", "given", "name"):
        getattr(criteria, key).extend(_words(key, value))
    elif key == "birthdate":
        criteria.birthdate.append(_date_range(value))
    elif key == "gender":
        if value not in ("male", "female", "unknown", "other"):
            raise _bad("gender must be male, female, unknown or other")
        criteria.gender = GENDER_IN.get(value)
        criteria.nobody = criteria.nobody or criteria.gender is None  # other: no native value
    elif key == "address-state":
        region = value.strip().upper()
        if not _REGION.fullmatch(region):
            raise _bad("address-state must be a region code: three letters, e.g. DKR")
        criteria.region = region
