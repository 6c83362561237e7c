"""Applying changes from other replicas, so that every replica converges to the same state.

Rules (the same on node and hub, whatever order changes arrive in):

- **Fields** are last-writer-wins registers: each field keeps the clock ``[hlc, node_id]``
  of the write that set it (``identity.clocks``); a change wins when its clock is greater.
- **External ids** are one register per (identity, system), clock ``ext:<system>``; when two
  identities claim the same (system, value), the later claim holds it.
- **Programmes** are an add-wins set; ``linked_at`` is the earliest anyone gave.
- **Merges** are links of a union-find. The group's canonical identity is recomputed from
  all its links, taken in clock order (a link whose source already belongs to the target's
  group changes nothing), so merges commute and never form a cycle. A field write to a
  merged ID lands on the canonical identity when it is newer than the merge, and on the
  merged one otherwise, whichever of the two arrived first.
- **Cards** go from valid to revoked, never back. A replica that does not hold the identity
  keeps only the PII-free status (``card_status``), which verify consults too.
- A concurrent edit of a name, the sex or the birth date (the writer had not seen the value
  it replaced) resolves by the same rule, and the hub also opens a review item holding both
  values.

``Applier.apply`` runs inside the caller's write transaction and returns, for each change,
where it must be routed (the regions of the identity after it), which the hub turns into
feed rows.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from ..matching import Person, person_of
from ..storage import schema as t
from ..storage.store import Tx

__all__ = ["DEMOGRAPHIC", "REVIEWED", "Applier", "Clock", "Remote", "Route", "clock_of", "stamp"]

log = logging.getLogger("mpi.sync")

DEMOGRAPHIC = ("first_name", "last_name", "date_of_birth", "gender", "region_code", "country_code", "phone_number")
REVIEWED = ("first_name", "last_name", "date_of_birth", "gender")
REVIEWED_SET = frozenset(REVIEWED)
_NONE: tuple[int, str] = (0, "")

Clock = tuple[int, str]


def clock_of(clocks: dict[str, Any], key: str) -> Clock:
    """The clock of one field; older databases kept a bare HLC."""
    value = clocks.get(key)
    if value is None:
        return _NONE
    if isinstance(value, int):
        return (value, "")
    return (int(value[0]), str(value[1]))


def stamp(hlc: int, node_id: str) -> list[Any]:
    return [hlc, node_id]


def _date(value: Any) -> dt.date | None:
    return dt.date.fromisoformat(value) if isinstance(value, str) and value else None


def _db_value(name: str, value: Any) -> Any:
    return _date(value) if name == "date_of_birth" else value


def _wire_value(value: Any) -> Any:
    return value.isoformat() if isinstance(value, dt.date) else value


@dataclass(frozen=True, slots=True)
class Remote:
    """A change from another replica, as the applier needs it."""

    origin: str
    seq: int
    hlc: int
    kind: str
    mpi_id: str | None
    payload: dict[str, Any]

    @property
    def clock(self) -> Clock:
        return (self.hlc, self.origin)


@dataclass(slots=True)
class Route:
    """Where a change goes down: nodes subscribing region_a or region_b, unless they subscribe exclude."""

    region_a: str | None = None
    region_b: str | None = None
    exclude: str | None = None
    country_wide: bool = False
    # Changes the hub writes itself because of this one (a snapshot for a new region, an evict).
    follow_ups: list[tuple[str, str, dict[str, Any], Route]] = field(default_factory=list)


class Applier:
    """Applies remote changes inside a write transaction.

    ``hub`` opens review items for concurrent edits and writes snapshots and evictions;
    ``regions`` is a node's scope (None: everything, the hub).
    """

    def __init__(self, registry: Any, *, hub: bool, regions: set[str] | None = None) -> None:
        self.registry = registry
        self.hub = hub
        self.regions = regions

    # -- entry points ---------------------------------------------------------------------

    async def apply(self, tx: Tx, changes: Sequence[Remote]) -> list[Route]:
        """Apply ``changes`` in order; one route per change."""
        routes: list[Route] = []
        pending: list[Remote] = []
        for change in changes:
            tx._store.hlc.observe(change.hlc)
            if change.kind == "identity.create":
                pending.append(change)
                continue
            if pending:
                routes.extend(await self._creates(tx, pending))
                pending = []
            routes.append(await self._one(tx, change))
        if pending:
            routes.extend(await self._creates(tx, pending))
        return routes

    async def _one(self, tx: Tx, c: Remote) -> Route:
        handler = {
            "identity.set": self._set,
            "external_id.add": self._external_id,
            "programme.add": self._programme,
            "identity.merge": self._merge,
            "identity.unmerge": self.apply_unmerge,
            "card.issue": self._card_issue,
            "card.revoke": self._card_revoke,
            "card.status": self._card_status,
            "review.open": self._review,
            "review.not_same": self._not_same,
            "identity.snapshot": self._snapshot,
            "evict": self._evict,
            "key.rotate": self._nothing,
        }.get(c.kind)
        if handler is None:
            log.warning("ignoring a change of unknown kind %s", c.kind)
            return Route()
        return await handler(tx, c)

    # -- helpers ----------------------------------------------------------------------------

    async def _row(self, tx: Tx, mpi_id: str | None) -> Any:
        if mpi_id is None:
            return None
        return (await tx.conn.execute(sa.select(t.identity).where(t.identity.c.mpi_id == mpi_id))).first()

    async def _root(self, tx: Tx, row: Any) -> Any:
        for _ in range(64):
            if row is None or row.merged_into is None:
                return row
            nxt = await self._row(tx, row.merged_into)
            if nxt is None:
                return row
            row = nxt
        return row

    async def _target(self, tx: Tx, c: Remote, *, always_follow: bool) -> Any:
        """The row a change lands on: merged IDs redirect (sets always, fields when newer than the merge)."""
        row = await self._row(tx, c.mpi_id)
        if row is None or row.merged_into is None:
            return row
        if always_follow or c.clock > clock_of(json.loads(row.clocks or "{}"), "_merged"):
            return await self._root(tx, row)
        return row

    async def _field_targets(self, tx: Tx, c: Remote) -> list[Any]:
        """A field write lands on the ID it names and, when newer than that ID's merge, on the canonical one."""
        row = await self._row(tx, c.mpi_id)
        if row is None:
            return []
        if row.merged_into is None or c.clock <= clock_of(json.loads(row.clocks or "{}"), "_merged"):
            return [row]
        root = await self._root(tx, row)
        return [row] if root is None or root.pk == row.pk else [row, root]

    def _route(self, row: Any) -> Route:
        return Route(region_a=row.region_code if row is not None else None)

    def _recount(self, tx: Tx, old: Any, new: Any) -> None:
        """Keep the registry's name frequencies (active identities only) in step, after commit."""
        frequencies = self.registry.frequencies

        def _apply() -> None:
            try:
                if old is not None:
                    frequencies.remove(_person(old))
            except KeyError:  # counted differently by an older version: counts stay approximate
                log.debug("name frequencies: %s was not counted", getattr(old, "mpi_id", "?"))
            if new is not None:
                frequencies.add(_person(new))

        tx.after_commit.append(_apply)

    async def _reindex(self, tx: Tx, pk: int) -> None:
        row = (await tx.conn.execute(sa.select(t.identity).where(t.identity.c.pk == pk))).one()
        await self.registry.index_identity(tx, pk, _person(row))

    async def _review(self, tx: Tx, c: Remote) -> Route:
        if self.hub:
            p = c.payload
            await tx.conn.execute(
                sa.insert(t.review_item).values(
                    reason=str(p.get("reason", "remote")),
                    mpi_ids=json.dumps(p.get("mpi_ids") or [c.mpi_id]),
                    similarity_score=p.get("similarity_score"),
                    matched_fields="[]",
                    status="open",
                    actor=f"node:{c.origin}",
                    created_at=tx.now,
                    detail=json.dumps({"origin": c.origin, "seq": c.seq}),
                )
            )
        return Route()  # review items stay at the hub

    async def _not_same(self, tx: Tx, c: Remote) -> Route:
        """A supervisor's "not the same person": remembered everywhere, so nobody raises the pair again."""
        pair = sorted(str(m) for m in c.payload.get("mpi_ids") or [])
        if len(pair) != 2:
            return Route()
        await tx.conn.execute(
            tx.insert_ignore(t.not_same).values(mpi_a=pair[0], mpi_b=pair[1], decided_at=tx.now, actor=f"sync:{c.origin}")
        )
        regions = [
            r for r in (await tx.conn.execute(sa.select(t.identity.c.region_code).where(t.identity.c.mpi_id.in_(pair))))
            .scalars()
        ]
        return Route(region_a=regions[0] if regions else None, region_b=regions[-1] if regions else None)

    async def _nothing(self, tx: Tx, c: Remote) -> Route:
        return Route()

    # -- identities ---------------------------------------------------------------------------

    async def _creates(self, tx: Tx, changes: list[Remote]) -> list[Route]:
        """Registrations, in bulk: the common case, and the one a backlog is made of."""
        ids = [c.mpi_id for c in changes if c.mpi_id]
        existing = {
            r.mpi_id
            for r in await tx.conn.execute(sa.select(t.identity.c.mpi_id).where(t.identity.c.mpi_id.in_(ids)))
        }
        fresh: dict[str, Remote] = {}
        for c in changes:
            if c.mpi_id and c.mpi_id not in existing and c.mpi_id not in fresh:
                fresh[c.mpi_id] = c
        if fresh:
            rows = []
            for c in fresh.values():
                p = c.payload
                rows.append(
                    {
                        "mpi_id": c.mpi_id,
                        **{f: _db_value(f, p.get(f)) for f in DEMOGRAPHIC},
                        "status": "active",
                        "created_at": p.get("created_at") or tx.now,
                        "updated_at": p.get("updated_at") or p.get("created_at") or tx.now,
                        "clocks": json.dumps({f: stamp(c.hlc, c.origin) for f in DEMOGRAPHIC}),
                    }
                )
            await tx.bulk_insert(t.identity, rows)
            inserted = await tx.conn.execute(
                sa.select(t.identity.c.pk, t.identity.c.mpi_id).where(t.identity.c.mpi_id.in_(list(fresh)))
            )
            pks = {mpi_id: pk for pk, mpi_id in inserted}
            if self.hub:
                from ..dedup import enqueue  # dedup needs the registry, which needs this module

                # The hub matches what nodes registered against the whole country.
                await enqueue(tx, list(pks.values()))
            people = [(pks[mpi_id], _person_from_payload(c.payload)) for mpi_id, c in fresh.items()]
            await self.registry.index_new(tx, people)
            for mpi_id, c in fresh.items():
                for system, value in (c.payload.get("external_ids") or {}).items():
                    await self._claim(tx, pks[mpi_id], mpi_id, str(system), str(value), None, c.clock)
            frequencies = self.registry.frequencies

            def _count_names() -> None:
                for _, person in people:
                    frequencies.add(person)

            tx.after_commit.append(_count_names)
        routes: list[Route] = []
        for c in changes:
            if c.mpi_id in fresh and fresh[c.mpi_id] is c:
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
            route = await self._write_fields(tx, row, values, c.clock, base, c if i == len(targets) - 1 else None)
        if self.hub and REVIEWED_SET & values.keys():
            from ..dedup import enqueue

            # A new name or birth date can make the identity someone else's duplicate.
            await enqueue(tx, [row.pk for row in targets])
        return route

    async def _write_fields(
        self, tx: Tx, row: Any, values: dict[str, Any], clock: Clock, base: dict[str, Any], c: Remote | None
    ) -> Route:
        clocks = json.loads(row.clocks or "{}")
        won: dict[str, Any] = {}
        conflicts: list[dict[str, Any]] = []
        for name, value in values.items():
            current = clock_of(clocks, name)
            old = _wire_value(getattr(row, name))
            if (
                self.hub
                and c is not None
                and name in REVIEWED
                and name in base
                and clock_of({name: base[name]}, name) != current
                and old != value
            ):
                conflicts.append({"field": name, "values": [old, value], "clocks": [list(current), list(clock)]})
            if clock > current:
                clocks[name] = list(clock)
                if old != value:
                    won[name] = _db_value(name, value)
        route = Route(region_a=row.region_code)
        if won or conflicts:
            if won:
                await tx.conn.execute(
                    sa.update(t.identity)
                    .where(t.identity.c.pk == row.pk)
                    .values(**won, clocks=json.dumps(clocks), updated_at=tx.now)
                )
            else:
                await tx.conn.execute(
                    sa.update(t.identity).where(t.identity.c.pk == row.pk).values(clocks=json.dumps(clocks))
                )
            if row.merged_into is None and row.status == "active":
                await self._reindex(tx, row.pk)
                if {"first_name", "last_name", "date_of_birth", "region_code"} & won.keys():
                    updated = (await tx.conn.execute(sa.select(t.identity).where(t.identity.c.pk == row.pk))).one()
                    self._recount(tx, row, updated)
        elif any(clock > clock_of(json.loads(row.clocks or "{}"), n) for n in values):
            await tx.conn.execute(sa.update(t.identity).where(t.identity.c.pk == row.pk).values(clocks=json.dumps(clocks)))
        for conflict in conflicts:
            assert c is not None
            await tx.conn.execute(
                sa.insert(t.review_item).values(
                    reason="concurrent_edit",
                    mpi_ids=json.dumps([row.mpi_id]),
                    similarity_score=None,
                    matched_fields=json.dumps([conflict["field"]]),
                    status="open",
                    actor=f"sync:{c.origin}",
                    created_at=tx.now,
                    detail=json.dumps(conflict),
                )
            )
        new_region = won.get("region_code")
        if new_region and new_region != row.region_code:
            route = Route(region_a=new_region)
            if self.hub:
                snapshot = await self.snapshot(tx, row.pk)
                route.follow_ups.append(
                    ("identity.snapshot", row.mpi_id, snapshot, Route(region_a=new_region, exclude=row.region_code))
                )
                route.follow_ups.append(
                    ("evict", row.mpi_id, {"region_code": new_region}, Route(region_a=row.region_code, exclude=new_region))
                )
            elif self.regions is not None and new_region not in self.regions:
                await self.evict_identity(tx, row.pk)
        return route

    async def snapshot(self, tx: Tx, pk: int) -> dict[str, Any]:
        """The whole identity, for a replica that does not hold it yet."""
        row = (await tx.conn.execute(sa.select(t.identity).where(t.identity.c.pk == pk))).one()
        programmes = await tx.conn.execute(
            sa.select(t.programme.c.programme_type, t.programme.c.linked_at).where(t.programme.c.identity_pk == pk)
        )
        external = await tx.conn.execute(
            sa.select(t.external_id.c.system, t.external_id.c.value).where(t.external_id.c.identity_pk == pk)
        )
        cards = await tx.conn.execute(
            sa.select(t.card.c.card_code, t.card.c.campaign_id, t.card.c.programme_type, t.card.c.token_hash,
                      t.card.c.status, t.card.c.issued_at).where(t.card.c.identity_pk == pk)
        )
        return {
            **{f: _wire_value(getattr(row, f)) for f in DEMOGRAPHIC},
            "created_at": row.created_at,
            "clocks": json.loads(row.clocks or "{}"),
            "programmes": {p: at for p, at in programmes},
            "external_ids": {s: v for s, v in external},
            "cards": [dict(r._mapping) for r in cards],
        }

    async def _snapshot(self, tx: Tx, c: Remote) -> Route:
        p = c.payload
        row = await self._row(tx, c.mpi_id)
        clocks = p.get("clocks") or {}
        if row is None:
            pk = (
                await tx.conn.execute(
                    sa.insert(t.identity)
                    .values(
                        mpi_id=c.mpi_id,
                        **{f: _db_value(f, p.get(f)) for f in DEMOGRAPHIC},
                        status="active",
                        created_at=p.get("created_at") or tx.now,
                        updated_at=tx.now,
                        clocks=json.dumps(clocks),
                    )
                    .returning(t.identity.c.pk)
                )
            ).scalar_one()
            await self._reindex(tx, pk)
            self._recount(tx, None, (await tx.conn.execute(sa.select(t.identity).where(t.identity.c.pk == pk))).one())
            # Merge links may have come first: the new row takes its place in its group.
            await self.settle_group(tx, str(c.mpi_id))
        else:
            pk = row.pk
            for name in DEMOGRAPHIC:
                await self._write_fields(tx, await self._row(tx, c.mpi_id), {name: p.get(name)},
                                         clock_of(clocks, name), {}, None)
        for programme_type, linked_at in (p.get("programmes") or {}).items():
            await self._add_programme(tx, pk, programme_type, linked_at)
        for system, value in (p.get("external_ids") or {}).items():
            await self._claim(tx, pk, str(c.mpi_id), system, value, None, clock_of(clocks, f"ext:{system}"))
        for card in p.get("cards") or []:
            await self._insert_card(tx, pk, card, card.get("status", "valid"), card.get("issued_at") or tx.now)
        return Route()

    async def evict_identity(self, tx: Tx, pk: int) -> None:
        """Forget an identity that left this node's scope; its cards' statuses stay verifiable."""
        count = (
            await tx.conn.execute(sa.select(sa.func.count()).select_from(t.programme).where(t.programme.c.identity_pk == pk))
        ).scalar_one()
        cards = (await tx.conn.execute(sa.select(t.card.c.token_hash, t.card.c.status).where(t.card.c.identity_pk == pk))).all()
        for token, status in cards:
            await self._upsert_card_status(tx, token, status, int(count))
        whole = (await tx.conn.execute(sa.select(t.identity).where(t.identity.c.pk == pk))).one()
        if whole.status == "active":
            self._recount(tx, whole, None)
        row = whole.mpi_id
        await tx.conn.execute(sa.delete(t.name_token).where(t.name_token.c.identity_pk == pk))
        await tx.conn.execute(sa.delete(t.blocking_key).where(t.blocking_key.c.identity_pk == pk))
        await tx.conn.execute(sa.delete(t.programme).where(t.programme.c.identity_pk == pk))
        await tx.conn.execute(sa.delete(t.external_id).where(t.external_id.c.identity_pk == pk))
        await tx.conn.execute(sa.delete(t.card).where(t.card.c.identity_pk == pk))
        # Identities merged into this one redirect to it: they leave with it.
        await tx.conn.execute(sa.delete(t.identity).where(t.identity.c.merged_into == row))
        await tx.conn.execute(sa.delete(t.identity).where(t.identity.c.pk == pk))

    async def _evict(self, tx: Tx, c: Remote) -> Route:
        if self.hub:
            return Route()
        row = await self._row(tx, c.mpi_id)
        # The identity's new region (the move itself may not have reached this node: it is not sent
        # where the identity leaves).
        moved_to = c.payload.get("region_code") or (row.region_code if row is not None else None)
        if row is not None and (self.regions is None or moved_to not in self.regions):
            await self.evict_identity(tx, row.pk)
        return Route()

    # -- sets ----------------------------------------------------------------------------------

    async def _claim(
        self, tx: Tx, pk: int, mpi_id: str, system: str, value: str, url: str | None, clock: Clock
    ) -> None:
        """(identity, system) := value if ``clock`` is newer; the newest claim of a value holds it."""
        row = (await tx.conn.execute(sa.select(t.identity.c.clocks).where(t.identity.c.pk == pk))).one()
        clocks = json.loads(row.clocks or "{}")
        key = f"ext:{system}"
        if clock <= clock_of(clocks, key):
            return
        clocks[key] = list(clock)
        await tx.conn.execute(sa.update(t.identity).where(t.identity.c.pk == pk).values(clocks=json.dumps(clocks)))
        await tx.conn.execute(
            sa.delete(t.external_id).where(t.external_id.c.identity_pk == pk, t.external_id.c.system == system)
        )
        holder = (
            await tx.conn.execute(
                sa.select(t.external_id.c.identity_pk, t.identity.c.clocks)
                .join(t.identity, t.identity.c.pk == t.external_id.c.identity_pk)
                .where(t.external_id.c.system == system, t.external_id.c.value == value)
            )
        ).first()
        if holder is not None:
            if clock_of(json.loads(holder.clocks or "{}"), key) > clock:
                return
            await tx.conn.execute(
                sa.delete(t.external_id).where(t.external_id.c.system == system, t.external_id.c.value == value)
            )
        await tx.conn.execute(
            sa.insert(t.external_id).values(system=system, value=value, identity_pk=pk, instance_url=url, linked_at=tx.now)
        )

    async def _external_id(self, tx: Tx, c: Remote) -> Route:
        row = await self._target(tx, c, always_follow=True)
        if row is None:
            return Route()
        p = c.payload
        await self._claim(tx, row.pk, row.mpi_id, str(p["system"]), str(p["value"]), p.get("instance_url"), c.clock)
        return self._route(row)

    async def _add_programme(self, tx: Tx, pk: int, programme_type: str, linked_at: str) -> None:
        await tx.conn.execute(
            tx.insert_ignore(t.programme).values(identity_pk=pk, programme_type=programme_type, linked_at=linked_at)
        )
        await tx.conn.execute(
            sa.update(t.programme)
            .where(
                t.programme.c.identity_pk == pk,
                t.programme.c.programme_type == programme_type,
                t.programme.c.linked_at > linked_at,
            )
            .values(linked_at=linked_at)
        )

    async def _programme(self, tx: Tx, c: Remote) -> Route:
        row = await self._target(tx, c, always_follow=True)
        if row is None:
            return Route()
        await self._add_programme(tx, row.pk, str(c.payload["programme_type"]), str(c.payload["linked_at"]))
        return self._route(row)

    # -- merges --------------------------------------------------------------------------------

    async def _merge(self, tx: Tx, c: Remote) -> Route:
        p = c.payload
        source, target = str(p["source"]), str(p["target"])
        undone = await tx.conn.execute(
            sa.select(t.merge_unlink.c.source).where(
                t.merge_unlink.c.source == source, t.merge_unlink.c.target == target,
                t.merge_unlink.c.hlc == c.hlc, t.merge_unlink.c.node_id == c.origin,
            )
        )
        if undone.first() is not None:
            return Route()  # an unmerge that came first removed this link already
        await tx.conn.execute(
            tx.insert_ignore(t.merge_link).values(
                source=source, target=target, hlc=c.hlc, node_id=c.origin, keep_target=bool(p.get("keep_target", True))
            )
        )
        source_row = await self._row(tx, source)
        root = await self.settle_group(tx, source)
        if root is None:
            return Route()
        fields = p.get("fields")
        if fields and not p.get("keep_target", True):
            target_root = await self._root(tx, await self._row(tx, target))
            if target_root is not None:
                await self._write_fields(tx, target_root, dict(fields), c.clock, {}, None)
        root = await self._row(tx, root)
        route = Route(region_a=root.region_code if root else None,
                      region_b=source_row.region_code if source_row is not None else None)
        if self.hub and root is not None and source_row is not None:
            route.follow_ups.extend(await self.merge_follow_ups(tx, source_row.mpi_id, root.mpi_id))
        return route

    async def merge_follow_ups(self, tx: Tx, source: str, root: str) -> list[tuple[str, str, dict[str, Any], Route]]:
        """Hub: after a merge across regions, each side's nodes get the identity of the other side.

        Nodes of the source's region hold the source, not the canonical identity; nodes of the
        canonical identity's region must redirect the merged ID, so they get it too.
        """
        source_row, root_row = await self._row(tx, source), await self._row(tx, root)
        if source_row is None or root_row is None or source_row.region_code == root_row.region_code:
            return []
        a, b = source_row.region_code, root_row.region_code
        return [
            ("identity.snapshot", root_row.mpi_id, await self.snapshot(tx, root_row.pk), Route(region_a=a, exclude=b)),
            ("identity.snapshot", source_row.mpi_id, await self.snapshot(tx, source_row.pk), Route(region_a=b, exclude=a)),
        ]

    async def unmerge_follow_ups(self, tx: Tx, source: str, root: str) -> list[tuple[str, str, dict[str, Any], Route]]:
        """Hub: after an unmerge across regions, each side's nodes let go of the other side's identity."""
        source_row, root_row = await self._row(tx, source), await self._row(tx, root)
        if source_row is None or root_row is None or source_row.region_code == root_row.region_code:
            return []
        a, b = source_row.region_code, root_row.region_code
        return [
            ("evict", source_row.mpi_id, {"region_code": a}, Route(region_a=b, exclude=a)),
            ("evict", root_row.mpi_id, {"region_code": b}, Route(region_a=a, exclude=b)),
        ]

    async def apply_unmerge(self, tx: Tx, c: Remote) -> Route:
        """Undo merges: the links named go (and stay gone), and what was the source's goes back to it.

        The payload was computed where the unmerge was decided, from the change log there:
        ``links`` (the merge links removed), ``target`` (the canonical identity before),
        ``programmes`` / ``cards`` / ``external_ids`` that belong to the source, and
        ``shared_programmes`` (those both identities had, which stay on the target too).
        """
        p = c.payload
        source = str(p["source"])
        for link_source, link_target, hlc, node_id in p.get("links", []):
            await tx.conn.execute(
                tx.insert_ignore(t.merge_unlink).values(
                    source=link_source, target=link_target, hlc=hlc, node_id=node_id, unmerged_at=tx.now
                )
            )
            await tx.conn.execute(
                sa.delete(t.merge_link).where(
                    t.merge_link.c.source == link_source, t.merge_link.c.target == link_target,
                    t.merge_link.c.hlc == hlc, t.merge_link.c.node_id == node_id,
                )
            )
        before = await self._row(tx, str(p.get("target") or ""))
        await self.settle_group(tx, source)
        if before is not None:
            await self.settle_group(tx, before.mpi_id)
        row = await self._row(tx, source)
        if row is None:
            return Route(region_a=before.region_code if before is not None else None)
        root = await self._root(tx, before) if before is not None else None
        shared = set(p.get("shared_programmes", []))
        for programme_type, linked_at in p.get("programmes", []):
            await self._add_programme(tx, row.pk, programme_type, linked_at)
            if root is not None and root.pk != row.pk and programme_type not in shared:
                await tx.conn.execute(
                    sa.delete(t.programme).where(
                        t.programme.c.identity_pk == root.pk, t.programme.c.programme_type == programme_type
                    )
                )
        if p.get("cards"):
            await tx.conn.execute(
                sa.update(t.card).where(t.card.c.token_hash.in_(list(p["cards"]))).values(identity_pk=row.pk)
            )
        for system, value in p.get("external_ids", []):
            await tx.conn.execute(
                sa.update(t.external_id)
                .where(t.external_id.c.system == system, t.external_id.c.value == value)
                .values(identity_pk=row.pk)
            )
        await self._reindex(tx, row.pk)
        route = Route(region_a=row.region_code, region_b=root.region_code if root is not None else None)
        if self.hub and root is not None:
            route.follow_ups.extend(await self.unmerge_follow_ups(tx, row.mpi_id, root.mpi_id))
        return route

    async def settle_group(self, tx: Tx, mpi_id: str) -> str | None:
        """Recompute the canonical identity of the group ``mpi_id`` belongs to; returns its ID."""
        links: dict[tuple[str, str, int, str], bool] = {}
        seen: set[str] = set()
        todo = [mpi_id]
        while todo:
            current = todo.pop()
            if current in seen:
                continue
            seen.add(current)
            found = await tx.conn.execute(
                sa.select(t.merge_link).where(sa.or_(t.merge_link.c.source == current, t.merge_link.c.target == current))
            )
            for r in found:
                links[(r.source, r.target, r.hlc, r.node_id)] = r.keep_target
                todo.extend([r.source, r.target])
        parent: dict[str, str] = {m: m for m in seen}
        merged_by: dict[str, list[Any]] = {}

        def find(x: str) -> str:
            while parent[x] != x:
                x = parent[x]
            return x

        for source, target, hlc, node_id in sorted(links, key=lambda k: (k[2], k[3], k[0], k[1])):
            rs, rt = find(source), find(target)
            if rs == rt:
                continue
            parent[rs] = rt
            for member in seen:
                if find(member) == rt and member not in merged_by and member != rt:
                    merged_by[member] = [hlc, node_id]
        rows = {
            r.mpi_id: r
            for r in await tx.conn.execute(sa.select(t.identity).where(t.identity.c.mpi_id.in_(sorted(seen))))
        }
        if not rows:
            return None
        roots = {find(m) for m in rows}
        canonical = find(mpi_id)
        for member, row in rows.items():
            root = find(member)
            root_row = rows.get(root)
            if member == root:
                if row.merged_into is not None or row.status != "active":
                    await tx.conn.execute(
                        sa.update(t.identity)
                        .where(t.identity.c.pk == row.pk)
                        .values(status="active", merged_into=None, merged_at=None, updated_at=tx.now)
                    )
                    await self._reindex(tx, row.pk)
                    self._recount(tx, None, row)
                continue
            clocks = json.loads(row.clocks or "{}")
            clocks["_merged"] = merged_by.get(member, clocks.get("_merged"))
            if row.merged_into != root or row.status != "merged":
                await tx.conn.execute(
                    sa.update(t.identity)
                    .where(t.identity.c.pk == row.pk)
                    .values(status="merged", merged_into=root, merged_at=row.merged_at or tx.now,
                            clocks=json.dumps(clocks), updated_at=tx.now)
                )
                await self.registry.unindex_identity(tx, row.pk)
                if row.status == "active":
                    self._recount(tx, row, None)
            if root_row is None:
                continue
            from ..registry import move_programmes_and_cards  # the registry imports this module

            await move_programmes_and_cards(tx, row.pk, root_row.pk)
            for system, value in (
                await tx.conn.execute(
                    sa.select(t.external_id.c.system, t.external_id.c.value).where(t.external_id.c.identity_pk == row.pk)
                )
            ).all():
                await tx.conn.execute(
                    sa.delete(t.external_id).where(t.external_id.c.system == system, t.external_id.c.value == value)
                )
                await self._claim(tx, root_row.pk, root_row.mpi_id, system, value, None,
                                  clock_of(clocks, f"ext:{system}"))
            # Writes to the merged ID made after the merge belong to the canonical identity.
            merged_clock = clock_of(clocks, "_merged")
            later = {f: _wire_value(getattr(row, f)) for f in DEMOGRAPHIC if clock_of(clocks, f) > merged_clock}
            for name, value in later.items():
                fresh_root = await self._row(tx, root)
                await self._write_fields(tx, fresh_root, {name: value}, clock_of(clocks, name), {}, None)
        del roots
        return canonical if canonical in rows else None

    # -- cards ------------------------------------------------------------------------------------

    async def _upsert_card_status(self, tx: Tx, token: str, status: str, count: int) -> None:
        current = (
            await tx.conn.execute(sa.select(t.card_status.c.status).where(t.card_status.c.token_hash == token))
        ).scalar()
        if current is None:
            await tx.conn.execute(
                sa.insert(t.card_status).values(token_hash=token, status=status, programme_count=count, updated_at=tx.now)
            )
        elif current != "revoked":
            await tx.conn.execute(
                sa.update(t.card_status)
                .where(t.card_status.c.token_hash == token)
                .values(status=status, programme_count=count, updated_at=tx.now)
            )

    async def _insert_card(self, tx: Tx, pk: int, p: dict[str, Any], status: str, issued_at: str) -> None:
        revoked = (
            await tx.conn.execute(
                sa.select(t.card_status.c.status).where(t.card_status.c.token_hash == p["token_hash"])
            )
        ).scalar()
        await tx.conn.execute(
            tx.insert_ignore(t.card).values(
                card_code=p["card_code"],
                identity_pk=pk,
                campaign_id=p["campaign_id"],
                programme_type=p["programme_type"],
                token_hash=p["token_hash"],
                status="revoked" if revoked == "revoked" else status,
                issued_at=issued_at,
            )
        )
        if status == "revoked":
            await tx.conn.execute(
                sa.update(t.card).where(t.card.c.token_hash == p["token_hash"]).values(status="revoked", revoked_at=tx.now)
            )
        await tx.conn.execute(sa.delete(t.card_status).where(t.card_status.c.token_hash == p["token_hash"]))

    async def _card_issue(self, tx: Tx, c: Remote) -> Route:
        row = await self._target(tx, c, always_follow=True)
        p = c.payload
        if row is None:
            await self._upsert_card_status(tx, str(p["token_hash"]), "valid", int(p.get("programme_count", 0)))
            return Route(country_wide=True)
        await self._insert_card(tx, row.pk, p, "valid", p.get("issued_at") or _hlc_time(c.hlc))
        route = self._route(row)
        route.country_wide = True
        return route

    async def _card_revoke(self, tx: Tx, c: Remote) -> Route:
        token = str(c.payload["token_hash"])
        done = await tx.conn.execute(
            sa.update(t.card)
            .where(t.card.c.token_hash == token, t.card.c.status != "revoked")
            .values(status="revoked", revoked_at=tx.now)
        )
        exists = (await tx.conn.execute(sa.select(t.card.c.pk).where(t.card.c.token_hash == token))).first()
        if exists is None and done.rowcount == 0:
            await self._upsert_card_status(tx, token, "revoked", 0)
        row = await self._row(tx, c.mpi_id)
        route = self._route(row)
        route.country_wide = True
        return route

    async def _card_status(self, tx: Tx, c: Remote) -> Route:
        p = c.payload
        token = str(p["token_hash"])
        if p.get("status") == "revoked":
            await self._card_revoke(tx, Remote(c.origin, c.seq, c.hlc, "card.revoke", None, {"token_hash": token}))
        else:
            exists = (await tx.conn.execute(sa.select(t.card.c.pk).where(t.card.c.token_hash == token))).first()
            if exists is None:
                await self._upsert_card_status(tx, token, "valid", int(p.get("programme_count", 0)))
        return Route()


def _hlc_time(hlc: int) -> str:
    ms = hlc >> 16
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _person(row: Any) -> Person:
    return person_of(row)


def _person_from_payload(p: dict[str, Any]) -> Person:
    return Person(
        first_name=str(p.get("first_name") or ""),
        last_name=str(p.get("last_name") or ""),
        date_of_birth=_date(p.get("date_of_birth")),
        gender=p.get("gender"),
        region_code=p.get("region_code"),
        phone_number=p.get("phone_number"),
        external_ids=p.get("external_ids") or {},
    )
