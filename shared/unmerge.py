"""Unmerge: undo a merge, putting back on the merged-away identity what was its own.

What belongs to the source is read from the change log of this replica (the hub holds
every node's): the programmes, cards and external ids whose changes named the source's
ID, before the merge or after it (writes to a merged ID land on the canonical one, and come
back with the unmerge). The unmerge is one change, ``identity.unmerge``, carrying all of
that, so every replica applies the same thing whatever it held, and it flows down to the
nodes like a merge. The source's own fields never left its row.
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa

from .errors import Conflict, NotFound
from .registry import Registry, api_time, check_id
from .schemas import UnmergeIn
from .storage import schema as t
from .sync.apply import Applier, Remote

__all__ = ["unmerge"]


async def _belongings(conn: Any, mpi_ids: list[str]) -> tuple[dict[str, str], set[str], set[tuple[str, str]]]:
    """(programme -> linked_at, card token hashes, external ids) that changes naming these IDs added."""
    programmes: dict[str, str] = {}
    cards: set[str] = set()
    external: set[tuple[str, str]] = set()
    rows = await conn.execute(
        sa.select(t.change_log.c.kind, t.change_log.c.payload)
        .where(
            t.change_log.c.mpi_id.in_(mpi_ids),
            t.change_log.c.kind.in_(["identity.create", "programme.add", "card.issue", "external_id.add"]),
        )
        .order_by(t.change_log.c.hlc)
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


async def unmerge(registry: Registry, body: UnmergeIn, actor: str) -> dict[str, Any]:
    """POST /mpi/unmerge: the merged-away identity is active again, with what is its own."""
    source_id = check_id(body.mpi_id)
    store = registry.store
    async with store.write(actor) as tx:
        row = (await tx.conn.execute(sa.select(t.identity).where(t.identity.c.mpi_id == source_id))).first()
        if row is None:
            raise NotFound(f"no identity {source_id}")
        if row.merged_into is None:
            raise Conflict(f"{source_id} is not merged into another identity", code="not_merged")
        links = (await tx.conn.execute(sa.select(t.merge_link).where(t.merge_link.c.source == source_id))).all()
        if not links:
            raise Conflict(
                f"{source_id} joined its group through another identity: unmerge that one",
                code="not_directly_merged",
            )
        canonical = (await registry.find(tx.conn, source_id)).row
        members = [
            m
            for (m,) in await tx.conn.execute(sa.select(t.identity.c.mpi_id).where(t.identity.c.merged_into == canonical.mpi_id))
            if m != source_id
        ] + [canonical.mpi_id]
        mine, cards, external = await _belongings(tx.conn, [source_id])
        theirs, _, _ = await _belongings(tx.conn, members)
        payload = {
            "source": source_id,
            "target": canonical.mpi_id,
            "reason": body.reason,
            "links": [[link.source, link.target, link.hlc, link.node_id] for link in links],
            "programmes": sorted([p, at] for p, at in mine.items()),
            "shared_programmes": sorted(mine.keys() & theirs.keys()),
            "cards": sorted(cards),
            "external_ids": sorted([s, v] for s, v in external),
        }
        hlc = tx.change("identity.unmerge", source_id, payload)
        applier = Applier(registry, hub=store.meta.get("role") == "hub")
        await applier.apply_unmerge(tx, Remote(store.node_id, tx.seq, hlc, "identity.unmerge", source_id, payload))
        tx.audit("unmerge", source_id, target=canonical.mpi_id, reason=body.reason,
                 programmes=len(mine), cards=len(cards), external_ids=len(external))
    return {
        "mpi_id": source_id,
        "previous_canonical_mpi_id": canonical.mpi_id,
        "status": "active",
        "unmerged_at": api_time(tx.now),
    }
