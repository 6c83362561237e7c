"""Per-client-address rate limits: token buckets, one per (limit, address), in memory.

A limit allows ``per_minute`` events a minute from one address, in bursts of up to that
many; once spent, the next event is refused until a token has come back, and the answer
says when (``Retry-After``). Buckets live in the serving process only: a restart forgets
them, and several processes behind one address share nothing (run one process per node).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

__all__ = ["RateLimiter"]

_MAX_ADDRESSES = 100_000


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    """``per_minute`` events a minute per address; 0 means no limit."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._rate = per_minute / 60.0
        self._buckets: dict[str, _Bucket] = {}

    def _bucket(self, address: str, now: float) -> _Bucket:
        bucket = self._buckets.get(address)
        if bucket is None:
            if len(self._buckets) >= _MAX_ADDRESSES:
                self._forget_full(now)
            bucket = self._buckets[address] = _Bucket(float(self.per_minute), now)
        else:
            bucket.tokens = min(float(self.per_minute), bucket.tokens + (now - bucket.at) * self._rate)
            bucket.at = now
        return bucket

    def _forget_full(self, now: float) -> None:
        # An address whose bucket has refilled is indistinguishable from a new one.
        full = [a for a, b in self._buckets.items() if b.tokens + (now - b.at) * self._rate >= self.per_minute]
        for address in full:
            del self._buckets[address]
        if len(self._buckets) >= _MAX_ADDRESSES:
            self._buckets.clear()

    def retry_after(self, address: str) -> int:
        """Seconds until ``address`` may act again (0: it may now), without spending anything."""
        if self.per_minute <= 0:
            return 0
        bucket = self._bucket(address, time.monotonic())
        return 0 if bucket.tokens >= 1 else max(1, math.ceil((1 - bucket.tokens) / self._rate))

    def spend(self, address: str) -> int:
        """Count one event; returns 0 when allowed, else the seconds to wait (nothing spent)."""
        wait = self.retry_after(address)
        if wait == 0 and self.per_minute > 0:
            self._buckets[address].tokens -= 1
        return wait
