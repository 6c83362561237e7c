"""What a replica's role adds to applying a change: a small policy object handed to the Applier.

- ``NodePolicy(regions)``: a node holds the identities of its regions only, and forgets
  (evicts) one that leaves them.
- ``HubPolicy()``: the hub holds everything; it queues what nodes registered or renamed for
  the dedup check, opens review items for concurrent edits and for items nodes opened, and
  answers a move or a merge across regions with follow-up changes (snapshots, evictions)
  for the nodes of each side.
"""

from __future__ import annotations

from typing import Any, Protocol

from ...dedup import enqueue
from ...identities.evict import evict
from ...identities.fields import REVIEWED, Row
from ...identities.lookup import row_of
from ...identities.views import snapshot
from ...matching import NameFrequencies
from ...review.items import open_item
from ...storage.store import Tx
from .changes import FollowUp, Remote, Route

__all__ = ["HubPolicy", "NodePolicy", "RolePolicy"]


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
