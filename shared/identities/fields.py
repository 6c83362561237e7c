"""What an identity is made of: its demographic fields, their clocks, and the forms of its values.

Every replica keeps, per field, the clock ``[hlc, node_id]`` of the write that set it
(``identity.clocks``, a JSON object; ``_merged`` is the clock of the merge of this identity,
``ext:<system>`` that of its external id of that system). These helpers read and write
those clocks and convert values between the database, the API and the change log.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from .. import ids
from ..errors import BadRequest
from ..matching import Person
from ..matching.family import links_of, mother_of

__all__ = [
    "DEMOGRAPHIC",
    "REVIEWED",
    "Clock",
    "Found",
    "Row",
    "api_time",
    "check_id",
    "clock_of",
    "clocks_of",
    "db_value",
    "hlc_time",
    "iso",
    "person_from_payload",
    "related_json",
    "related_list",
    "stamp",
    "wire_value",
]

# The fields a caller may set; sync writes them one register each. ``related_persons`` is
# the caregiver links as one value (JSON text, ``related_json``): last writer wins, like a name.
DEMOGRAPHIC = (
    "first_name",
    "last_name",
    "date_of_birth",
    "gender",
    "region_code",
    "country_code",
    "phone_number",
    "date_of_birth_estimated",
    "related_persons",
)
# The fields whose concurrent edit a person must look at (a review item at the hub).
REVIEWED = ("first_name", "last_name", "date_of_birth", "gender")

Clock = tuple[int, str]
Row = sa.Row[*tuple[Any, ...]]
"""A row of ``identity`` (all its columns), or of any other table."""

_NONE: Clock = (0, "")


def check_id(text: str) -> str:
    """A caller's MPI ID, normalised, or 400 invalid_mpi_id / invalid_check_character."""
    try:
        return str(ids.parse(text))
    except ids.IdError as exc:
        raise BadRequest(exc.message, code=exc.code) from None


def clocks_of(row: Row) -> dict[str, Any]:
    """The clocks of an identity row (``{}`` for a row that has none yet)."""
    return dict(json.loads(row.clocks or "{}"))


def clock_of(clocks: Mapping[str, Any], key: str) -> Clock:
    """The clock of one field; older databases kept a bare HLC."""
    value = clocks.get(key)
    if value is None:
        return _NONE
    if isinstance(value, int):
        return (value, "")
    return (int(value[0]), str(value[1]))


def stamp(hlc: int, node_id: str) -> list[Any]:
    """A clock as stored (JSON has no tuples)."""
    return [hlc, node_id]


def iso(value: dt.date | None) -> str | None:
    return value.isoformat() if value is not None else None


def db_value(name: str, value: Any) -> Any:
    """A field value from the change log (dates as text), as the database holds it."""
    if name == "date_of_birth":
        return dt.date.fromisoformat(value) if isinstance(value, str) and value else None
    if name == "date_of_birth_estimated":
        return bool(value)  # absent from the changes of a replica that predates it: not estimated
    if name == "related_persons":
        # Another replica's links, as this one stores them: well-formed or none (a crafted change
        # cannot plant text that every later read would trip on).
        return related_json(links_of(value)) if isinstance(value, str) else None
    return value


def related_json(links: Iterable[tuple[str, str]]) -> str | None:
    """Caregiver links (MPI ID, relationship) as stored and synced: sorted JSON, None for none."""
    unique = sorted(set(links))
    if not unique:
        return None
    return json.dumps([{"mpi_id": m, "relationship": r} for m, r in unique], separators=(",", ":"))


def related_list(value: str | None) -> list[dict[str, str]]:
    """The stored links as the API answers them (anything malformed, which no writer here makes, skipped)."""
    return [{"mpi_id": m, "relationship": r} for m, r in sorted(set(links_of(value)))]


def wire_value(value: Any) -> Any:
    """A field value as the change log and the API write it."""
    return value.isoformat() if isinstance(value, dt.date) else value


def api_time(value: str) -> str:
    """API timestamps are whole seconds, as in the reference (``2026-05-15T09:00:00Z``)."""
    return value[:19] + "Z"


def hlc_time(hlc: int) -> str:
    """The wall-clock time an HLC was stamped at, as the database writes timestamps."""
    ms = hlc >> 16
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def person_from_payload(p: Mapping[str, Any]) -> Person:
    """The matcher's view of an ``identity.create`` payload."""
    return Person(
        first_name=str(p.get("first_name") or ""),
        last_name=str(p.get("last_name") or ""),
        date_of_birth=db_value("date_of_birth", p.get("date_of_birth")),
        gender=p.get("gender"),
        region_code=p.get("region_code"),
        phone_number=p.get("phone_number"),
        external_ids=p.get("external_ids") or {},
        date_of_birth_estimated=bool(p.get("date_of_birth_estimated")),
        mother_mpi_id=mother_of(p.get("related_persons")),
    )


@dataclass(frozen=True, slots=True)
class Found:
    """An identity as stored, reached from the ID a caller gave (merges followed).

    ``programmes`` ([(type, linked_at)], oldest first) and ``external_ids`` are filled by
    ``lookup.find_whole`` only, which reads them in the same statement.
    """

    row: Row
    requested: str
    programmes: list[tuple[str, str]] = field(default_factory=list)
    external_ids: dict[str, str] = field(default_factory=dict)
    related: list[dict[str, str]] | None = None  # the links resolved through merges (``views.whole``)

    @property
    def merged_from(self) -> str | None:
        return self.requested if self.requested != self.row.mpi_id else None
