"""Caregiver links: who is whose mother, father, guardian or caregiver.

An identity's links are one field, ``identity.related_persons`` (sorted JSON, synced like a
name: last writer wins). ``related_person`` indexes them by the ID they point at, for
``GET /mpi/search?related_to=``; every writer of the field calls ``relink`` in the same
transaction. Links are never rewritten by a merge of the identity they point at: they are
resolved through merges when read (``resolve``, ``linked_to``), so an unmerge needs no undo.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from ..errors import BadRequest
from ..matching.family import MOTHER
from ..storage import schema as t
from ..storage.store import Tx
from .fields import Row, check_id, related_json, related_list
from .lookup import MERGE_CHAIN_LIMIT, find

__all__ = ["MAX_LINKS", "check_links", "linked_to", "relink", "relink_many", "resolve", "union"]

MAX_LINKS = 10


async def relink_many(tx: Tx, items: Sequence[tuple[int, str | None]]) -> None:
    """Rewrite the ``related_person`` rows of these identities from their field's value."""
    if not items:
        return
    r = t.related_person
    await tx.conn.execute(sa.delete(r).where(r.c.identity_pk.in_([pk for pk, _ in items])))
    rows = [
        {"identity_pk": pk, "related_mpi_id": link["mpi_id"], "relationship": link["relationship"]}
        for pk, value in items
        for link in related_list(value)
    ]
    if rows:
        await tx.conn.execute(sa.insert(r), rows)


async def relink(tx: Tx, pk: int, value: str | None) -> None:
    await relink_many(tx, [(pk, value)])


def union(*values: str | None) -> str | None:
    """Links of several identities as one (a merge keeps every caregiver either record had)."""
    return related_json((x["mpi_id"], x["relationship"]) for v in values for x in related_list(v))


async def _canonical(conn: AsyncConnection, mpi_ids: Sequence[str]) -> dict[str, str]:
    """{ID: the canonical ID it was merged into (itself when not merged)} for the IDs that exist."""
    i = t.identity.c
    out: dict[str, str] = {}
    todo = set(mpi_ids)
    into: dict[str, str | None] = {}
    for _ in range(MERGE_CHAIN_LIMIT):
        ask = sorted(todo - into.keys())
        if not ask:
            break
        for mpi_id, merged_into in await conn.execute(sa.select(i.mpi_id, i.merged_into).where(i.mpi_id.in_(ask))):
            into[mpi_id] = merged_into
        todo = {v for v in into.values() if v is not None}
    for start in mpi_ids:
        current: str | None = start
        for _ in range(MERGE_CHAIN_LIMIT):
            if current not in into:
                current = None
                break
            nxt = into[current]
            if nxt is None:
                break
            current = nxt
        if current is not None:
            out[start] = current
    return out


async def resolve(conn: AsyncConnection, values: Sequence[str | None]) -> list[list[dict[str, str]]]:
    """Each identity's links as the API answers them: pointing at canonical identities (merges followed).

    One query a merge hop for the whole page, none when no identity has links.
    """
    lists = [related_list(v) for v in values]
    targets = sorted({x["mpi_id"] for links in lists for x in links})
    if not targets:
        return lists
    canonical = await _canonical(conn, targets)
    return [
        related_list(related_json((canonical.get(x["mpi_id"], x["mpi_id"]), x["relationship"]) for x in links))
        for links in lists
    ]


async def check_links(conn: AsyncConnection, links: Sequence[Any], own: Row | None) -> str | None:
    """Validate a caller's links (objects with ``mpi_id`` and ``relationship``): the stored value.

    Each ID is checked and followed to its canonical identity (404 not_found when it does not
    exist); a link to oneself is 400 ``related_person_self``, two mothers or two fathers 400
    ``related_person_conflict``, a mother who is (through mothers) her own child's child 400
    ``related_person_cycle``.
    """
    pairs: list[tuple[str, str]] = []
    for link in links:
        found = await find(conn, check_id(str(link.mpi_id)))
        if own is not None and found.row.pk == own.pk:
            raise BadRequest("an identity cannot be related to itself", code="related_person_self")
        pairs.append((found.row.mpi_id, str(link.relationship)))
    for single in ("mother", "father"):
        if len({m for m, r in pairs if r == single}) > 1:
            raise BadRequest(f"more than one {single} given", code="related_person_conflict")
    mother = next((m for m, r in pairs if r == MOTHER), None)
    if own is not None and mother is not None:
        # Follow the mother's mothers: meeting this identity again would be a cycle.
        seen: set[str] = set()
        current: str | None = mother
        while current is not None and current not in seen and len(seen) < 64:
            if current == own.mpi_id:
                raise BadRequest("these links would make a cycle of mothers", code="related_person_cycle")
            seen.add(current)
            row = (await conn.execute(sa.select(t.identity.c.related_persons).where(t.identity.c.mpi_id == current))).first()
            up = next((x["mpi_id"] for x in related_list(row.related_persons if row else None) if x["relationship"] == MOTHER), None)
            current = (await _canonical(conn, [up])).get(up) if up else None
    return related_json(pairs)


async def linked_to(conn: AsyncConnection, mpi_ids: Sequence[str]) -> list[tuple[int, str]]:
    """(identity pk, relationship) of the active identities linked to any of these IDs, merges resolved.

    ``mpi_ids`` is an identity with every ID merged into it; a linking identity that was
    merged counts as its canonical identity.
    """
    r, i = t.related_person, t.identity
    rows = (
        await conn.execute(
            sa.select(i.c.mpi_id, r.c.relationship)
            .join(i, i.c.pk == r.c.identity_pk)
            .where(r.c.related_mpi_id.in_(list(mpi_ids)))
        )
    ).all()
    canonical = await _canonical(conn, sorted({m for m, _ in rows}))
    wanted = sorted({canonical[m] for m, _ in rows if m in canonical})
    pks = {
        mpi_id: pk
        for pk, mpi_id in await conn.execute(
            sa.select(i.c.pk, i.c.mpi_id).where(i.c.mpi_id.in_(wanted), i.c.status == "active")
        )
    }
    out: dict[int, str] = {}
    for m, relationship in rows:
        c = canonical.get(m)
        if c in pks and c not in mpi_ids:
            out.setdefault(pks[c], relationship)
    return sorted(out.items())
