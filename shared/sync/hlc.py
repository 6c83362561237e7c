"""Hybrid logical clock: wall-clock milliseconds plus a counter, packed in one integer.

``hlc = (milliseconds << 16) | counter``. It never goes backwards on a node, even when the
wall clock does, and it moves past any clock seen from elsewhere (``observe``), so the
order of two changes is the order of their HLCs, ties broken by node id.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["Hlc", "hlc_to_ms"]

_COUNTER_BITS = 16
_COUNTER_MASK = (1 << _COUNTER_BITS) - 1


def hlc_to_ms(value: int) -> int:
    """The wall-clock milliseconds of an HLC value."""
    return value >> _COUNTER_BITS


class Hlc:
    def __init__(self, last: int = 0, wall_ms: Callable[[], int] | None = None) -> None:
        self.last = last
        self._wall_ms = wall_ms or (lambda: time.time_ns() // 1_000_000)

    def peek(self) -> int:
        """The value ``tick`` would return, without advancing the clock."""
        wall = self._wall_ms() << _COUNTER_BITS
        return wall if wall > self.last else self.last + 1

    def tick(self) -> int:
        """A new timestamp for a local event."""
        self.last = self.peek()
        return self.last

    def observe(self, remote: int) -> None:
        """Move past a timestamp received from another replica."""
        if remote > self.last:
            self.last = remote
