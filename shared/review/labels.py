"""Review decisions as labelled pairs: what ``mpi-hub model train`` learns from the reviewers.

A ``merge`` decision says the two identities are one person, a ``not_same`` decision that they
are two. Each is kept (``match_label``, written in the decision's own transaction) with the
two identities as they stood when the reviewer looked at them: the matcher's fields, external
ids included, as JSON. A merge changes the surviving record, so reading it later would teach
the model a pair nobody reviewed. Decisions taken before this table existed (migration 100)
are read from the review items, with the identities as they are now (``pairs``).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from ..identities.fields import Found
from ..identities.lookup import find_whole
from ..matching import Person, person_of
from ..storage import schema as t
from ..storage.dialects import Dialect
from ..storage.store import Tx

__all__ = ["LabelledPair", "pairs", "person_json", "record_label", "snapshot"]

_FIELDS = ("first_name", "last_name", "gender", "region_code", "phone_number", "date_of_birth_estimated", "mother_mpi_id")


@dataclass(frozen=True, slots=True)
class LabelledPair:
    item_id: int
    same: bool  # merge: True, not_same: False
    a: Person
    b: Person
    decided_at: str


def person_json(found: Found) -> str:
    """The matcher's view of an identity, as stored with a decision."""
    p = person_of(found.row, found.external_ids)
    value: dict[str, Any] = {f: getattr(p, f) for f in _FIELDS}
    value["date_of_birth"] = p.date_of_birth.isoformat() if p.date_of_birth else None
    value["external_ids"] = dict(p.external_ids)
    return json.dumps(value, sort_keys=True)


def _person(text: str) -> Person:
    v = json.loads(text)
    dob = v.get("date_of_birth")
    return Person(
        first_name=v["first_name"], last_name=v["last_name"],
        date_of_birth=dt.date.fromisoformat(dob) if dob else None,
        gender=v.get("gender"), region_code=v.get("region_code"), phone_number=v.get("phone_number"),
        external_ids=v.get("external_ids") or {},
        date_of_birth_estimated=bool(v.get("date_of_birth_estimated")),
        mother_mpi_id=v.get("mother_mpi_id"),
    )


async def snapshot(conn: AsyncConnection, dialect: Dialect, ids: list[str]) -> tuple[str, str] | None:
    """Both identities of a pair as JSON, or None when one of them is not held (nothing to learn)."""
    try:
        a, b = (await find_whole(conn, dialect, ids[0])), (await find_whole(conn, dialect, ids[1]))
    except Exception:  # NotFound, a malformed ID: the decision goes on, without a label
        return None
    return person_json(a), person_json(b)


async def record_label(tx: Tx, item_id: int, decision: str, persons: tuple[str, str] | None) -> None:
    """Keep a decision as a labelled pair, in the decision's transaction."""
    if persons is None or decision not in ("merge", "not_same"):
        return
    await tx.conn.execute(
        sa.insert(t.match_label).values(item_id=item_id, decision=decision, person_a=persons[0], person_b=persons[1],
                                        actor=tx.actor, decided_at=tx.now)
    )


async def pairs(conn: AsyncConnection, dialect: Dialect) -> list[LabelledPair]:
    """Every decision as a labelled pair: the recorded ones, then older decisions from the review items."""
    m = t.match_label
    out = [
        LabelledPair(int(r.item_id), r.decision == "merge", _person(r.person_a), _person(r.person_b), r.decided_at)
        for r in await conn.execute(sa.select(m).order_by(m.c.pk))
    ]
    r = t.review_item
    older = await conn.execute(
        sa.select(r.c.pk, r.c.mpi_ids, r.c.decision, r.c.decided_at).where(
            r.c.decision.in_(["merge", "not_same"]), r.c.pk.not_in(sa.select(m.c.item_id))
        ).order_by(r.c.pk)
    )
    for row in older.all():
        ids = json.loads(row.mpi_ids)
        if len(ids) != 2:
            continue
        persons = await snapshot(conn, dialect, ids)
        if persons is not None:
            out.append(LabelledPair(int(row.pk), row.decision == "merge", _person(persons[0]), _person(persons[1]),
                                    row.decided_at or ""))
    return out
