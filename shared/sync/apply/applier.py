"""Applying changes from other replicas, so that every replica converges to the same state.

Rules (the same on node and hub, whatever order changes arrive in):

- **Fields** are last-writer-wins registers: each field keeps the clock ``[hlc, node_id]``
  of the write that set it (``identity.clocks``); a change wins when its clock is greater.
- **External ids** are one register per (identity, system), clock ``ext:<system>``; when two
  identities claim the same (system, value), the later claim holds it.
- **Programmes** are an add-wins set; ``linked_at`` is the earliest anyone gave.
- **Merges** are links of a union-find (``identities.merge.settle_group``). A field write to
  a merged ID lands on the canonical identity when it is newer than the merge, and on the
  merged one otherwise, whichever of the two arrived first.
- **Cards** go from valid to revoked, never back. A replica that does not hold the identity
  keeps only the PII-free status (``card_status``), which verify consults too.
- A concurrent edit of a name, the sex or the birth date (the writer had not seen the value
  it replaced) resolves by the same rule; the role's policy may open a review item.

The Applier decides whether and where a change applies and calls the identity layer's
operations to apply it; it writes no identity table itself. What differs between node and
hub is the ``RolePolicy`` it is given. ``Applier.apply`` runs inside the caller's write
transaction and returns, for each change, where it must be routed (the regions of the
identity after it), which the hub turns into feed rows.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import sqlalchemy as sa

from ...identities import cards, edit
from ...identities.fields import (
    DEMOGRAPHIC,
    REVIEWED,
    Clock,
    Row,
    clock_of,
    clocks_of,
    db_value,
    hlc_time,
    person_from_payload,
    stamp,
    wire_value,
)
from ...identities.lookup import root_of, row_of
from ...identities.merge import add_link, link_was_undone, settle_group
from ...identities.register import Incoming, create_remote
from ...identities.unmerge import undo
from ...matching import NameFrequencies
from ...review.items import record_not_same
from ...storage import schema as t
from ...storage.store import Tx
from .changes import Remote, Route
from .policy import NodeAuthority, RolePolicy

__all__ = ["Applier"]

log = logging.getLogger("mpi.sync")


class Applier:
    """Applies remote changes inside a write transaction, under a role's policy."""

    def __init__(self, frequencies: NameFrequencies, policy: RolePolicy) -> None:
        self.frequencies = frequencies
        self.policy = policy
        self._handlers: dict[str, Callable[[Tx, Remote], Awaitable[Route]]] = {
            "identity.set": self._set,
            "external_id.add": self._external_id,
            "programme.add": self._programme,
            "identity.merge": self._merge,
            "identity.unmerge": self._unmerge,
            "card.issue": self._card_issue,
            "card.revoke": self._card_revoke,
            "card.status": self._card_status,
            "review.open": self._review,
            "review.not_same": self._not_same,
            "identity.snapshot": self._snapshot,
            "evict": self._evict,
            "key.rotate": self._nothing,
        }

    async def apply(self, tx: Tx, changes: Sequence[Remote], authority: NodeAuthority | None = None) -> list[Route]:
        """Apply ``changes`` in order; one route per change.

        With ``authority`` (the hub, applying what a node pushed), each change is first checked
        against what that node may change; a refused one is not applied and its route says why.
        """
        routes: list[Route] = []
        pending: list[Remote] = []
        for change in changes:
            tx._store.hlc.observe(change.hlc)
            if change.kind == "identity.create":
                pending.append(change)
                continue
            if pending:
                routes.extend(await self._creates(tx, pending, authority))
                pending = []
            refused = await authority.refusal(tx, change) if authority is not None else None
            routes.append(Route(refused=refused) if refused else await self._one(tx, change))
        if pending:
            routes.extend(await self._creates(tx, pending, authority))
        return routes

    async def _one(self, tx: Tx, c: Remote) -> Route:
        handler = self._handlers.get(c.kind)
        if handler is None:
            log.warning("ignoring a change of unknown kind %s", c.kind)
            return Route()
        return await handler(tx, c)

    # -- where a change lands -----------------------------------------------------------------

    async def _target(self, tx: Tx, c: Remote) -> Row | None:
        """The row a set change (external id, programme, card) lands on: merged IDs redirect."""
        return await root_of(tx.conn, await row_of(tx.conn, c.mpi_id))

    async def _field_targets(self, tx: Tx, c: Remote) -> list[Row]:
        """A field write lands on the ID it names and, when newer than that ID's merge, on the canonical one."""
        row = await row_of(tx.conn, c.mpi_id)
        if row is None:
            return []
        if row.merged_into is None or c.clock <= clock_of(clocks_of(row), "_merged"):
            return [row]
        root = await root_of(tx.conn, row)
        return [row] if root is None or root.pk == row.pk else [row, root]

    @staticmethod
    def _route(row: Row | None) -> Route:
        return Route(region_a=row.region_code if row is not None else None)

    # -- identities ---------------------------------------------------------------------------

    async def _creates(self, tx: Tx, changes: list[Remote], authority: NodeAuthority | None = None) -> list[Route]:
        """Registrations, in bulk: the common case, and the one a backlog is made of."""
        ids = [c.mpi_id for c in changes if c.mpi_id]
        existing = {r.mpi_id for r in await tx.conn.execute(sa.select(t.identity.c.mpi_id).where(t.identity.c.mpi_id.in_(ids)))}
        refused = await authority.refuse_creates(tx, changes, existing) if authority is not None else [None] * len(changes)
        fresh: dict[str, Remote] = {}
        for c, why in zip(changes, refused, strict=True):
            if c.mpi_id and why is None and c.mpi_id not in existing and c.mpi_id not in fresh:
                fresh[c.mpi_id] = c
        if fresh:
            incoming = [
                Incoming(
                    mpi_id,
                    {f: db_value(f, c.payload.get(f)) for f in DEMOGRAPHIC},
                    person_from_payload(c.payload),
                    created_at=c.payload.get("created_at") or tx.now,
                    updated_at=c.payload.get("updated_at") or c.payload.get("created_at") or tx.now,
                    clocks={f: stamp(c.hlc, c.origin) for f in DEMOGRAPHIC},
                )
                for mpi_id, c in fresh.items()
            ]
            pks = await create_remote(tx, self.frequencies, incoming)
            await self.policy.created(tx, list(pks.values()))
            for mpi_id, c in fresh.items():
                for system, value in (c.payload.get("external_ids") or {}).items():
                    await edit.claim_external_id(tx, pks[mpi_id], str(system), str(value), None, c.clock)
        routes: list[Route] = []
        for c, why in zip(changes, refused, strict=True):
            if why is not None:
                routes.append(Route(refused=why))
            elif c.mpi_id in fresh and fresh[c.mpi_id] is c:
                routes.append(Route(region_a=str(c.payload.get("region_code"))))
            else:
                # Known already (a snapshot came first, or a replay): the payload counts as writes.
                routes.append(await self._set(tx, Remote(c.origin, c.seq, c.hlc, "identity.set", c.mpi_id,
                                                         {f: c.payload.get(f) for f in DEMOGRAPHIC})))
        return routes

    async def _set(self, tx: Tx, c: Remote) -> Route:
        targets = await self._field_targets(tx, c)
        if not targets:
            return Route()  # not in this replica's scope
        values = {k: v for k, v in c.payload.items() if k in DEMOGRAPHIC}
        base = c.payload.get("_base") or {}
        route = Route()
        for i, row in enumerate(targets):
            # Review concurrent edits once, on the identity that stays.
            if i == len(targets) - 1:
                await self.policy.concurrent_edits(tx, row, _concurrent(row, values, c.clock, base), c.origin)
            route = await self._write(tx, row, values, c.clock)
        await self.policy.fields_changed(tx, [row.pk for row in targets], set(values))
        return route

    async def _write(self, tx: Tx, row: Row, values: dict[str, Any], clock: Clock) -> Route:
        """Write fields under last-writer-wins; a move of region is the policy's to follow up."""
        won = await edit.write_fields(tx, self.frequencies, row, values, clock)
        new_region = won.get("region_code")
        if new_region and new_region != row.region_code:
            route = Route(region_a=new_region)
            route.follow_ups.extend(await self.policy.moved(tx, self.frequencies, row, new_region))
            return route
        return Route(region_a=row.region_code)

    async def _snapshot(self, tx: Tx, c: Remote) -> Route:
        p = c.payload
        row = await row_of(tx.conn, c.mpi_id)
        clocks = p.get("clocks") or {}
        if row is None:
            assert c.mpi_id is not None
            incoming = Incoming(
                c.mpi_id, {f: db_value(f, p.get(f)) for f in DEMOGRAPHIC}, person_from_payload({**p, "external_ids": {}}),
                created_at=p.get("created_at") or tx.now, updated_at=tx.now, clocks=clocks,
            )
            pk = (await create_remote(tx, self.frequencies, [incoming]))[c.mpi_id]
            # Merge links may have come first: the new row takes its place in its group.
            await self._settle(tx, c.mpi_id)
        else:
            pk = row.pk
            for name in DEMOGRAPHIC:
                current = await row_of(tx.conn, c.mpi_id)
                if current is None:
                    return Route()  # the snapshot moved it out of this node's scope
                await self._write(tx, current, {name: p.get(name)}, clock_of(clocks, name))
        for programme_type, linked_at in (p.get("programmes") or {}).items():
            await edit.merge_programme(tx, pk, programme_type, linked_at)
        for system, value in (p.get("external_ids") or {}).items():
            await edit.claim_external_id(tx, pk, system, value, None, clock_of(clocks, f"ext:{system}"))
        for card in p.get("cards") or []:
            await cards.store_card(tx, pk, card, card.get("status", "valid"), card.get("issued_at") or tx.now)
        return Route()

    async def _evict(self, tx: Tx, c: Remote) -> Route:
        await self.policy.evict(tx, self.frequencies, c)
        return Route()

    # -- sets -----------------------------------------------------------------------------------

    async def _external_id(self, tx: Tx, c: Remote) -> Route:
        row = await self._target(tx, c)
        if row is None:
            return Route()
        p = c.payload
        await edit.claim_external_id(tx, row.pk, str(p["system"]), str(p["value"]), p.get("instance_url"), c.clock)
        return self._route(row)

    async def _programme(self, tx: Tx, c: Remote) -> Route:
        row = await self._target(tx, c)
        if row is None:
            return Route()
        await edit.merge_programme(tx, row.pk, str(c.payload["programme_type"]), str(c.payload["linked_at"]))
        return self._route(row)

    # -- merges ---------------------------------------------------------------------------------

    async def _settle(self, tx: Tx, mpi_id: str) -> str | None:
        """Recompute a merge group; region moves that carried-over writes made go to the policy."""
        settled = await settle_group(tx, self.frequencies, mpi_id)
        for row, new_region in settled.moved:
            # Like any remote write of a region, minus the routing: the group's changes carry that.
            await self.policy.moved(tx, self.frequencies, row, new_region)
        return settled.canonical

    async def _merge(self, tx: Tx, c: Remote) -> Route:
        p = c.payload
        source, target = str(p["source"]), str(p["target"])
        if await link_was_undone(tx, source, target, c.hlc, c.origin):
            return Route()  # an unmerge that came first removed this link already
        await add_link(tx, source, target, c.hlc, c.origin, bool(p.get("keep_target", True)))
        source_row = await row_of(tx.conn, source)
        root = await self._settle(tx, source)
        if root is None:
            return Route()
        fields = p.get("fields")
        if fields and not p.get("keep_target", True):
            target_root = await root_of(tx.conn, await row_of(tx.conn, target))
            if target_root is not None:
                await self._write(tx, target_root, dict(fields), c.clock)
        root_row = await row_of(tx.conn, root)
        route = Route(region_a=root_row.region_code if root_row else None,
                      region_b=source_row.region_code if source_row is not None else None)
        if root_row is not None and source_row is not None:
            route.follow_ups.extend(await self.policy.merged(tx, source_row.mpi_id, root_row.mpi_id))
        return route

    async def _unmerge(self, tx: Tx, c: Remote) -> Route:
        done = await undo(tx, self.frequencies, c.payload)
        for row, new_region in done.moved:
            await self.policy.moved(tx, self.frequencies, row, new_region)
        if done.row is None:
            return Route(region_a=done.before.region_code if done.before is not None else None)
        route = Route(region_a=done.row.region_code, region_b=done.root.region_code if done.root is not None else None)
        if done.root is not None:
            route.follow_ups.extend(await self.policy.unmerged(tx, done.row.mpi_id, done.root.mpi_id))
        return route

    # -- cards ------------------------------------------------------------------------------------

    async def _card_issue(self, tx: Tx, c: Remote) -> Route:
        row = await self._target(tx, c)
        p = c.payload
        if row is None:
            await cards.keep_card_status(tx, str(p["token_hash"]), "valid", int(p.get("programme_count", 0)))
            return Route(country_wide=True)
        await cards.store_card(tx, row.pk, p, "valid", p.get("issued_at") or hlc_time(c.hlc))
        route = self._route(row)
        route.country_wide = True
        return route

    async def _card_revoke(self, tx: Tx, c: Remote) -> Route:
        await cards.revoke_token(tx, str(c.payload["token_hash"]))
        route = self._route(await row_of(tx.conn, c.mpi_id))
        route.country_wide = True
        return route

    async def _card_status(self, tx: Tx, c: Remote) -> Route:
        p = c.payload
        token = str(p["token_hash"])
        if p.get("status") == "revoked":
            await cards.revoke_token(tx, token)
        else:
            exists = (await tx.conn.execute(sa.select(t.card.c.pk).where(t.card.c.token_hash == token))).first()
            if exists is None:
                await cards.keep_card_status(tx, token, "valid", int(p.get("programme_count", 0)))
        return Route()

    # -- review -----------------------------------------------------------------------------------

    async def _review(self, tx: Tx, c: Remote) -> Route:
        await self.policy.review_opened(tx, c)
        return Route()  # review items stay at the hub

    async def _not_same(self, tx: Tx, c: Remote) -> Route:
        """A supervisor's "not the same person": remembered everywhere, so nobody raises the pair again."""
        pair = sorted(str(m) for m in c.payload.get("mpi_ids") or [])
        if len(pair) != 2:
            return Route()
        await record_not_same(tx, pair[0], pair[1], f"sync:{c.origin}")
        regions = list(
            (await tx.conn.execute(sa.select(t.identity.c.region_code).where(t.identity.c.mpi_id.in_(pair)))).scalars()
        )
        return Route(region_a=regions[0] if regions else None, region_b=regions[-1] if regions else None)

    async def _nothing(self, tx: Tx, c: Remote) -> Route:
        return Route()


def _concurrent(row: Row, values: dict[str, Any], clock: Clock, base: dict[str, Any]) -> list[dict[str, Any]]:
    """Reviewed fields this write changes without having seen the value it replaces."""
    clocks = clocks_of(row)
    conflicts = []
    for name, value in values.items():
        current = clock_of(clocks, name)
        old = wire_value(getattr(row, name))
        if name in REVIEWED and name in base and clock_of({name: base[name]}, name) != current and old != value:
            conflicts.append({"field": name, "values": [old, value], "clocks": [list(current), list(clock)]})
    return conflicts
