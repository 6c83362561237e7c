"""What the applier takes (``Remote``: a change from another replica) and gives back (``Route``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ...identities.fields import Clock

__all__ = ["FollowUp", "Remote", "Route"]


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
    # Why the hub refused to apply the change (``NodeAuthority``): it is set aside, sent to no node.
    refused: str | None = None
    # Changes the hub writes itself because of this one (a snapshot for a new region, an evict).
    follow_ups: list[FollowUp] = field(default_factory=list)


FollowUp = tuple[str, str, dict[str, Any], Route]
"""(kind, mpi_id, payload, route) of a change the hub appends because of another."""
