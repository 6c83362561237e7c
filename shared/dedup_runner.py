"""One hub process's dedup passes, one at a time (the serving hub's jobs and ``POST /dedup/run``)."""

from __future__ import annotations

import asyncio

from .dedup import Dedup, DedupStats

__all__ = ["DedupRunner"]


class DedupRunner:
    """One hub process's dedup passes, one at a time."""

    def __init__(self, dedup: Dedup) -> None:
        self.dedup = dedup
        self._lock = asyncio.Lock()

    async def drain_now(self) -> DedupStats:
        """Check everything queued so far; returns what this pass did."""
        async with self._lock:
            return await self.dedup.drain()

    async def sweep_now(self) -> DedupStats:
        async with self._lock:
            return await self.dedup.sweep()
