"""Creating identities: registered here (a new ID minted, a change logged) or arriving from another replica.

Both paths write the identity row with its clocks, its external ids and its index rows in
one statement per table, and count the names once the transaction commits. No matching
here: the duplicate check is the caller's (register, bulk import, the hub's dedup).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from ..matching import NameFrequencies, Person
from ..schemas import RegisterIn
from ..storage import schema as t
from ..storage.store import Tx
from .family import relink_many
from .fields import DEMOGRAPHIC, iso, related_json, stamp
from .index import index_new, recount

__all__ = ["Incoming", "create", "create_remote", "values_of"]


def values_of(body: RegisterIn) -> dict[str, Any]:
    """The identity fields of a register body, as the database holds them.

    Its links must be checked and made canonical first (``family.check_links``).
    """
    values = {f: getattr(body, f) for f in DEMOGRAPHIC if f != "related_persons"}
    values["related_persons"] = related_json((x.mpi_id, x.relationship) for x in body.related_persons or [])
    return values


async def create(
    tx: Tx, frequencies: NameFrequencies, node_id: str, country: str | None, items: Sequence[tuple[RegisterIn, Person]]
) -> list[str]:
    """New identities registered here, with their changes and audit records; their new IDs in order.

    ``country`` is this replica's (the ID's prefix); None takes each body's country.
    """
    records: list[dict[str, Any]] = []
    for body, _ in items:
        mpi_id = tx.mint_id(country or body.country_code, body.region_code)
        record: dict[str, Any] = {
            "mpi_id": mpi_id,
            **values_of(body),
            "status": "active",
            "created_at": tx.now,
            "updated_at": tx.now,
        }
        payload = {**record, "date_of_birth": iso(body.date_of_birth), "external_ids": body.external_ids or {}}
        hlc = tx.change("identity.create", mpi_id, payload)
        record["clocks"] = json.dumps({f: stamp(hlc, node_id) for f in DEMOGRAPHIC})
        records.append(record)
        tx.audit("register", mpi_id, force_create=body.force_create)
    pks = await tx.insert_returning_pks(t.identity, records)
    external = [
        {"system": system, "value": value, "identity_pk": pk, "linked_at": tx.now}
        for pk, (body, _) in zip(pks, items, strict=True)
        for system, value in (body.external_ids or {}).items()
    ]
    await index_new(tx, [(pk, person) for pk, (_, person) in zip(pks, items, strict=True)])
    await relink_many(tx, [(pk, r["related_persons"]) for pk, r in zip(pks, records, strict=True) if r["related_persons"]])
    await tx.insert_rows(t.external_id, external)
    for _, person in items:
        recount(tx, frequencies, None, person)
    return [r["mpi_id"] for r in records]


@dataclass(frozen=True, slots=True)
class Incoming:
    """An identity another replica created, as this one stores it (values in database form)."""

    mpi_id: str
    values: dict[str, Any]
    person: Person
    created_at: str
    updated_at: str
    clocks: dict[str, Any] = field(default_factory=dict)


async def create_remote(tx: Tx, frequencies: NameFrequencies, incoming: Sequence[Incoming]) -> dict[str, int]:
    """Identities from other replicas, in bulk (a backlog is made of them); {mpi_id: pk}.

    Their external ids, programmes and cards are the caller's to add (they follow sync's rules).
    """
    if not incoming:
        return {}
    rows = [
        {
            "mpi_id": new.mpi_id,
            **{f: new.values.get(f) for f in DEMOGRAPHIC},
            "status": "active",
            "created_at": new.created_at,
            "updated_at": new.updated_at,
            "clocks": json.dumps(new.clocks),
        }
        for new in incoming
    ]
    await tx.bulk_insert(t.identity, rows)
    inserted = await tx.conn.execute(
        sa.select(t.identity.c.pk, t.identity.c.mpi_id).where(t.identity.c.mpi_id.in_([new.mpi_id for new in incoming]))
    )
    pks = {mpi_id: pk for pk, mpi_id in inserted}
    await index_new(tx, [(pks[new.mpi_id], new.person) for new in incoming])
    await relink_many(tx, [(pks[new.mpi_id], new.values["related_persons"]) for new in incoming if new.values.get("related_persons")])
    for new in incoming:
        recount(tx, frequencies, None, new.person)
    return pks
