"""Unmerge: undo a merge, putting back on the merged-away identity what was its own.

What belongs to the source is read from the change log of this replica (the hub holds
every node's): the programmes, cards and external ids whose changes named the source's
ID, before the merge or after it (writes to a merged ID land on the canonical one, and come
back with the unmerge). The unmerge is one change, ``identity.unmerge``, carrying all of
that, so every replica applies the same thing (``undo``) whatever it held, and it flows
down to the nodes like a merge. The source's own fields never left its row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from ..errors import NotFound, NotMerged
from ..matching import NameFrequencies
from ..storage import schema as t
from ..storage.store import Tx
from .edit import drop_programme, merge_programme
from .fields import Row, check_id
from .index import index
from .lookup import find, root_of, row_of
from .merge import Settled, settle_group

__all__ = ["Undone", "belongings", "undo", "unmerge"]


async def belongings(conn: AsyncConnection, mpi_ids: list[str]) -> tuple[dict[str, str], set[str], set[tuple[str, str]]]:
    """(programme -> linked_at, card token hashes, external ids) that changes naming these IDs added.

    Changes the hub set aside (``sync_setaside``) are not counted: they added nothing.
    """
    programmes: dict[str, str] = {}
    cards: set[str] = set()
    external: set[tuple[str, str]] = set()
    c, aside = t.change_log.c, t.sync_setaside.c
    rows = await conn.execute(
        sa.select(c.kind, c.payload)
        .where(
            c.mpi_id.in_(mpi_ids),
            c.kind.in_(["identity.create", "programme.add", "card.issue", "external_id.add"]),
            # What the hub set aside (a node's change it refused or could not apply) never applied.
            ~sa.exists().where(aside.node_id == c.node_id, aside.seq == c.seq),
        )
        .order_by(c.hlc)
    )
    for kind, raw in rows:
        payload = json.loads(raw)
        if kind == "programme.add":
            at = str(payload.get("linked_at") or "")
            programmes[payload["programme_type"]] = min(at, programmes.get(payload["programme_type"], at))
        elif kind == "card.issue":
            cards.add(payload["token_hash"])
        elif kind == "external_id.add":
            external.add((payload["system"], payload["value"]))
        else:
            external.update((str(s), str(v)) for s, v in (payload.get("external_ids") or {}).items())
    return programmes, cards, external


@dataclass
class Undone:
    """What an unmerge did: the source active again (None if this replica does not hold it),
    the canonical identity it left, and the group recomputations' region moves."""

    row: Row | None
    root: Row | None
    before: Row | None
    moved: list[tuple[Row, str]]


async def unmerge(tx: Tx, frequencies: NameFrequencies, mpi_id: str, reason: str | None) -> tuple[str, dict[str, Any], Undone]:
    """A local unmerge of ``mpi_id``: (canonical ID before, the change's payload, what was done)."""
    source_id = check_id(mpi_id)
    row = await row_of(tx.conn, source_id)
    if row is None:
        raise NotFound(f"no identity {source_id}")
    if row.merged_into is None:
        raise NotMerged(f"{source_id} is not merged into another identity")
    links = (await tx.conn.execute(sa.select(t.merge_link).where(t.merge_link.c.source == source_id))).all()
    if not links:
        raise NotMerged(f"{source_id} joined its group through another identity: unmerge that one", code="not_directly_merged")
    canonical = (await find(tx.conn, source_id)).row
    members = [
        m
        for (m,) in await tx.conn.execute(sa.select(t.identity.c.mpi_id).where(t.identity.c.merged_into == canonical.mpi_id))
        if m != source_id
    ] + [canonical.mpi_id]
    mine, cards, external = await belongings(tx.conn, [source_id])
    theirs, _, _ = await belongings(tx.conn, members)
    payload: dict[str, Any] = {
        "source": source_id,
        "target": canonical.mpi_id,
        "reason": reason,
        "links": [[link.source, link.target, link.hlc, link.node_id] for link in links],
        "programmes": sorted([p, at] for p, at in mine.items()),
        "shared_programmes": sorted(mine.keys() & theirs.keys()),
        "cards": sorted(cards),
        "external_ids": sorted([s, v] for s, v in external),
    }
    tx.change("identity.unmerge", source_id, payload)
    done = await undo(tx, frequencies, payload)
    tx.audit("unmerge", source_id, target=canonical.mpi_id, reason=reason,
             programmes=len(mine), cards=len(cards), external_ids=len(external))
    return canonical.mpi_id, payload, done


async def undo(tx: Tx, frequencies: NameFrequencies, p: dict[str, Any]) -> Undone:
    """Apply an ``identity.unmerge`` payload: the links named go (and stay gone), and what was the source's goes back.

    ``links`` (the merge links removed), ``target`` (the canonical identity before),
    ``programmes`` / ``cards`` / ``external_ids`` that belong to the source, and
    ``shared_programmes`` (those both identities had, which stay on the target too).
    """
    source = str(p["source"])
    m = t.merge_link.c
    for link_source, link_target, hlc, node_id in p.get("links", []):
        await tx.conn.execute(
            tx.insert_ignore(t.merge_unlink).values(
                source=link_source, target=link_target, hlc=hlc, node_id=node_id, unmerged_at=tx.now
            )
        )
        await tx.conn.execute(
            sa.delete(t.merge_link).where(
                m.source == link_source, m.target == link_target, m.hlc == hlc, m.node_id == node_id
            )
        )
    before = await row_of(tx.conn, str(p.get("target") or ""))
    moved: list[tuple[Row, str]] = []
    settled: Settled = await settle_group(tx, frequencies, source)
    moved += settled.moved
    if before is not None:
        moved += (await settle_group(tx, frequencies, before.mpi_id)).moved
    row = await row_of(tx.conn, source)
    if row is None:
        return Undone(None, None, before, moved)
    root = await root_of(tx.conn, before) if before is not None else None
    shared = set(p.get("shared_programmes", []))
    for programme_type, linked_at in p.get("programmes", []):
        await merge_programme(tx, row.pk, programme_type, linked_at)
        if root is not None and root.pk != row.pk and programme_type not in shared:
            await drop_programme(tx, root.pk, programme_type)
    if p.get("cards"):
        await tx.conn.execute(sa.update(t.card).where(t.card.c.token_hash.in_(list(p["cards"]))).values(identity_pk=row.pk))
    for system, value in p.get("external_ids", []):
        await tx.conn.execute(
            sa.update(t.external_id)
            .where(t.external_id.c.system == system, t.external_id.c.value == value)
            .values(identity_pk=row.pk)
        )
    await index(tx, row.pk)
    return Undone(row, root, before, moved)
