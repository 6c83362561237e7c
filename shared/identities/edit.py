"""Changing an identity: its fields, its external ids and its programmes.

Each change of state has one operation here, which the API (a local write, appending its
change) and sync (a remote write, under last-writer-wins or add-wins rules decided by the
applier) both call. Local operations take the ID the caller gave (``named``): the change
names it, so that an unmerge later knows whose the write was.
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from ..errors import ExternalIdInUse
from ..matching import NameFrequencies
from ..storage import schema as t
from ..storage.store import Tx
from .family import relink
from .fields import Clock, Row, clock_of, clocks_of, db_value, stamp, wire_value
from .index import index, recount
from .lookup import row_by_pk

__all__ = [
    "add_programme",
    "check_external_ids_free",
    "claim_external_id",
    "drop_programme",
    "merge_programme",
    "set_external_id",
    "set_fields",
    "touch",
    "write_fields",
]

_COUNTED = frozenset(("first_name", "last_name", "date_of_birth", "region_code"))  # what NameFrequencies counts


async def touch(tx: Tx, pk: int) -> None:
    """The identity changed (``updated_at``)."""
    await tx.conn.execute(sa.update(t.identity).where(t.identity.c.pk == pk).values(updated_at=tx.now))


# -- fields -----------------------------------------------------------------------------


async def set_fields(tx: Tx, frequencies: NameFrequencies, node_id: str, row: Row, changes: dict[str, Any]) -> None:
    """A local edit of fields (values as the database holds them): logged with the clocks it replaces."""
    if not changes:
        return
    clocks = clocks_of(row)
    payload: dict[str, Any] = {f: wire_value(v) for f, v in changes.items()}
    # The clocks of the values this write replaces: a replica holding another clock
    # knows the two writes were concurrent.
    payload["_base"] = {f: clocks.get(f) for f in changes}
    hlc = tx.change("identity.set", row.mpi_id, payload)
    clocks.update({f: stamp(hlc, node_id) for f in changes})
    await tx.conn.execute(
        sa.update(t.identity).where(t.identity.c.pk == row.pk).values(**changes, clocks=json.dumps(clocks), updated_at=tx.now)
    )
    await index(tx, row.pk)
    if "related_persons" in changes:
        await relink(tx, row.pk, changes["related_persons"])
    if {"first_name", "last_name"} & changes.keys():
        recount(tx, frequencies, row, await row_by_pk(tx.conn, row.pk))


async def write_fields(
    tx: Tx, frequencies: NameFrequencies, row: Row, values: dict[str, Any], clock: Clock
) -> dict[str, Any]:
    """A remote write of fields (values as the change log holds them), last writer wins field by field.

    Returns the fields whose value changed (database form).
    """
    clocks = clocks_of(row)
    won: dict[str, Any] = {}
    advanced = False
    for name, value in values.items():
        if clock > clock_of(clocks, name):
            advanced = True
            clocks[name] = list(clock)
            if wire_value(getattr(row, name)) != value:
                won[name] = db_value(name, value)
    if won:
        await tx.conn.execute(
            sa.update(t.identity).where(t.identity.c.pk == row.pk).values(**won, clocks=json.dumps(clocks), updated_at=tx.now)
        )
        if "related_persons" in won:
            await relink(tx, row.pk, won["related_persons"])
        if row.merged_into is None and row.status == "active":
            await index(tx, row.pk)
            if _COUNTED & won.keys():
                recount(tx, frequencies, row, await row_by_pk(tx.conn, row.pk))
    elif advanced:
        await tx.conn.execute(sa.update(t.identity).where(t.identity.c.pk == row.pk).values(clocks=json.dumps(clocks)))
    return won


# -- external ids -----------------------------------------------------------------------


async def check_external_ids_free(conn: AsyncConnection, external: dict[str, str], owner_pk: int | None) -> None:
    """Refuse (409 external_id_in_use) an external id another identity holds."""
    for system, value in external.items():
        holder = (
            await conn.execute(
                sa.select(t.identity.c.mpi_id, t.identity.c.pk)
                .join(t.external_id, t.external_id.c.identity_pk == t.identity.c.pk)
                .where(t.external_id.c.system == system, t.external_id.c.value == value)
            )
        ).first()
        if holder is not None and holder.pk != owner_pk:
            raise ExternalIdInUse(f"{system} {value} is already linked to another identity", existing_mpi_id=holder.mpi_id)


async def set_external_id(tx: Tx, pk: int, named: str, system: str, value: str, url: str | None = None) -> None:
    """A local link: one value per system per identity, a new value replaces the old one."""
    await tx.conn.execute(sa.delete(t.external_id).where(t.external_id.c.identity_pk == pk, t.external_id.c.system == system))
    await tx.conn.execute(
        sa.insert(t.external_id).values(system=system, value=value, identity_pk=pk, instance_url=url, linked_at=tx.now)
    )
    tx.change("external_id.add", named, {"system": system, "value": value, "instance_url": url})


async def claim_external_id(tx: Tx, pk: int, system: str, value: str, url: str | None, clock: Clock) -> None:
    """A remote link: (identity, system) := value if ``clock`` is newer; the newest claim of a value holds it."""
    row = (await tx.conn.execute(sa.select(t.identity.c.clocks).where(t.identity.c.pk == pk))).one()
    clocks = clocks_of(row)
    key = f"ext:{system}"
    if clock <= clock_of(clocks, key):
        return
    clocks[key] = list(clock)
    await tx.conn.execute(sa.update(t.identity).where(t.identity.c.pk == pk).values(clocks=json.dumps(clocks)))
    await tx.conn.execute(sa.delete(t.external_id).where(t.external_id.c.identity_pk == pk, t.external_id.c.system == system))
    x = t.external_id
    holder = (
        await tx.conn.execute(
            sa.select(x.c.identity_pk, t.identity.c.clocks)
            .join(t.identity, t.identity.c.pk == x.c.identity_pk)
            .where(x.c.system == system, x.c.value == value)
        )
    ).first()
    if holder is not None:
        if clock_of(clocks_of(holder), key) > clock:
            return
        await tx.conn.execute(sa.delete(x).where(x.c.system == system, x.c.value == value))
    await tx.conn.execute(sa.insert(x).values(system=system, value=value, identity_pk=pk, instance_url=url, linked_at=tx.now))


# -- programmes -------------------------------------------------------------------------


async def add_programme(tx: Tx, row: Row, programme_type: str, linked_at: str, named: str | None = None) -> bool:
    """A local enrolment; False when the identity takes part already (nothing written)."""
    inserted = (
        await tx.conn.execute(
            tx.insert_ignore(t.programme)
            .values(identity_pk=row.pk, programme_type=programme_type, linked_at=linked_at)
            .returning(t.programme.c.programme_type)
        )
    ).first()
    if inserted is None:
        return False
    tx.change("programme.add", named or row.mpi_id, {"programme_type": programme_type, "linked_at": linked_at})
    await touch(tx, row.pk)
    return True


async def merge_programme(tx: Tx, pk: int, programme_type: str, linked_at: str) -> None:
    """A remote enrolment: programmes are an add-wins set, ``linked_at`` the earliest anyone gave."""
    p = t.programme
    await tx.conn.execute(tx.insert_ignore(p).values(identity_pk=pk, programme_type=programme_type, linked_at=linked_at))
    await tx.conn.execute(
        sa.update(p)
        .where(p.c.identity_pk == pk, p.c.programme_type == programme_type, p.c.linked_at > linked_at)
        .values(linked_at=linked_at)
    )


async def drop_programme(tx: Tx, pk: int, programme_type: str) -> None:
    p = t.programme
    await tx.conn.execute(sa.delete(p).where(p.c.identity_pk == pk, p.c.programme_type == programme_type))
