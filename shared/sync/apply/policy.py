"""What a replica's role adds to applying a change: a small policy object handed to the Applier.

- ``NodePolicy(regions)``: a node holds the identities of its regions only, and forgets
  (evicts) one that leaves them.
- ``HubPolicy()``: the hub holds everything; it queues what nodes registered or renamed for
  the dedup check, opens review items for concurrent edits and for items nodes opened, and
  answers a move or a merge across regions with follow-up changes (snapshots, evictions)
  for the nodes of each side.
- ``NodeAuthority(...)``: at the hub, what one pushing node may change (see its docstring);
  the Applier asks it before applying each of that node's changes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import sqlalchemy as sa

from ...dedup import enqueue
from ...identities.evict import evict
from ...identities.fields import REVIEWED, Row
from ...identities.lookup import row_of
from ...identities.views import snapshot
from ...ids import IdError, parse
from ...matching import NameFrequencies
from ...review.items import open_item
from ...storage import schema as t
from ...storage.store import Tx
from ..hlc import hlc_to_ms
from .changes import FollowUp, Remote, Route

__all__ = ["NODE_KINDS", "NOT_AUTHORISED", "HubPolicy", "NodeAuthority", "NodePolicy", "RolePolicy"]


class RolePolicy(Protocol):
    async def created(self, tx: Tx, pks: list[int]) -> None:
        """Identities from other replicas were just created."""
        ...

    async def fields_changed(self, tx: Tx, pks: list[int], names: set[str]) -> None:
        """A remote write touched these fields of these identities."""
        ...

    async def concurrent_edits(self, tx: Tx, row: Row, conflicts: list[dict[str, Any]], origin: str) -> None:
        """Two replicas edited a reviewed field without seeing each other's value."""
        ...

    async def review_opened(self, tx: Tx, c: Remote) -> None:
        """A node opened a review item (``review.open``)."""
        ...

    async def moved(self, tx: Tx, frequencies: NameFrequencies, row: Row, new_region: str) -> list[FollowUp]:
        """An identity moved to ``new_region`` (``row`` as it was before)."""
        ...

    async def merged(self, tx: Tx, source: str, root: str) -> list[FollowUp]:
        """``source`` was merged into the group whose canonical identity is ``root``."""
        ...

    async def unmerged(self, tx: Tx, source: str, root: str) -> list[FollowUp]:
        """``source`` left the group of ``root``."""
        ...

    async def evict(self, tx: Tx, frequencies: NameFrequencies, c: Remote) -> None:
        """The hub says an identity left some regions (``evict``)."""
        ...


class NodePolicy:
    """A node: ``regions`` is its scope (None: everything)."""

    def __init__(self, regions: set[str] | None = None) -> None:
        self.regions = regions

    async def created(self, tx: Tx, pks: list[int]) -> None:
        return None

    async def fields_changed(self, tx: Tx, pks: list[int], names: set[str]) -> None:
        return None

    async def concurrent_edits(self, tx: Tx, row: Row, conflicts: list[dict[str, Any]], origin: str) -> None:
        return None  # the hub opens the review item; it comes down to nobody

    async def review_opened(self, tx: Tx, c: Remote) -> None:
        return None  # review items stay at the hub

    async def moved(self, tx: Tx, frequencies: NameFrequencies, row: Row, new_region: str) -> list[FollowUp]:
        if self.regions is not None and new_region not in self.regions:
            await evict(tx, frequencies, row.pk)
        return []

    async def merged(self, tx: Tx, source: str, root: str) -> list[FollowUp]:
        return []

    async def unmerged(self, tx: Tx, source: str, root: str) -> list[FollowUp]:
        return []

    async def evict(self, tx: Tx, frequencies: NameFrequencies, c: Remote) -> None:
        row = await row_of(tx.conn, c.mpi_id)
        # The identity's new region (the move itself may not have reached this node: it is not sent
        # where the identity leaves).
        moved_to = c.payload.get("region_code") or (row.region_code if row is not None else None)
        if row is not None and (self.regions is None or moved_to not in self.regions):
            await evict(tx, frequencies, row.pk)


class HubPolicy:
    """The hub: dedup queue, review items, snapshots and evictions for the nodes."""

    async def created(self, tx: Tx, pks: list[int]) -> None:
        # The hub matches what nodes registered against the whole country.
        await enqueue(tx, pks)

    async def fields_changed(self, tx: Tx, pks: list[int], names: set[str]) -> None:
        if names & set(REVIEWED):
            # A new name or birth date can make the identity someone else's duplicate.
            await enqueue(tx, pks)

    async def concurrent_edits(self, tx: Tx, row: Row, conflicts: list[dict[str, Any]], origin: str) -> None:
        for conflict in conflicts:
            await open_item(
                tx, "concurrent_edit", [row.mpi_id], matched_fields=[conflict["field"]], actor=f"sync:{origin}",
                detail=conflict,
            )

    async def review_opened(self, tx: Tx, c: Remote) -> None:
        p = c.payload
        await open_item(
            tx, str(p.get("reason", "remote")), list(p.get("mpi_ids") or [c.mpi_id]), score=p.get("similarity_score"),
            actor=f"node:{c.origin}", detail={"origin": c.origin, "seq": c.seq},
        )

    async def moved(self, tx: Tx, frequencies: NameFrequencies, row: Row, new_region: str) -> list[FollowUp]:
        """Nodes of the new region get the whole identity; nodes of the old one let it go."""
        return [
            ("identity.snapshot", row.mpi_id, await snapshot(tx.conn, row.pk),
             Route(region_a=new_region, exclude=row.region_code)),
            ("evict", row.mpi_id, {"region_code": new_region}, Route(region_a=row.region_code, exclude=new_region)),
        ]

    async def merged(self, tx: Tx, source: str, root: str) -> list[FollowUp]:
        """After a merge across regions, each side's nodes get the identity of the other side.

        Nodes of the source's region hold the source, not the canonical identity; nodes of the
        canonical identity's region must redirect the merged ID, so they get it too.
        """
        source_row, root_row = await row_of(tx.conn, source), await row_of(tx.conn, root)
        if source_row is None or root_row is None or source_row.region_code == root_row.region_code:
            return []
        a, b = source_row.region_code, root_row.region_code
        return [
            ("identity.snapshot", root_row.mpi_id, await snapshot(tx.conn, root_row.pk), Route(region_a=a, exclude=b)),
            ("identity.snapshot", source_row.mpi_id, await snapshot(tx.conn, source_row.pk), Route(region_a=b, exclude=a)),
        ]

    async def unmerged(self, tx: Tx, source: str, root: str) -> list[FollowUp]:
        """After an unmerge across regions, each side's nodes let go of the other side's identity."""
        source_row, root_row = await row_of(tx.conn, source), await row_of(tx.conn, root)
        if source_row is None or root_row is None or source_row.region_code == root_row.region_code:
            return []
        a, b = source_row.region_code, root_row.region_code
        return [
            ("evict", source_row.mpi_id, {"region_code": a}, Route(region_a=b, exclude=a)),
            ("evict", root_row.mpi_id, {"region_code": b}, Route(region_a=a, exclude=b)),
        ]

    async def evict(self, tx: Tx, frequencies: NameFrequencies, c: Remote) -> None:
        return None  # the hub holds every region


NOT_AUTHORISED = "not_authorised"

# What a node may push. Everything else (``identity.snapshot``, ``evict``, ``card.status``: the
# hub's own; ``review.decision``: taken at the hub) is refused from a node.
NODE_KINDS = frozenset({
    "identity.create", "identity.set", "external_id.add", "programme.add", "identity.merge", "identity.unmerge",
    "card.issue", "card.revoke", "review.open", "review.not_same", "key.rotate",
})


class NodeAuthority:
    """What one node may change, as the hub records it: asked for each change the node pushes.

    - It may create identities in any region, under IDs minted with its own node number;
      it then holds them.
    - Every other change must concern only identities it holds: of its regions, or
      recorded in ``sync_holding`` (it registered, edited or merged them), or created or
      changed earlier in this same push. A merge group is held as a whole: holding one
      member is holding the group. A merge needs both identities held; an unmerge needs
      its identity and the group it leaves, and may only move back cards and external ids
      that are in that group, and remove links that exist. A card's revocation needs the
      card known at the hub on an identity the node holds (the token hashes every node
      knows are no key to revoke); an issue, the identity held and a token no other holds.
    - Kinds outside ``NODE_KINDS`` are refused.
    - Clocks inside payloads obey the rule of change clocks: no further ahead than the
      skew allowed; the clocks a payload would write (``clocks``) name the change's origin.

    ``refusal`` answers None (allowed) or why not, as ``not_authorised: ...``. The check
    runs inside the transaction that applies the change, so what it reads is what the
    change meets. One instance serves one push (it remembers what the push created).
    """

    def __init__(self, name: str, node_number: int, regions: Iterable[str], max_hlc: int) -> None:
        self.name = name
        self.node_number = node_number
        self.regions = set(regions)
        self.max_hlc = max_hlc  # the largest HLC a clock may carry now (the hub's clock plus the skew allowed)
        self.granted: set[str] = set()  # IDs this push created or was allowed to change

    @staticmethod
    def _no(why: str) -> str:
        return f"{NOT_AUTHORISED}: {why}"

    # -- creations, checked in bulk (a backlog is made of them) ---------------------------------

    async def refuse_creates(self, tx: Tx, changes: Sequence[Remote], existing: set[str]) -> list[str | None]:
        """For each ``identity.create``: None, or why it is refused. Known IDs count as writes to them."""
        out: list[str | None] = []
        for c in changes:
            why = self._clocks(c)
            if why is None and c.mpi_id in existing:
                why = await self._unheld(tx, [c.mpi_id])
            elif why is None:
                why = self._minted_here(c.mpi_id)
            if why is None and c.mpi_id:
                self.granted.add(c.mpi_id)
            out.append(why)
        return out

    def _minted_here(self, mpi_id: str | None) -> str | None:
        try:
            number = parse(mpi_id or "").origin()[0]
        except (IdError, KeyError, ValueError):
            return self._no(f"{mpi_id!r} is not an MPI ID")
        if number != self.node_number:
            return self._no(f"{mpi_id} was not minted by this node (node number {number}, not {self.node_number})")
        return None

    # -- every other change ---------------------------------------------------------------------------

    async def refusal(self, tx: Tx, c: Remote) -> str | None:
        if c.kind not in NODE_KINDS:
            return self._no(f"{c.kind} is a change only the hub makes")
        why = self._clocks(c)
        if why is not None or c.kind == "key.rotate":
            return why  # a rotation is the node's own key: its signature is its authority
        p = c.payload
        ids = [c.mpi_id] if c.mpi_id else []
        if c.kind in ("identity.set", "external_id.add", "programme.add", "card.issue") and not ids:
            return self._no(f"{c.kind} names no identity")
        if c.kind == "identity.merge":
            ids += [str(p.get("source")), str(p.get("target"))]
        elif c.kind in ("review.open", "review.not_same"):
            ids += [str(m) for m in p.get("mpi_ids") or []]
        elif c.kind == "card.revoke":
            owner = await self._card_owner(tx, str(p.get("token_hash")))
            if owner is None:
                return self._no("no card with this token hash is known at the hub")
            ids.append(owner)
        elif c.kind == "card.issue":
            owner = await self._card_owner(tx, str(p.get("token_hash")))
            if owner is not None:
                ids.append(owner)  # a token known already: only its holder may name it again
        elif c.kind == "identity.unmerge":
            why = await self._unmerge(tx, c)
            if why is not None:
                return why
            ids.append(str(p.get("target")))
        why = await self._unheld(tx, ids)
        if why is None:
            self.granted.update(ids)
        return why

    def _clocks(self, c: Remote) -> str | None:
        """Clocks in the payload: within the skew allowed, and those it writes name its origin."""
        p = c.payload
        written = p.get("clocks")
        if written is not None:
            if not isinstance(written, dict):
                return self._no("the payload's clocks are not an object")
            for key, clock in written.items():
                why = self._clock(clock, key, origin=c.origin)
                if why is not None:
                    return why
        base = p.get("_base")
        if base is not None:
            if not isinstance(base, dict):
                return self._no("the payload's _base is not an object")
            for key, clock in base.items():
                why = None if clock is None else self._clock(clock, key, origin=None)
                if why is not None:
                    return why
        return None

    def _clock(self, clock: Any, key: str, *, origin: str | None) -> str | None:
        if not (isinstance(clock, list | tuple) and len(clock) == 2 and type(clock[0]) is int
                and isinstance(clock[1], str)):
            return self._no(f"the clock of {key} is not [hlc, node id]")
        if clock[0] > self.max_hlc:
            return self._no(f"the clock of {key} is {(hlc_to_ms(clock[0]) - hlc_to_ms(self.max_hlc)) // 1000} s "
                            "ahead of what the hub allows")
        if origin is not None and clock[1] != origin:
            return self._no(f"the clock of {key} names another node ({clock[1][:24]}), not the change's origin")
        return None

    async def _unheld(self, tx: Tx, mpi_ids: Sequence[str]) -> str | None:
        """None when this node holds every one of ``mpi_ids`` (merge groups held as a whole), else why not."""
        wanted = sorted({m for m in mpi_ids if m not in self.granted})
        if not wanted:
            return None
        i = t.identity.c
        rows = {r.mpi_id: r for r in await tx.conn.execute(
            sa.select(i.mpi_id, i.merged_into).where(i.mpi_id.in_(wanted)))}
        unknown = [m for m in wanted if m not in rows]
        if unknown:
            return self._no(f"{unknown[0]} is not an identity the hub knows")
        root_of = {m: rows[m].merged_into or m for m in wanted}
        roots = sorted(set(root_of.values()))
        members: dict[str, set[str]] = {r: {r} for r in roots}
        regions: dict[str, str] = {}
        for r in await tx.conn.execute(
                sa.select(i.mpi_id, i.merged_into, i.region_code).where(sa.or_(i.mpi_id.in_(roots), i.merged_into.in_(roots)))):
            regions[r.mpi_id] = r.region_code
            if r.merged_into in members:
                members[r.merged_into].add(r.mpi_id)
        everyone = sorted(set().union(*members.values()))
        h = t.sync_holding.c
        held = set((await tx.conn.execute(
            sa.select(h.mpi_id).where(h.node_name == self.name, h.mpi_id.in_(everyone)))).scalars())
        for m in wanted:
            group = members[root_of[m]]
            if not any(g in held or g in self.granted or regions.get(g) in self.regions for g in group):
                return self._no(f"node {self.name} does not hold {m} (region {regions.get(m, '?')})")
        return None

    async def _card_owner(self, tx: Tx, token_hash: str) -> str | None:
        """The ID of the identity the hub keeps this card on, or None."""
        owner = await tx.conn.execute(
            sa.select(t.identity.c.mpi_id).join(t.card, t.card.c.identity_pk == t.identity.c.pk)
            .where(t.card.c.token_hash == token_hash))
        return owner.scalar()

    async def _unmerge(self, tx: Tx, c: Remote) -> str | None:
        """What an unmerge would move or unlink must be the group's own."""
        p = c.payload
        source, target = str(p.get("source")), str(p.get("target"))
        if c.mpi_id != source:
            return self._no("an unmerge names its source")
        m, u = t.merge_link.c, t.merge_unlink.c
        for link in p.get("links") or []:
            if not (isinstance(link, list) and len(link) == 4 and link[0] == source and type(link[2]) is int):
                return self._no("an unmerge removes only links of its source")
            if link[2] > self.max_hlc:
                return self._no("a link's clock is ahead of what the hub allows")
            known = (await tx.conn.execute(sa.select(m.source).where(
                m.source == link[0], m.target == link[1], m.hlc == link[2], m.node_id == link[3]))).first()
            known = known or (await tx.conn.execute(sa.select(u.source).where(
                u.source == link[0], u.target == link[1], u.hlc == link[2], u.node_id == link[3]))).first()
            if known is None:
                return self._no("an unmerge removes a link the hub does not hold")
        i = t.identity.c
        root = (await tx.conn.execute(sa.select(i.merged_into).where(i.mpi_id == target))).scalar() or target
        group = set((await tx.conn.execute(
            sa.select(i.mpi_id).where(sa.or_(i.mpi_id == root, i.merged_into == root)))).scalars()) | {source}
        for token in p.get("cards") or []:
            owner = await self._card_owner(tx, str(token))
            if owner is not None and owner not in group:
                return self._no("an unmerge moves a card of another identity")
        x = t.external_id.c
        for pair in p.get("external_ids") or []:
            owner = (await tx.conn.execute(
                sa.select(i.mpi_id).join(t.external_id, x.identity_pk == i.pk)
                .where(x.system == str(pair[0]), x.value == str(pair[1])))).scalar()
            if owner is not None and owner not in group:
                return self._no("an unmerge moves an external id of another identity")
        return None
