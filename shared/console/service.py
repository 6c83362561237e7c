"""The console's one door to the domain: every read and write its pages make goes through here.

Part 1 calls the domain operations as the API does (the review queue and its decisions,
search, get, unmerge, the hub's ``nodes()``, the node's sync ``status()``), so that moving
those operations to other modules means changing the calls here and nowhere else.

Part 2 holds the reads the domain has no operation for yet, each a small query of its own:
one review item, the names on a queue page, where an identity was registered, its cards, its
history, the feed backlog of each node, refused sets and clock skew per node, the dedup
state. (Who is signed in is not asked here: sessions and tokens are ``Auth``'s.)
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from ..identities import find
from ..registry import Registry
from ..review.queue import decide, list_reviews
from ..schemas import ReviewDecisionIn, ReviewQuery, SearchQuery, UnmergeIn, parse_body
from ..storage import schema as t
from ..storage.store import Store
from ..sync.changeset import open_envelope
from ..sync.hlc import hlc_to_ms
from ..sync.hub import CARD_KINDS, HubSync
from ..sync.node import NodeSync

__all__ = ["ConsoleService"]

_HISTORY_ACTIONS = ("register", "force_create_override", "patch", "merge", "unmerge", "review_decision", "link_dhis2",
                    "enrol", "card_issue", "card_revoke")


@dataclass
class ConsoleService:
    store: Store
    registry: Registry
    hub_sync: HubSync | None = None
    node_sync: NodeSync | None = None

    # == 1. domain operations ==================================================================

    async def reviews(self, query: ReviewQuery) -> dict[str, Any]:
        """The review queue, as GET /review answers it."""
        return await list_reviews(self.registry, query)

    async def decide(self, item_id: int, decision: str, reason: str, actor: str) -> dict[str, Any]:
        """A decision, as POST /review/{id}/decision makes it (a merge goes through Registry.merge)."""
        body = parse_body(ReviewDecisionIn, {"decision": decision, "reason": reason})
        return await decide(self.registry, item_id, body, actor)

    async def search(self, query: SearchQuery, actor: str) -> dict[str, Any]:
        """GET /mpi/search."""
        return await self.registry.search(query, actor)

    async def identity(self, mpi_id: str, actor: str) -> dict[str, Any]:
        """GET /mpi/{mpi_id}: the canonical identity, ``merged_from`` when the ID was merged."""
        return await self.registry.get(mpi_id, actor)

    async def unmerge(self, mpi_id: str, reason: str, actor: str) -> dict[str, Any]:
        """POST /mpi/unmerge."""
        return await self.registry.unmerge(parse_body(UnmergeIn, {"mpi_id": mpi_id, "reason": reason}), actor)

    async def nodes(self) -> list[dict[str, Any]]:
        """GET /sync/nodes (hub)."""
        assert self.hub_sync is not None
        return await self.hub_sync.nodes()

    async def sync_status(self) -> dict[str, Any]:
        """GET /sync/status (node)."""
        assert self.node_sync is not None
        return await self.node_sync.status()

    def band(self, score: float | None) -> str | None:
        """The confidence band of a score, by the matcher's thresholds (as GET /review reports it)."""
        if score is None:
            return None
        th = self.registry.matcher.thresholds
        return "certain" if score >= th.certain else "probable" if score >= th.probable else \
            "possible" if score >= th.possible else None

    # == 2. reads the domain lacks: the console's own queries ===================================

    async def review_item(self, item_id: int) -> dict[str, Any] | None:
        """One review item (the domain lists them, but has no read of one)."""
        async with self.store.read() as conn:
            row = (await conn.execute(sa.select(t.review_item).where(t.review_item.c.pk == item_id))).first()
        if row is None:
            return None
        return {
            "id": row.pk, "mpi_ids": json.loads(row.mpi_ids), "similarity_score": row.similarity_score,
            "matched_fields": json.loads(row.matched_fields or "[]"), "reason": row.reason, "status": row.status,
            "created_at": row.created_at, "opened_by": row.actor, "detail": json.loads(row.detail or "{}"),
            "decision": row.decision, "decided_by": row.decided_by, "decided_at": row.decided_at,
        }

    async def people(self, mpi_ids: list[str], actor: str) -> dict[str, dict[str, Any]]:
        """Names and state of these IDs as stored (a queue page), audited as a read."""
        if not mpi_ids:
            return {}
        i = t.identity
        async with self.store.read() as conn:
            rows = await conn.execute(
                sa.select(i.c.mpi_id, i.c.first_name, i.c.last_name, i.c.region_code, i.c.status, i.c.merged_into)
                .where(i.c.mpi_id.in_(set(mpi_ids)))
            )
            out = {r.mpi_id: dict(r._mapping) for r in rows}
        self.store.audit_read(actor, "console_review_list", None, returned=sorted(out))
        return out

    async def registrations(self, mpi_ids: list[str]) -> dict[str, dict[str, Any]]:
        """Where and when each ID was registered: the replica whose change created it."""
        c = t.change_log
        async with self.store.read() as conn:
            rows = (
                await conn.execute(
                    sa.select(c.c.mpi_id, c.c.node_id, c.c.payload).where(
                        c.c.mpi_id.in_(mpi_ids), c.c.kind == "identity.create"
                    )
                )
            ).all()
            names = {
                r.node_id: r.name
                for r in await conn.execute(sa.select(t.sync_node.c.node_id, t.sync_node.c.name))
                if r.node_id
            }
        out: dict[str, dict[str, Any]] = {}
        for r in rows:
            payload = json.loads(r.payload)
            node = "" if r.node_id == self.store.node_id else names.get(r.node_id, r.node_id[:16])
            out[r.mpi_id] = {"node": node, "at": payload.get("created_at"), "region_code": payload.get("region_code")}
        return out

    async def cards_of(self, mpi_id: str) -> list[dict[str, Any]]:
        """Every card of the identity an ID leads to, newest first (no token hash)."""
        async with self.store.read() as conn:
            found = await find(conn, mpi_id)
            rows = await conn.execute(
                sa.select(t.card.c.card_code, t.card.c.campaign_id, t.card.c.programme_type, t.card.c.status,
                          t.card.c.issued_at, t.card.c.revoked_at)
                .where(t.card.c.identity_pk == found.row.pk)
                .order_by(t.card.c.issued_at.desc())
            )
            return [dict(r._mapping) for r in rows]

    async def merged_into(self, mpi_id: str) -> list[dict[str, Any]]:
        """IDs merged directly into this one, each with the link that did it (what an unmerge undoes)."""
        async with self.store.read() as conn:
            rows = await conn.execute(
                sa.select(t.identity.c.mpi_id, t.identity.c.first_name, t.identity.c.last_name, t.identity.c.merged_at)
                .where(t.identity.c.merged_into == mpi_id)
                .order_by(t.identity.c.merged_at)
            )
            return [dict(r._mapping) for r in rows]

    async def history(self, mpi_id: str) -> list[dict[str, Any]]:
        """What happened to an identity and to those merged into it, now or before an unmerge.

        The audit log's writes about the group (a merge and an unmerge are audited on their
        source), and merge links that arrived by sync (those have no audit row at this replica).
        Every lookup is by an indexed ID column: the audit log is never scanned.
        """
        a = t.audit_log
        async with self.store.read() as conn:
            links = (
                await conn.execute(
                    sa.select(t.merge_link).where(sa.or_(t.merge_link.c.source == mpi_id, t.merge_link.c.target == mpi_id))
                )
            ).all()
            unlinks = (
                await conn.execute(
                    sa.select(t.merge_unlink).where(
                        sa.or_(t.merge_unlink.c.source == mpi_id, t.merge_unlink.c.target == mpi_id)
                    )
                )
            ).all()
            members = (
                await conn.execute(sa.select(t.identity.c.mpi_id).where(t.identity.c.merged_into == mpi_id))
            ).scalars().all()
            group = sorted({mpi_id, *members, *(r.source for r in links), *(r.source for r in unlinks)})
            audit = (
                await conn.execute(
                    sa.select(a.c.at, a.c.actor, a.c.action, a.c.mpi_id, a.c.detail)
                    .where(a.c.mpi_id.in_(group), a.c.action.in_(_HISTORY_ACTIONS))
                    .order_by(a.c.at, a.c.pk)
                    .limit(500)
                )
            ).all()
        events: dict[tuple[str, str, str, str | None], dict[str, Any]] = {}
        for r in audit:
            detail = json.loads(r.detail or "{}")
            events[(r.at, r.actor, r.action, r.mpi_id)] = {
                "at": r.at, "actor": r.actor, "action": r.action, "mpi_id": r.mpi_id, "detail": detail,
                "reason": detail.get("reason") or "",
            }
        audited_merges = {(e["mpi_id"], e["detail"].get("target")) for e in events.values() if e["action"] == "merge"}
        for link in links:
            if (link.source, link.target) in audited_merges:
                continue
            at = _hlc_time(int(link.hlc))
            events[(at, link.node_id, "merge_link", link.source)] = {
                "at": at, "actor": f"node {link.node_id[:16]}", "action": "merge_link", "mpi_id": link.source,
                "detail": {"target": link.target}, "reason": "",
            }
        for unlink in unlinks:
            events[(unlink.unmerged_at, "", "merge_unlink", unlink.source)] = {
                "at": unlink.unmerged_at, "actor": "", "action": "merge_unlink", "mpi_id": unlink.source,
                "detail": {"target": unlink.target}, "reason": "",
            }
        return sorted(events.values(), key=lambda e: str(e["at"]), reverse=True)

    async def settled(self, pairs: list[list[str]]) -> set[str]:
        """Pair keys that were decided since they were queued: merged together, or marked not the same."""
        if not pairs:
            return set()
        flat = sorted({m for pair in pairs for m in pair})
        async with self.store.read() as conn:
            different = {
                f"{a} {b}"
                for a, b in await conn.execute(
                    sa.select(t.not_same.c.mpi_a, t.not_same.c.mpi_b).where(t.not_same.c.mpi_a.in_(flat))
                )
            }
            roots: dict[str, str] = {}
            for mpi_id in flat:
                try:
                    roots[mpi_id] = (await find(conn, mpi_id)).row.mpi_id
                except Exception:  # an ID this replica no longer holds (evicted): nothing to say
                    roots[mpi_id] = mpi_id
        out = set()
        for pair in pairs:
            key = " ".join(sorted(pair))
            if key in different or (len(pair) == 2 and roots.get(pair[0]) == roots.get(pair[1])):
                out.add(key)
        return out

    async def node_details(self) -> dict[str, dict[str, Any]]:
        """Per node name: what waits for it in the feed, fork proofs kept, and its clock skew."""
        f = t.sync_feed
        out: dict[str, dict[str, Any]] = {}
        async with self.store.read() as conn:
            nodes = (await conn.execute(sa.select(t.sync_node))).all()
            forks: dict[str, int] = {
                node_id: int(n)
                for node_id, n in await conn.execute(
                    sa.select(t.sync_fork.c.node_id, sa.func.count()).group_by(t.sync_fork.c.node_id)
                )
            }
            for node in nodes:
                regions = list(json.loads(node.regions))
                # What the hub's feed would send this node (its regions, merges touching them,
                # every card status), less what it wrote itself and what names its regions as excluded.
                backlog = (
                    await conn.execute(
                        sa.select(sa.func.count()).select_from(f).where(
                            f.c.pos > node.pull_pos,
                            f.c.node_id != (node.node_id or ""),
                            sa.or_(f.c.region_a.in_(regions), f.c.region_b.in_(regions), f.c.kind.in_(CARD_KINDS)),
                            sa.or_(f.c.exclude_region.is_(None), f.c.exclude_region.not_in(regions)),
                        )
                    )
                ).scalar_one()
                skew = None
                if node.node_id:
                    last = (
                        await conn.execute(
                            sa.select(t.sync_batch.c.envelope, t.sync_batch.c.received_at)
                            .where(t.sync_batch.c.node_id == node.node_id)
                            .order_by(t.sync_batch.c.last_seq.desc())
                            .limit(1)
                        )
                    ).first()
                    if last is not None:
                        skew = _skew_seconds(bytes(last.envelope), last.received_at)
                out[node.name] = {"backlog": int(backlog), "forks": int(forks.get(node.node_id, 0)), "skew": skew}
        return out

    async def dedup_state(self) -> dict[str, Any]:
        """The hub's dedup: identities waiting to be checked, and each sweep's progress."""
        async with self.store.read() as conn:
            pending = (await conn.execute(sa.select(sa.func.count()).select_from(t.dedup_pending))).scalar_one()
            jobs = [dict(r._mapping) for r in await conn.execute(sa.select(t.dedup_progress).order_by(t.dedup_progress.c.job))]
            # A sweep walks identities in key order: how far it is, from the largest key (no count of the registry).
            top = (await conn.execute(sa.select(sa.func.max(t.identity.c.pk)))).scalar() or 0
            for job in jobs:
                done = min(int(job["last_pk"]), top)
                job["percent"] = 100 if job["finished_at"] or not top else int(100 * done / top)
        return {"pending": int(pending), "jobs": jobs}


def _hlc_time(hlc: int) -> str:
    """The wall-clock part of a hybrid logical clock, as an API timestamp."""
    moment = dt.datetime.fromtimestamp(hlc_to_ms(hlc) / 1000, dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _skew_seconds(envelope: bytes, received_at: str) -> float | None:
    """The node's clock minus the hub's when its last stored set arrived (its signed ``sent_at``)."""
    try:
        sent = open_envelope(envelope).header.get("sent_at")
    except Exception:  # an envelope of an older format: no figure rather than a wrong one
        return None
    if not isinstance(sent, int):
        return None
    received = dt.datetime.fromisoformat(received_at.replace("Z", "+00:00")).timestamp()
    return round(sent / 1000 - received, 1)
