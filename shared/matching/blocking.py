"""Blocking keys: which stored identities a query reads, so that no query scans the registry.

Owns: the key recipes and their hashing into signed 64-bit integers (what the storage layer
indexes).  Every key combines two pieces of evidence so that a bucket stays small even for
"Mamadou Diallo" in a registry of millions:

- ``FLY``: consonant skeleton of the phonetic first name (and of each compound token) +
  phonetic last-name skeleton + birth year; queried at year-1, year, year+1
- ``LD`` / ``FD``: last-name skeleton (resp. first-name skeleton) + full date of birth, which
  survive a typo in the other name; queried with day/month swapped and year +-1 too
- ``FL0``: first + last skeleton, stored only for identities without a birth date, and
  read by every query
- ``FLR``: first + last skeleton + region: survives a birth date typed wrong or left out
- ``DR``: full date of birth + region, when the date is a real one (not a 1 January / 1 July
  placeholder): survives both names mangled or left blank
- ``P``: phone subscriber number (last 9 digits)

``query_keys`` also derives every name key with first and last name crossed over.
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Iterable

from shared.matching.model import Person
from shared.matching.normalize import normalize_name
from shared.matching.phonetic import phonetic_key, skeleton, token_key

__all__ = ["index_keys", "key_hash", "query_keys"]

BUCKET_CAP = 100  # a key value held by more identities than this is too common to pair on


def key_hash(key: str) -> int:
    """Signed 64-bit hash of a key string, stable across processes and machines."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big", signed=True)


def _name_skeletons(raw: str) -> list[str]:
    """Skeleton of the whole name plus one per compound token ("Mame Diarra" -> 3 keys)."""
    tokens = normalize_name(raw).split()
    if not tokens:
        return []
    out = [skeleton(phonetic_key(raw))]
    if len(tokens) > 1:
        for t in tokens:
            s = skeleton(token_key(t))
            # One-letter skeletons (from "El", "Ba") would make buckets as big as a letter.
            if len(s) >= 2 and s not in out:
                out.append(s)
    return out


def _phone(p: Person) -> str | None:
    if not p.phone_number:
        return None
    digits = "".join(ch for ch in p.phone_number if ch.isdigit())
    return digits[-9:] if len(digits) >= 7 else None


def _safe_date(year: int, month: int, day: int) -> datetime.date | None:
    try:
        return datetime.date(year, month, day)
    except ValueError:
        return None


def _name_keys(
    firsts: list[str], lasts: list[str], dobs: Iterable[datetime.date], years: Iterable[int]
) -> list[str]:
    keys: list[str] = []
    years = list(years)
    for f in firsts:
        for last in lasts:
            keys.extend(f"FLY|{f}|{last}|{y}" for y in years)
    dob_list = list(dobs)
    for d in dob_list:
        iso = d.isoformat()
        keys.extend(f"LD|{last}|{iso}" for last in lasts[:1])
        keys.extend(f"FD|{f}|{iso}" for f in firsts[:1])
    return keys


def index_keys(p: Person) -> list[int]:
    """Keys to store for an identity (deduplicated)."""
    firsts, lasts = _name_skeletons(p.first_name), _name_skeletons(p.last_name)
    keys: list[str] = []
    if firsts and lasts:
        dob = p.date_of_birth
        if dob is not None:
            keys += _name_keys(firsts, lasts, [dob], [dob.year])
        else:
            keys.append(f"FL0|{firsts[0]}|{lasts[0]}")
    region = _region(p)
    if firsts and lasts and region:
        keys.append(f"FLR|{firsts[0]}|{lasts[0]}|{region}")
    if p.date_of_birth is not None and region and not _placeholder(p.date_of_birth):
        keys.append(f"DR|{p.date_of_birth.isoformat()}|{region}")
    phone = _phone(p)
    if phone:
        keys.append(f"P|{phone}")
    return _hashed(keys)


def _region(p: Person) -> str | None:
    return p.region_code.strip().upper() or None if p.region_code else None


def _placeholder(d: datetime.date) -> bool:
    return d.day == 1 and d.month in (1, 7)


def query_keys(p: Person) -> list[int]:
    """Keys to look up for a query: its own keys' plausible neighbours, names both ways round."""
    keys: list[str] = []
    region = _region(p)
    dob = p.date_of_birth
    dobs: list[datetime.date] = []
    years: list[int] = []
    if dob is not None:
        years = [dob.year - 1, dob.year, dob.year + 1]
        variants = [
            dob,
            _safe_date(dob.year, dob.day, dob.month),
            _safe_date(dob.year - 1, dob.month, dob.day),
            _safe_date(dob.year + 1, dob.month, dob.day),
        ]
        dobs = [d for d in dict.fromkeys(variants) if d is not None]
        if region and not _placeholder(dob):
            keys += [f"DR|{d.isoformat()}|{region}" for d in dobs[:2]]
    for first_raw, last_raw in ((p.first_name, p.last_name), (p.last_name, p.first_name)):
        firsts, lasts = _name_skeletons(first_raw), _name_skeletons(last_raw)
        if not (firsts and lasts):
            continue
        keys += _name_keys(firsts, lasts, dobs, years)
        # Stored identities without a birth date are found by name alone.
        keys.append(f"FL0|{firsts[0]}|{lasts[0]}")
        if region:
            keys.append(f"FLR|{firsts[0]}|{lasts[0]}|{region}")
    phone = _phone(p)
    if phone:
        keys.append(f"P|{phone}")
    return _hashed(keys)


def _hashed(keys: list[str]) -> list[int]:
    return list(dict.fromkeys(key_hash(k) for k in keys))
