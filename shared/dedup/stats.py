"""What a dedup pass did."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DedupStats"]


@dataclass
class DedupStats:
    checked: int = 0
    merged: int = 0
    queued: int = 0
    seconds: float = 0.0
    scored: int = 0  # candidate pairs scored, each once (not kept in dedup_progress)
    finished: bool = True  # False: a sweep stopped by ``stop_after`` before the end (the next one resumes)

    def add(self, other: DedupStats) -> None:
        self.checked += other.checked
        self.scored += other.scored
        self.merged += other.merged
        self.queued += other.queued
