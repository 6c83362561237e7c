"""Name frequencies taken from the registry itself: common names are weak evidence, rare ones strong.

``NameFrequencies`` counts normalised first names, last names, full names, regions and birth
years of the active identities, and turns a value's share into bits of evidence (term
frequency adjustment), capped. The registry keeps one instance up to date as identities are
created, edited, merged and evicted.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from shared.matching.model import Person
from shared.matching.normalize import normalize_name

__all__ = ["NameFrequencies"]

# Share of the registry above which a name is "established" (see NameFrequencies.established)
_ESTABLISHED_SHARE = 0.002


class NameFrequencies:
    """Counts of values in the registry itself, for term-frequency weights.

    Agreement on "Mamadou" (thousands in the registry) is weaker evidence than agreement on
    a rare name: the u-probability of exact agreement on value v is its share of the
    registry instead of the average.  The same holds, more mildly, for regions (Dakar
    against Sédhiou) and birth years (this year's babies crowd their year far more than
    the over-sixties do theirs), which are counted too.
    """

    __slots__ = ("_counts", "_named", "_squares", "_totals", "total")

    def __init__(self) -> None:
        # one table per field: first name, last name, region, birth year, and the full name
        # with the birth year ("FIRST|LAST|YEAR"; first and last together because they are
        # not independent, with the year to count people rather than records, see
        # ``full_name_bits``)
        self._counts: tuple[dict[str, int], ...] = ({}, {}, {}, {}, {})
        # full name -> how many distinct birth years (or "unknown") carry it
        self._named: dict[str, int] = {}
        # Sums of squared counts give the average u of exact agreement, sum(share^2).
        self._squares = [0, 0, 0, 0, 0]
        self._totals = [0, 0, 0, 0, 0]
        self.total = 0

    @classmethod
    def from_people(cls, people: Iterable[Person]) -> NameFrequencies:
        freq = cls()
        for p in people:
            freq.add(p)
        return freq

    @staticmethod
    def _values(p: Person) -> tuple[str | None, ...]:
        region = p.region_code.strip().upper() if p.region_code else None
        year = str(p.date_of_birth.year) if p.date_of_birth is not None else None
        first, last = normalize_name(p.first_name), normalize_name(p.last_name)
        full = f"{first}|{last}|{year or ''}" if first and last else None
        return first, last, region or None, year, full

    def add(self, p: Person) -> None:
        for i, value in enumerate(self._values(p)):
            if value is not None:
                self._squares[i] += _bump(self._counts[i], value, 1)
                self._totals[i] += 1
                if i == 4 and self._counts[4][value] == 1:
                    _bump(self._named, value.rpartition("|")[0], 1)
        self.total += 1

    def remove(self, p: Person) -> None:
        values = self._values(p)
        if any(v is not None and self._counts[i].get(v, 0) <= 0 for i, v in enumerate(values)):
            raise KeyError(f"{p.first_name} {p.last_name} was never added")
        for i, value in enumerate(values):
            if value is not None:
                self._squares[i] += _bump(self._counts[i], value, -1)
                self._totals[i] -= 1
                if i == 4 and value not in self._counts[4]:
                    _bump(self._named, value.rpartition("|")[0], -1)
        self.total -= 1

    def _share(self, i: int, value: str) -> float:
        total = self._totals[i]
        return self._counts[i].get(value, 0) / total if total else 0.0

    def _average(self, i: int) -> float:
        total = self._totals[i]
        return self._squares[i] / (total * total) if total else 0.0

    def first_name_share(self, normalized: str) -> float:
        return self._share(0, normalized)

    def last_name_share(self, normalized: str) -> float:
        return self._share(1, normalized)

    def first_name_average_share(self) -> float:
        return self._average(0)

    def last_name_average_share(self) -> float:
        return self._average(1)

    def established(self, field: int, value: str) -> bool:
        """A value common enough in the registry to be a name of its own, not a slip.

        ``field``: 0 first name, 1 last name.  Typing errors scatter over many spellings
        that are each rare; "Amadou" against "Mamadou" or "Kane" against "Koné" are two
        names that many people carry, close in spelling but not one mistyped as the other.
        """
        total = self._totals[field]
        return total >= 100 and self._counts[field].get(value, 0) >= _ESTABLISHED_SHARE * total

    def full_name_people(self, first: str, last: str) -> int:
        """How many people (distinct birth years) carry this normalised first and last name."""
        return self._named.get(f"{first}|{last}", 0)

    def full_name_bits(self, first: str, last: str, cap: float) -> float | None:
        """Frequency adjustment when first and last name both agree exactly, within +-cap.

        log2(average first share * average last share / share of this full name): the
        adjustment to add to the two names' base weights, from how many people in the
        registry carry this very first-and-last name.  Not the sum of the two single-name
        adjustments, because first and last names are not independent: Christian first
        names cluster in Serer and Diola families, "Anne Ndong" is far more common than
        "Anne" times "Ndong" says.  People, not records, are counted (distinct birth years
        under the full name): a registry holding one person's unresolved duplicates, or two
        files that each hold everyone once, must not make that person's name look common.
        None when fewer than three people carry the full name (or the registry is small):
        a full name seen once or twice says nothing about its share that the two names do
        not (in a registry much smaller than the space of full names, 1 or 2 / size would
        overstate it; FEBRL 4, two files holding each person once, is such a registry).
        """
        people = len(self._counts[4])
        named = self._named.get(f"{first}|{last}", 0)
        if named < 3 or people < 100 or not self._totals[0] or not self._totals[1]:
            return None
        bits = math.log2(self._average(0) * self._average(1) * people / named)
        return cap if bits > cap else -cap if bits < -cap else bits

    def tf_bits(self, field: int, value: str, cap: float) -> float:
        """log2(average share / share of ``value``), within +-cap; 0 for a small registry.

        ``field``: 0 first name, 1 last name, 2 region, 3 birth year.
        """
        total = self._totals[field]
        if total < 100:
            return 0.0
        # A value never seen counts as seen once: the least it can be once the candidate
        # holding it is registered.
        share = max(self._counts[field].get(value, 0), 1) / total
        bits = math.log2(self._average(field) / share)
        return cap if bits > cap else -cap if bits < -cap else bits


def _bump(counts: dict[str, int], key: str, delta: int) -> int:
    """Change one count; returns the change in the sum of squared counts."""
    old = counts.get(key, 0)
    new = old + delta
    if new:
        counts[key] = new
    else:
        counts.pop(key, None)
    return new * new - old * old
