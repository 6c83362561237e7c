"""Holdings: identities outside a node's regions that the node holds, kept current by the feed.

A node can hold an identity of a region it does not subscribe to (it registered a visitor,
edited or carded someone found by search, merged across regions). When the hub applies the
node's change set it records each such identity in ``sync_holding`` (``record``); the feed
sends the node every later change to what it holds (``held_by``). A merge touching a held
identity extends the holding to the group and sends the holders a snapshot of the canonical
identity (``merge_for_holders``), routed to that identity's region *excluding* that region:
by region it reaches nobody, only the holders through their holdings.
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa

from ..errors import ApiError
from ..identities import find, snapshot
from ..storage import schema as t
from ..storage.store import Tx
from .apply import Route
from .changelog import Change

__all__ = ["FollowUp", "held_by", "merge_for_holders", "record"]

FollowUp = tuple[str, str, dict[str, Any], Route]


def held_by(node_name: str) -> sa.Select[tuple[str]]:
    """The IDs node ``node_name`` holds outside its regions (a subquery for the feed)."""
    return sa.select(t.sync_holding.c.mpi_id).where(t.sync_holding.c.node_name == node_name)


async def record(tx: Tx, node_name: str, regions: set[str], changes: list[Change]) -> None:
    """Remember the identities outside the node's regions that its changes touched: it holds them.

    A node that registered, edited, merged or carded someone of another region keeps that
    identity; the feed sends it every later change to it (``HubSync._feed``), so it stays current.
    """
    touched: set[str] = set()
    for c in changes:
        if c.mpi_id:
            touched.add(c.mpi_id)
        if c.kind == "identity.merge":
            payload = json.loads(c.payload)
            touched.update(str(payload[k]) for k in ("source", "target") if payload.get(k))
    if not touched:
        return
    held: set[str] = set()
    frontier = touched
    for _ in range(8):  # merged IDs: the node holds their canonical identity too
        rows = (
            await tx.conn.execute(
                sa.select(t.identity.c.mpi_id, t.identity.c.region_code, t.identity.c.merged_into)
                .where(t.identity.c.mpi_id.in_(sorted(frontier)))
            )
        ).all()
        held.update(r.mpi_id for r in rows if r.region_code not in regions)
        frontier = {r.merged_into for r in rows if r.merged_into and r.merged_into not in held} - touched
        if not frontier:
            break
    if held:
        await tx.conn.execute(
            tx.insert_ignore(t.sync_holding),
            [{"node_name": node_name, "mpi_id": m, "since": tx.now} for m in sorted(held)],
        )


async def merge_for_holders(tx: Tx, source: str, target: str) -> list[FollowUp]:
    """A merge touching an identity some node holds: they hold the whole group, and get its canonical identity.

    The snapshot is routed to the canonical identity's region *excluding* that region, so by
    region it reaches nobody (they have it already): only the holders, through their holdings.
    """
    holders = set(
        (await tx.conn.execute(
            sa.select(t.sync_holding.c.node_name).where(t.sync_holding.c.mpi_id.in_([source, target]))
        )).scalars()
    )
    if not holders:
        return []
    try:
        root_row = (await find(tx.conn, target)).row
    except ApiError:  # the target is unknown here (yet): nothing to send
        return []
    group = {source, target, root_row.mpi_id}
    await tx.conn.execute(
        tx.insert_ignore(t.sync_holding),
        [{"node_name": n, "mpi_id": m, "since": tx.now} for n in sorted(holders) for m in sorted(group)],
    )
    region = root_row.region_code
    return [("identity.snapshot", root_row.mpi_id, await snapshot(tx.conn, root_row.pk),
             Route(region_a=region, exclude=region))]
