"""The hub's feed, as it is written: one ordered, hash-chained list of positions in ``change_log``.

Each row says which regions it concerns (``Route``): the identity's region, the other side
of a merge or an unmerge, every region for a card (``CARD_KINDS``: every node verifies every
card). Changes that nodes pushed come with the routes the applier gave them; the hub's own
changes (API writes, dedup, snapshots, evictions) are routed here, through the store's change
hook. A move or a merge across regions also appends, in the same transaction, the snapshots
and evictions the nodes of each side need (``HubPolicy``). Reading the feed for a node is
``HubSync._feed``.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import sqlalchemy as sa

from ..identities import find, snapshot
from ..identities.lookup import text_in
from ..storage import schema as t
from ..storage.store import Tx
from . import holdings
from .apply import HubPolicy, Route
from .changelog import GENESIS_HASH, Change, canonical_json

__all__ = ["CARD_KINDS", "FeedWriter"]

CARD_KINDS = ("card.issue", "card.revoke")


def _feed_hash(prev: str, node_id: str, seq: int, change: str) -> str:
    return hashlib.sha256(canonical_json([prev, node_id, seq, change]).encode()).hexdigest()


class FeedWriter:
    """Appends feed rows for the changes of a write transaction, under the hub's policy."""

    def __init__(self, policy: HubPolicy) -> None:
        self.policy = policy

    async def _append(self, tx: Tx, rows: list[tuple[str, int, str, str | None, str, Route]]) -> None:
        if not rows:
            return
        last = (
            await tx.conn.execute(sa.select(t.sync_feed.c.pos, t.sync_feed.c.hash).order_by(t.sync_feed.c.pos.desc()).limit(1))
        ).first()
        pos, prev = (int(last.pos), str(last.hash)) if last else (0, GENESIS_HASH)
        out = []
        for node_id, seq, kind, mpi_id, change, route in rows:
            if route.region_a is None and route.region_b is None and not route.country_wide:
                continue
            pos += 1
            prev = _feed_hash(prev, node_id, seq, change)
            out.append(
                {"pos": pos, "node_id": node_id, "seq": seq, "kind": kind, "mpi_id": mpi_id, "region_a": route.region_a,
                 "region_b": route.region_b, "exclude_region": route.exclude, "hash": prev}
            )
        await tx.bulk_insert(t.sync_feed, out)

    async def remote(self, tx: Tx, changes: list[Change], routes: list[Route]) -> None:
        """Changes pushed by a node, with the routes the applier gave them, and their follow-ups."""
        await self._append(tx, [(c.node_id, c.seq, c.kind, c.mpi_id, c.hash, r) for c, r in zip(changes, routes, strict=True)])
        for change, route in zip(changes, routes, strict=True):
            follow_ups = list(route.follow_ups)
            if change.kind == "identity.merge" and route.region_a is not None:
                payload = json.loads(change.payload)
                follow_ups += await holdings.merge_for_holders(tx, str(payload["source"]), str(payload["target"]))
            for kind, mpi_id, body, follow in follow_ups:
                tx.change(kind, mpi_id, {**body, "route": [follow.region_a, follow.region_b, follow.exclude]})

    async def local(self, tx: Tx, changes: list[dict[str, Any]]) -> None:
        """The hub's own changes (API writes, dedup, snapshots, evictions) go to the feed too.

        A data manager moving an identity to another region, or merging or unmerging across
        regions, at the hub needs the same snapshots and evictions as when a node does it:
        they are appended as changes of this same transaction (Tx._flush logs them and calls
        this hook again for them, where their ``route`` sends them).
        """
        rows = []
        follow_ups: list[tuple[str, str, dict[str, Any], Route]] = []
        # The regions of the changes' identities in one statement: a bulk import logs thousands.
        regions = await self._regions(tx, [c["mpi_id"] for c in changes if c["mpi_id"]])
        for c in changes:
            payload = json.loads(c["payload"])
            route = Route()
            if "route" in payload and c["kind"] in ("identity.snapshot", "evict"):
                route = Route(*payload["route"])
            elif c["kind"] == "review.open":
                continue
            else:
                region = regions.get(c["mpi_id"]) if c["mpi_id"] else None
                route = Route(region_a=region, country_wide=c["kind"] in CARD_KINDS)
                if c["kind"] == "review.not_same":
                    other = [m for m in payload.get("mpi_ids", []) if m != c["mpi_id"]]
                    route.region_b = await self._region(tx, other[0] if other else None)
                if c["kind"] == "identity.merge":
                    route.region_b = await self._region(tx, payload["target"])
                    root = (await find(tx.conn, payload["target"])).row.mpi_id
                    follow_ups += await self.policy.merged(tx, payload["source"], root)
                    follow_ups += await holdings.merge_for_holders(tx, payload["source"], payload["target"])
                if c["kind"] == "identity.unmerge":
                    route.region_b = await self._region(tx, payload["target"])
                    follow_ups += await self.policy.unmerged(tx, payload["source"], payload["target"])
                if c["kind"] == "identity.set" and "region_code" in payload and region:
                    before = (
                        await tx.conn.execute(
                            sa.select(t.sync_feed.c.region_a)
                            .where(t.sync_feed.c.mpi_id == c["mpi_id"], t.sync_feed.c.kind != "evict")
                            .order_by(t.sync_feed.c.pos.desc())
                            .limit(1)
                        )
                    ).scalar()
                    if before and before != region:
                        pk = (await tx.conn.execute(
                            sa.select(t.identity.c.pk).where(t.identity.c.mpi_id == c["mpi_id"]))).scalar_one()
                        follow_ups.append(("identity.snapshot", c["mpi_id"], await snapshot(tx.conn, pk),
                                           Route(region_a=region, exclude=before)))
                        follow_ups.append(("evict", c["mpi_id"], {"region_code": region},
                                           Route(region_a=before, exclude=region)))
            rows.append((c["node_id"], c["seq"], c["kind"], c["mpi_id"], c["hash"], route))
        await self._append(tx, rows)
        for kind, mpi_id, body, follow in follow_ups:
            tx.change(kind, mpi_id, {**body, "route": [follow.region_a, follow.region_b, follow.exclude]})

    async def _regions(self, tx: Tx, mpi_ids: list[str]) -> dict[str, str]:
        if not mpi_ids:
            return {}
        rows = await tx.conn.execute(
            sa.select(t.identity.c.mpi_id, t.identity.c.region_code).where(text_in(tx.conn, t.identity.c.mpi_id, mpi_ids))
        )
        return {str(m): str(r) for m, r in rows if r is not None}

    async def _region(self, tx: Tx, mpi_id: str | None) -> str | None:
        if not mpi_id:
            return None
        region = (await tx.conn.execute(sa.select(t.identity.c.region_code).where(t.identity.c.mpi_id == mpi_id))).scalar()
        return str(region) if region is not None else None
