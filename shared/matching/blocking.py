"""Blocking keys: which stored identities a query reads, so that no query scans the registry.

Owns: the key recipes, their hashing into signed 64-bit integers (what the storage layer
indexes) and ``BUCKET_CAP``.  Candidates are the union of several narrow keys, chosen so that
a duplicate carrying any one or two of the usual errors (a typo or spelling variant in a
name, names swapped, a compound name shortened, a birth date missing, a placeholder, day and
month swapped, a year off, a new phone, another region) still shares a key with its original.

Names are phonetic consonant skeletons (``skeleton``: Ousmane/Usman, Diallo/Jallow, vowel
typos), of the whole name and, for compound names, of each token ("Mame Diarra").

- ``N`` both names, order-free; refined by ``NR`` (+ region) and ``NY`` (+ birth year,
  queried at year-1, year, year+1): survive every birth-date, phone and region error
- ``FD`` / ``LD``: first (resp. last) name + full birth date, queried with day and month
  swapped and the year off by one: survive any error in the other name
- ``FYR`` / ``LYR``: first (resp. last) name + birth year + region: survive an error in
  the other name together with a placeholder or a wrong day
- ``FI`` / ``LI``: one name + the other's initial + region: survive a typo in the other
  name when the birth date is missing too
- ``FR`` / ``LR``: one name + region: survive the other name replaced and the birth date
  lost (where names are rare enough for that to single anyone out)
- ``DS`` / ``DR``: full birth date + sex (resp. region): survive both names mangled
- ``P``: phone subscriber number (last 9 digits)

Frequency-aware: a key value held by more than ``BUCKET_CAP`` identities says little (Mamadou
Diallo among a million): the candidate query skips it, and the narrower keys stored for the
same people (with a region, a year, a date) take over.  Every identity stores every key,
broad and narrow, so nothing depends on the registry's size when an identity is indexed.

``query_keys`` derives every name key with first and last name crossed over too.
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Iterable

from shared.matching.model import Person
from shared.matching.normalize import normalize_name
from shared.matching.phonetic import phonetic_key, skeleton, token_key

__all__ = ["BUCKET_CAP", "KEYS_VERSION", "index_keys", "key_hash", "query_keys"]

# A key value held by more identities than this is too common to read: narrower keys decide.
BUCKET_CAP = 100
# Bumped whenever a recipe changes: a migration re-keys the stored identities.
KEYS_VERSION = 2


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


def _region(p: Person) -> str | None:
    return p.region_code.strip().upper() or None if p.region_code else None


def _sexes(p: Person, query: bool) -> list[str]:
    sex = (p.gender or "").upper()
    if sex in ("M", "F"):
        return [sex]
    # An unknown sex on the query side may be either; an identity stores none.
    return ["M", "F"] if query else []


def _safe_date(year: int, month: int, day: int) -> datetime.date | None:
    try:
        return datetime.date(year, month, day)
    except ValueError:
        return None


def _pairs(firsts: list[str], lasts: list[str]) -> list[str]:
    """Order-free name pairs: "A|B" with A <= B, so swapped names give the same key."""
    return list(dict.fromkeys("|".join(sorted((f, last))) for f in firsts for last in lasts))


def _keys(
    p: Person,
    order: list[tuple[list[str], list[str]]],
    dobs: list[datetime.date],
    years: list[int],
    sexes: list[str],
) -> list[str]:
    """Key strings of ``p`` read with each (firsts, lasts) naming in ``order``."""
    keys: list[str] = []
    region = _region(p)
    for firsts, lasts in order:
        # One name alone still gives its own keys: a match query may leave the other out.
        for tag, names in (("F", firsts), ("L", lasts)):
            if not names:
                continue
            keys += [f"{tag}D|{names[0]}|{d.isoformat()}" for d in dobs]
            if region:
                keys += [f"{tag}YR|{names[0]}|{y}|{region}" for y in years]
                keys.append(f"{tag}R|{names[0]}|{region}")
        if not (firsts and lasts):
            continue
        pairs = _pairs(firsts, lasts)
        keys += [f"N|{pair}" for pair in pairs]
        if region:
            keys += [f"NR|{pair}|{region}" for pair in pairs]
            keys += [f"FI|{firsts[0]}|{lasts[0][0]}|{region}", f"LI|{lasts[0]}|{firsts[0][0]}|{region}"]
        keys += [f"NY|{pair}|{y}" for pair in pairs for y in years]
    for d in dobs:
        keys += [f"DS|{d.isoformat()}|{s}" for s in sexes]
        if region:
            keys.append(f"DR|{d.isoformat()}|{region}")
    phone = _phone(p)
    if phone:
        keys.append(f"P|{phone}")
    return keys


def index_keys(p: Person) -> list[int]:
    """Keys to store for an identity (deduplicated)."""
    names = (_name_skeletons(p.first_name), _name_skeletons(p.last_name))
    dob = p.date_of_birth
    dobs = [dob] if dob is not None else []
    years = [dob.year] if dob is not None else []
    return _hashed(_keys(p, [names], dobs, years, _sexes(p, query=False)))


def query_keys(p: Person) -> list[int]:
    """Keys to look up for a query: its own keys' plausible neighbours, names both ways round."""
    firsts, lasts = _name_skeletons(p.first_name), _name_skeletons(p.last_name)
    dob = p.date_of_birth
    dobs: list[datetime.date] = []
    years: list[int] = []
    if dob is not None:
        years = [dob.year, dob.year - 1, dob.year + 1]
        variants = [
            dob,
            _safe_date(dob.year, dob.day, dob.month),
            _safe_date(dob.year - 1, dob.month, dob.day),
            _safe_date(dob.year + 1, dob.month, dob.day),
        ]
        dobs = [d for d in dict.fromkeys(variants) if d is not None]
    return _hashed(_keys(p, [(firsts, lasts), (lasts, firsts)], dobs, years, _sexes(p, query=True)))


def _hashed(keys: Iterable[str]) -> list[int]:
    return list(dict.fromkeys(key_hash(k) for k in keys))
