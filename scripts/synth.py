"""Seeded synthetic West African population with known duplicates and look-alikes.

Owns: the name, region, birth-date and phone distributions of the synthetic registry, the
errors field workers make when they register someone twice, and the look-alikes
(twins, namesakes, parent and child) that a matcher must not take for duplicates.

Streaming: ``generate`` yields one record at a time in constant memory, so any size up to
millions can be written.  Each record has a truth ``person_id`` and a ``kind``:
"original", "duplicate" (same person_id as the original it copies), "twin", "namesake",
"parent_child" (new person_id; ``related_record_id`` points at the original).

    python scripts/synth.py --n 100000 --seed 7 --out data/pop.jsonl   # or .csv
"""

from __future__ import annotations

import argparse
import bisect
import csv
import datetime
import itertools
import json
import random
import sys
import unicodedata
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

FIELDS = (
    "record_id",
    "person_id",
    "kind",
    "related_record_id",
    "first_name",
    "last_name",
    "date_of_birth",
    "gender",
    "region_code",
    "phone_number",
    "dhis2_uid",
)
TODAY = datetime.date(2026, 1, 1)


class _Weighted:
    """Weighted choice by bisection over cumulative weights (fast for repeated draws)."""

    def __init__(self, items: dict[str, float]) -> None:
        self.values = list(items)
        self.cum = list(itertools.accumulate(items.values()))

    def pick(self, rng: random.Random) -> str:
        return self.values[bisect.bisect_right(self.cum, rng.random() * self.cum[-1])]


def _w(spec: str) -> dict[str, float]:
    """'Name:weight, Name:weight' -> dict (weights mimic the real skew)."""
    out: dict[str, float] = {}
    for part in spec.split(","):
        name, _, weight = part.strip().rpartition(":")
        out[name] = float(weight)
    return out


_MUSLIM_M = (
    "Mamadou:30, Ibrahima:12, Abdoulaye:12, Moussa:10, Ousmane:10, Cheikh:7, Amadou:7, Modou:6, Oumar:6,"
    " Boubacar:6, Souleymane:6, Aliou:5, Seydou:5, Mohamed:5, Lamine:4, Alassane:3, Assane:3, Ousseynou:3,"
    " Babacar:4, Pape:4, Malick:2, Moustapha:3, Abdou:3, Idrissa:2, Samba:3, Demba:2, Adama:3, Djibril:2,"
    " Issa:2, Bakary:3, Sékou:2, Karim:1, Youssouf:2, Yacouba:2, Thierno:2, El Hadji:3, Mamadou Lamine:1,"
    " Ismaïla:2, Daouda:2, Mor:1, Saliou:2, Fallou:1, Lassana:1, Sidy:1, Aboubacar:1, Habib:1, Khalifa:1,"
    " Mouhamadou:2, Serigne:2, Bassirou:1, Mamadou Moustapha:0.5, Alioune:3, Ibou:1, Baba:1, Hamidou:1"
)
_MUSLIM_F = (
    "Fatou:20, Aminata:14, Mariama:9, Awa:9, Aïssatou:9, Khady:5, Fatoumata:9, Ndèye:6, Ndèye Fatou:2,"
    " Mame Diarra:2, Coumba:4, Astou:3, Adama:3, Binta:3, Rama:2, Penda:2, Sokhna:2, Bineta:2, Kadiatou:4,"
    " Oumou:3, Hawa:3, Rokhaya:3, Seynabou:3, Dieynaba:2, Maïmouna:3, Ramatoulaye:2, Yacine:1,"
    " Nafissatou:2, Djénéba:2, Assétou:2, Safiatou:1, Kiné:2, Marème:2, Khadidiatou:2, Salimata:2,"
    " Mame:1, Ndèye Awa:1, Fanta:2, Nabou:1, Sira:1, Aby:1, Ndeye Khady:1, Maty:1, Aïda:2, Gnima:1"
)
_CHRISTIAN_M = "Jean:3, Joseph:2, Pierre:2, Paul:2, Augustin:1, Emmanuel:1, Michel:1, Ignace:1, Raymond:1"
_CHRISTIAN_F = "Marie:4, Thérèse:1, Odile:1, Christine:1, Bernadette:1, Henriette:1, Anne:1, Agnès:1"
_AKAN_M = "Kouadio:3, Kofi:2, Kouamé:3, Yao:3, Koffi:3, Konan:2, Kwame:1, Kouakou:2, Serge:1, Eric:1, Jean:2"
_AKAN_F = "Akissi:3, Affoué:2, Adjoua:3, Amenan:2, Ahou:2, Aya:3, Amoin:2, Marie:2, Christelle:1, Ama:1"

_GROUPS: dict[str, tuple[float, str, float]] = {
    # group: (population weight, last names, share of Christian first names)
    "wolof": (
        35,
        "Ndiaye:12, Diop:12, Fall:7, Gueye:7, Seck:5, Mbaye:6, Faye:3, Sarr:3, Niang:4, Thiam:3,"
        " Cissé:3, Kane:2, Sy:2, Samb:3, Lo:3, Dieng:3, Mbodj:2, Wade:2, Ndour:1, Gaye:1, Touré:2,"
        " Ba:2, Ndao:1, Mbengue:2, Diagne:3, Ndoye:2, Sène:1, Kâ:1, Guèye:1",
        0.02,
    ),
    "pulaar": (
        20,
        "Diallo:22, Ba:8, Sow:8, Barry:6, Bah:3, Kane:3, Sy:3, Baldé:4, Thiam:2, Ly:2, Wane:1,"
        " Dia:2, Sall:2, Tall:2, Kandé:1, Diao:1, Bâ:1, Niang:1, Sidibé:2, Djigo:1",
        0.0,
    ),
    "mande": (
        20,
        "Traoré:14, Coulibaly:14, Keïta:6, Konaté:5, Camara:8, Diarra:6, Koné:6, Sissoko:3,"
        " Sanogo:3, Dembélé:3, Doumbia:3, Kouyaté:2, Fofana:3, Touré:4, Cissé:3, Konté:2, Dramé:2,"
        " Kanté:2, Diabaté:2, Sangaré:2, Bagayoko:1, Diakité:2, Fané:1, Kamara:1, Ouattara:3",
        0.02,
    ),
    "serer": (
        10,
        "Diouf:8, Faye:8, Sarr:6, Ndour:3, Sène:5, Dione:3, Ngom:4, Thiaw:2, Diène:1, Senghor:2,"
        " Tine:2, Ndong:1, Ciss:2, Kama:1, Loum:1, Gning:1",
        0.25,
    ),
    "diola": (
        6,
        "Diatta:8, Sané:5, Badji:5, Sagna:4, Diédhiou:4, Goudiaby:3, Manga:3, Bassène:3, Coly:2,"
        " Tendeng:1, Sambou:4, Mané:3, Djiba:2, Diémé:2",
        0.4,
    ),
    "soninke": (
        5,
        "Sylla:4, Cissé:4, Doucouré:4, Diakhaby:3, Sakho:3, Kébé:3, Tandia:1, Gassama:3,"
        " Dramé:2, Dianka:1, Niakhaté:2, Sacko:2, Bathily:2, Camara:2",
        0.0,
    ),
    "akan": (
        4,
        "Kouassi:4, Kouamé:4, Koffi:3, Yao:4, N'Guessan:4, Konan:3, Kouadio:3, Ouattara:3, Aka:2,"
        " Brou:1, Assi:1, Kra:1, Amani:1, N'Dri:1, Bamba:2",
        0.5,
    ),
}
_REGIONS = _Weighted(
    _w("DKR:25, THI:14, DIO:9, KLK:7, SLO:7, LGA:6, TAM:5, KAO:5, ZIG:4, FTK:5, KDG:5, MAT:4, KAF:4, SED:3")
)
_HOME_REGION = {"diola": "ZIG", "serer": "FTK", "pulaar": "MAT", "soninke": "TAM"}
_TWIN_NAMES = {"M": [("Assane", "Ousseynou"), ("Alassane", "Alhousseynou")], "F": [("Awa", "Adama")]}

_GROUP_PICK = _Weighted({g: v[0] for g, v in _GROUPS.items()})
_LAST = {g: _Weighted(_w(v[1])) for g, v in _GROUPS.items()}
_FIRST = {
    "M": _Weighted(_w(_MUSLIM_M)),
    "F": _Weighted(_w(_MUSLIM_F)),
    "CM": _Weighted(_w(_CHRISTIAN_M)),
    "CF": _Weighted(_w(_CHRISTIAN_F)),
    "AM": _Weighted(_w(_AKAN_M)),
    "AF": _Weighted(_w(_AKAN_F)),
}
# Ages skew young, as in a health-post registry (many children and mothers).
_AGE_BANDS = [(0, 5, 16), (5, 15, 20), (15, 30, 27), (30, 45, 18), (45, 60, 11), (60, 90, 8)]
_AGE_CUM = list(itertools.accumulate(w for _, _, w in _AGE_BANDS))


def _variant_groups() -> list[tuple[str, ...]]:
    try:
        from shared.matching.phonetic import VARIANT_GROUPS
    except ImportError:  # run as a plain script without PYTHONPATH
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from shared.matching.phonetic import VARIANT_GROUPS
    return [tuple(dict.fromkeys(g)) for g in VARIANT_GROUPS]


_VARIANTS: dict[str, tuple[str, ...]] = {}
for _group in _variant_groups():
    for _spelling in _group:
        _VARIANTS[_spelling] = _group


def strip_accents(s: str) -> str:
    return "".join(ch for ch in unicodedata.normalize("NFKD", s) if not unicodedata.combining(ch))


def _age(rng: random.Random) -> int:
    i = bisect.bisect_right(_AGE_CUM, rng.random() * _AGE_CUM[-1])
    lo, hi, _ = _AGE_BANDS[i]
    return rng.randrange(lo, hi)


def _dob(rng: random.Random, age: int) -> datetime.date:
    born = TODAY - datetime.timedelta(days=age * 365 + rng.randrange(365))
    return born


def _phone(rng: random.Random) -> str:
    return f"+2217{rng.choice('05678')}{rng.randrange(10**7):07d}"


def _uid(rng: random.Random) -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    return rng.choice(alphabet[:52]) + "".join(rng.choice(alphabet) for _ in range(10))


def _first_name(rng: random.Random, group: str, gender: str) -> str:
    christian = _GROUPS[group][2]
    if group == "akan" and rng.random() < 0.6:
        return _FIRST["A" + gender].pick(rng)
    if rng.random() < christian:
        return _FIRST["C" + gender].pick(rng)
    return _FIRST[gender].pick(rng)


def _original(rng: random.Random) -> dict[str, Any]:
    group = _GROUP_PICK.pick(rng)
    gender = "M" if rng.random() < 0.48 else "F"
    last = _LAST[group].pick(rng)
    if last in ("Ndiaye", "Mbaye", "Ndour") and rng.random() < 0.12:
        last = last[0] + "'" + last[1:]
    region = _HOME_REGION[group] if group in _HOME_REGION and rng.random() < 0.5 else _REGIONS.pick(rng)
    age = _age(rng)
    r = rng.random()
    # Older people more often have only a known year.
    placeholder_p = 0.06 + 0.004 * age
    dob: datetime.date | None
    if r < 0.04:
        dob = None
    elif r < 0.04 + placeholder_p:
        dob = datetime.date(TODAY.year - age - 1, 1 if rng.random() < 0.75 else 7, 1)
    else:
        dob = _dob(rng, age)
    g = rng.random()
    return {
        "first_name": _first_name(rng, group, gender),
        "last_name": last,
        "date_of_birth": dob,
        "gender": gender if g < 0.97 else ("U" if g < 0.99 else None),
        "region_code": region,
        "phone_number": _phone(rng) if rng.random() < 0.65 else None,
        "dhis2_uid": _uid(rng) if rng.random() < 0.15 else None,
        "_group": group,
        "_gender": gender,
    }


# -- errors clerks make --------------------------------------------------------------------
_KEYBOARD_NEIGHBOURS = {
    "a": "zqs",
    "z": "aes",
    "e": "zrd",
    "r": "etf",
    "t": "ryg",
    "y": "tuh",
    "u": "yij",
    "i": "uok",
    "o": "ipl",
    "p": "om",
    "q": "as",
    "s": "qdz",
    "d": "sfe",
    "f": "dgr",
    "g": "fht",
    "h": "gjy",
    "j": "hku",
    "k": "jli",
    "l": "km",
    "m": "ln",
    "w": "xs",
    "x": "wc",
    "c": "xv",
    "v": "cb",
    "b": "vn",
    "n": "bm",
}


def typo(s: str, rng: random.Random) -> str:
    if len(s) < 3:
        return s + rng.choice("aeiou")
    # Typos rarely hit the first letter: clerks start right and slip later.
    i = rng.randrange(1, len(s))
    op = rng.random()
    ch = s[i]
    if op < 0.35:
        repl = rng.choice(_KEYBOARD_NEIGHBOURS.get(ch.lower(), "aeiou"))
        return s[:i] + (repl.upper() if ch.isupper() else repl) + s[i + 1 :]
    if op < 0.6:
        return s[:i] + s[i + 1 :] if s[i] != " " else s
    if op < 0.8:
        return s[:i] + ch + s[i:]  # doubled key
    if i + 1 < len(s):
        return s[:i] + s[i + 1] + ch + s[i + 2 :]
    return s[: i - 1] + ch + s[i - 1]


_REWRITES = (
    ("ou", "u"),
    ("Ou", "U"),
    ("u", "ou"),
    ("Dj", "J"),
    ("J", "Dj"),
    ("Dia", "Ja"),
    ("Die", "Je"),
    ("Co", "Ko"),
    ("Ca", "Ka"),
    ("Cou", "Ku"),
    ("K", "C"),
    ("kh", "k"),
    ("Kh", "K"),
    ("th", "t"),
    ("Th", "T"),
    ("gn", "ny"),
    ("Gn", "Ny"),
    ("ll", "l"),
    ("ss", "s"),
    ("s", "ss"),
    ("y", "i"),
    ("i", "y"),
    ("ck", "k"),
    ("Ch", "Sh"),
    ("ai", "ei"),
    ("ey", "ai"),
    ("é", "e"),
    ("ye", "ie"),
    ("Oua", "Wa"),
    ("mm", "m"),
    ("rr", "r"),
    ("tt", "t"),
)


def respell(name: str, rng: random.Random) -> str:
    """A spelling variant a clerk might write: a known variant, or a French/English rewrite."""
    plain = strip_accents(name).upper().replace("'", "")
    group = _VARIANTS.get(plain)
    if group and len(group) > 1 and rng.random() < 0.7:
        return rng.choice([g for g in group if g != plain]).title()
    options = [(a, b) for a, b in _REWRITES if a in name]
    if options:
        a, b = rng.choice(options)
        return name.replace(a, b, 1)
    if name[-1:] in "eé" and len(name) > 3:
        return name[:-1]
    return name + "e" if name[-1:] not in "aeiou" else name


def space_variant(name: str, rng: random.Random) -> str:
    """Apostrophe and space variants: N'Diaye/Ndiaye/N Diaye, Mame Diarra/Mamediarra/Mame-Diarra."""
    if "'" in name:
        return name.replace("'", rng.choice(["", " ", "-"]))
    if " " in name:
        return name.replace(" ", rng.choice(["", "-", "  "]))
    if name[:2] in ("Nd", "Mb", "Ng") and len(name) > 3:
        return name[0] + rng.choice(["'", " "]) + name[1].upper() + name[2:]
    return " " + name + " "


def cosmetic(name: str, rng: random.Random) -> str:
    r = rng.random()
    if r < 0.5:
        name = strip_accents(name)
    r = rng.random()
    if r < 0.3:
        name = name.upper()
    elif r < 0.35:
        name = name.lower()
    return name


def _safe_date(y: int, m: int, d: int) -> datetime.date | None:
    try:
        return datetime.date(y, m, d)
    except ValueError:
        return None


_ERROR_WEIGHTS = (
    _w(
        "typo_first:12, typo_last:10, variant_first:10, variant_last:8, swap_names:6, space_variant:7,"
        " drop_token:3, dob_swap:6, dob_year:7, dob_placeholder:6, dob_missing:5, dob_day:3, region_move:10,"
        " phone_missing:9, phone_new:3, gender_missing:3, dob_year_far:3, compound_first:3, swap_and_typo:2,"
        " dob_placeholder_year:2"
    )
)
_ERRORS = _Weighted(_ERROR_WEIGHTS)


# The error kinds added when the generator was widened for the learned matcher (issue 20):
# ``errors="classic"`` draws only the others (the mix before, with the same relative weights),
# a proxy of sets whose errors are milder than the widened generator's.
WIDENED_ERRORS = ("dob_year_far", "compound_first", "swap_and_typo", "dob_placeholder_year")
_CLASSIC_ERRORS = _Weighted({k: w for k, w in _ERROR_WEIGHTS.items() if k not in WIDENED_ERRORS})
ERROR_MIXES = ("widened", "classic")


def duplicate_of(rec: dict[str, Any], rng: random.Random, errors_mix: str = "widened") -> tuple[dict[str, Any], list[str]]:
    dup = dict(rec)
    pick = _CLASSIC_ERRORS if errors_mix == "classic" else _ERRORS
    errors: list[str] = []
    n_errors = 1 + (rng.random() < 0.45) + (rng.random() < 0.15)
    # Distinct kinds, and at most one birth-date error: a clerk writes the date once, so
    # it is typed with a wrong year, or a wrong day, or left as a placeholder, not all of
    # these in turn (drawing independently stacked 2-3 date errors on 4% of duplicates and
    # drew the same kind twice on 5%, e.g. a "year error" twice making a 2-year gap).
    while len(errors) < n_errors:
        err = pick.pick(rng)
        if err in errors or (err.startswith("dob_") and any(e.startswith("dob_") for e in errors)):
            continue
        errors.append(err)
    for err in errors:
        dob: datetime.date | None = dup["date_of_birth"]
        if err == "typo_first":
            dup["first_name"] = typo(dup["first_name"], rng)
        elif err == "typo_last":
            dup["last_name"] = typo(dup["last_name"], rng)
        elif err == "variant_first":
            dup["first_name"] = respell(dup["first_name"], rng)
        elif err == "variant_last":
            dup["last_name"] = respell(dup["last_name"], rng)
        elif err == "swap_names":
            dup["first_name"], dup["last_name"] = dup["last_name"], dup["first_name"]
        elif err == "space_variant":
            key = "last_name" if rng.random() < 0.6 else "first_name"
            dup[key] = space_variant(dup[key], rng)
        elif err == "drop_token":
            parts = dup["first_name"].split()
            if len(parts) > 1:
                dup["first_name"] = rng.choice(parts)
            else:
                dup["first_name"] = typo(dup["first_name"], rng)
        elif err == "dob_swap" and dob is not None and dob.day <= 12 and dob.day != dob.month:
            dup["date_of_birth"] = _safe_date(dob.year, dob.day, dob.month)
        elif err == "dob_year" and dob is not None:
            wrong = _safe_date(dob.year + rng.choice((-1, 1)), dob.month, dob.day)
            if wrong is not None and wrong > TODAY:  # a clerk cannot enter a future birth: the API refuses it
                wrong = _safe_date(dob.year - 1, dob.month, dob.day)
            dup["date_of_birth"] = wrong
        elif err == "dob_year_far" and dob is not None:
            # an age given instead of a date, turned into a year: 2 to 5 years off
            wrong = _safe_date(dob.year - rng.randrange(2, 6) * rng.choice((-1, 1)), dob.month, dob.day)
            if wrong is not None and wrong > TODAY:
                wrong = _safe_date(dob.year - rng.randrange(2, 6), dob.month, dob.day)
            dup["date_of_birth"] = wrong
        elif err == "dob_placeholder_year" and dob is not None:
            # only the age was known: a placeholder in a year one or two off
            year = dob.year + rng.choice((-2, -1, 1))
            dup["date_of_birth"] = datetime.date(min(year, TODAY.year - 1), 1 if rng.random() < 0.75 else 7, 1)
        elif err == "compound_first":
            # a second given name added (or the first of two given names only)
            parts = dup["first_name"].split()
            if len(parts) > 1:
                dup["first_name"] = parts[0]
            else:
                extra = _first_name(rng, rec["_group"], rec["_gender"])
                dup["first_name"] = f"{extra} {dup['first_name']}" if rng.random() < 0.5 else f"{dup['first_name']} {extra}"
        elif err == "swap_and_typo":
            dup["first_name"], dup["last_name"] = typo(dup["last_name"], rng), dup["first_name"]
        elif err == "dob_placeholder" and dob is not None:
            dup["date_of_birth"] = datetime.date(dob.year, 1 if rng.random() < 0.75 else 7, 1)
        elif err == "dob_missing":
            dup["date_of_birth"] = None
        elif err == "dob_day" and dob is not None:
            dup["date_of_birth"] = _safe_date(dob.year, dob.month, rng.randrange(1, 29))
        elif err == "region_move":
            dup["region_code"] = _REGIONS.pick(rng)
        elif err == "phone_missing":
            dup["phone_number"] = None
        elif err == "phone_new":
            dup["phone_number"] = _phone(rng)
        elif err == "gender_missing":
            dup["gender"] = None
    dup["first_name"] = cosmetic(dup["first_name"], rng)
    dup["last_name"] = cosmetic(dup["last_name"], rng)
    if dup["dhis2_uid"] and rng.random() < 0.7:
        dup["dhis2_uid"] = None
    return dup, errors


def lookalike_of(rec: dict[str, Any], kind: str, rng: random.Random) -> dict[str, Any]:
    other = dict(rec)
    other["dhis2_uid"] = _uid(rng) if rng.random() < 0.15 else None
    dob: datetime.date | None = rec["date_of_birth"]
    # A look-alike is told apart by its birth date: the original needs a real one (a twin's
    # is shared, a namesake's or parent's is years away).
    if dob is None or (dob.day == 1 and dob.month in (1, 7)):
        dob = _dob(rng, _age(rng) if kind == "twin" else rng.randrange(20, 60))
        other["_fixed_dob"] = dob
        other["date_of_birth"] = dob
    if kind == "twin":
        gender = rec["_gender"] if rng.random() < 0.6 else ("F" if rec["_gender"] == "M" else "M")
        other["_gender"] = gender
        other["gender"] = gender
        name = rec["first_name"]
        pairs = [p for p in _TWIN_NAMES.get(gender, []) if name in p]
        if pairs and rng.random() < 0.8:
            other["first_name"] = pairs[0][1] if pairs[0][0] == name else pairs[0][0]
        else:
            # Parents do not give twins two spellings of one name (Fatou/Fatoumata).
            for _ in range(50):
                candidate = _first_name(rng, rec["_group"], gender)
                if _clearly_different(candidate, name):
                    other["first_name"] = candidate
                    break
        if rng.random() < 0.2:
            other["phone_number"] = None
    elif kind == "namesake":
        years = rng.choice((-1, 1)) * rng.randrange(2, 30)
        base = dob or _dob(rng, 30)
        other["date_of_birth"] = _dob(rng, max(0, min(89, TODAY.year - base.year - years)))
        other["region_code"] = rec["region_code"] if rng.random() < 0.4 else _REGIONS.pick(rng)
        other["phone_number"] = _phone(rng) if rng.random() < 0.6 else None
    else:  # parent_child: a child named after the parent (or the reverse, registered later)
        base = dob or _dob(rng, 35)
        gap = rng.randrange(16, 45) * rng.choice((-1, 1))
        age = TODAY.year - base.year - gap
        if not 0 <= age < 90:
            gap = -gap
            age = TODAY.year - base.year - gap
        other["date_of_birth"] = _dob(rng, max(0, min(89, age)))
        other["phone_number"] = rec["phone_number"] if rng.random() < 0.5 else None
    return other


def _clearly_different(a: str, b: str) -> bool:
    from rapidfuzz.distance import JaroWinkler

    from shared.matching.phonetic import phonetic_key, phonetic_tokens

    na, nb = strip_accents(a).upper(), strip_accents(b).upper()
    # Also tokens that are variants of each other: "Ndèye Fatou" and "Fatoumata" share Fatou.
    if phonetic_key(a) == phonetic_key(b) or set(phonetic_tokens(a)) & set(phonetic_tokens(b)):
        return False
    return JaroWinkler.similarity(na, nb) < 0.8


def _public(rec: dict[str, Any]) -> dict[str, Any]:
    out = {k: rec.get(k) for k in FIELDS}
    dob = rec.get("date_of_birth")
    out["date_of_birth"] = dob.isoformat() if isinstance(dob, datetime.date) else None
    return out


def generate(
    n: int, seed: int = 0, dup_rate: float = 0.15, lookalike_rate: float = 0.05, errors: str = "widened"
) -> Iterator[dict[str, Any]]:
    """Yield ``n`` records: originals, each followed by its duplicates and look-alikes.

    ``errors``: the duplicates' error mix, "widened" (default) or "classic" (without
    ``WIDENED_ERRORS``).
    """
    if errors not in ERROR_MIXES:
        raise ValueError(f"errors: one of {ERROR_MIXES}")
    rng = random.Random(seed)
    emitted = 0
    person = 0
    while emitted < n:
        person += 1
        rec = _original(rng)
        rec.update(
            record_id=f"R{emitted + 1}", person_id=f"P{person}", kind="original", related_record_id=None
        )
        pending: list[dict[str, Any]] = []
        if rng.random() < dup_rate:
            dup, made = duplicate_of(rec, rng, errors)
            dup["errors"] = made
            pending.append(dup | {"kind": "duplicate", "related_record_id": rec["record_id"]})
        if rng.random() < lookalike_rate:
            kind = rng.choices(("twin", "namesake", "parent_child"), (0.4, 0.35, 0.25))[0]
            other = lookalike_of(rec, kind, rng)
            if "_fixed_dob" in other:
                rec["date_of_birth"] = other.pop("_fixed_dob")
            person += 1
            pending.append(
                other | {"kind": kind, "person_id": f"P{person}", "related_record_id": rec["record_id"]}
            )
        yield _public(rec)
        emitted += 1
        for extra in pending:
            if emitted >= n:
                break
            extra["record_id"] = f"R{emitted + 1}"
            out = _public(extra)
            if "errors" in extra:
                out["errors"] = extra["errors"]
            yield out
            emitted += 1


# -- campaigns: children under five registered through their mothers (issue 22) ---------------

CHILD_FIELDS = (*FIELDS, "date_of_birth_estimated", "mother_record_id")


def _estimate(rng: random.Random, born: datetime.date, on: datetime.date) -> datetime.date:
    """What a clerk writes from "about N months / years old": the middle of the interval of the age
    the mother gives, which is off by a month or two for an infant and up to a year at four."""
    from shared.matching.family import estimated_birth_date

    months = (on - born).days * 12 // 365
    months = max(0, months + round(rng.gauss(0, 1 + months / 12)))
    if months >= 24 and rng.random() < 0.6:
        return estimated_birth_date(on, age_years=months // 12)
    return estimated_birth_date(on, age_months=min(months, 59))


def generate_children(
    n: int, seed: int = 0, dup_rate: float = 0.2, lookalike_rate: float = 0.08, today: datetime.date | None = None
) -> Iterator[dict[str, Any]]:
    """Yield about ``n`` records of a campaign: mothers, each followed by her children under five.

    Kinds: ``mother``; ``original`` (a child, its date estimated 80% of the time, an infant
    under two months has no given name 30% of the time, ``mother_record_id`` its mother);
    ``duplicate`` (the same child at a later campaign: another estimate, a slip in the name
    20% of the time, its mother linked again); ``twin`` (same mother, same estimated date,
    another name, half the time another sex); ``namesake`` (another woman's child of the same
    name, sex and about the same age). Ages count from ``today`` (default: the real today,
    since the matcher's tolerance does).
    """
    today = today or datetime.date.today()
    rng = random.Random(seed)
    emitted = person = 0
    previous_mother: str | None = None
    while emitted < n:
        person += 1
        mother = _original(rng)
        mother.update(_gender="F", gender="F", kind="mother", person_id=f"P{person}", related_record_id=None,
                      record_id=f"R{emitted + 1}", date_of_birth=today - datetime.timedelta(days=rng.randrange(17 * 365, 45 * 365)), dhis2_uid=None)
        group = mother["_group"]
        emitted += 1
        yield _public(mother) | {"date_of_birth_estimated": False, "mother_record_id": None}
        family = _LAST[group].pick(rng) if rng.random() < 0.7 else mother["last_name"]
        for _ in range(rng.choice((1, 1, 2, 2, 3, 4))):
            if emitted >= n:
                return
            person += 1
            gender = "M" if rng.random() < 0.5 else "F"
            born = today - datetime.timedelta(days=rng.randrange(5, 5 * 365))
            on = today - datetime.timedelta(days=rng.randrange(0, 60))
            if on <= born:
                on = born + datetime.timedelta(days=3)
            estimated = rng.random() < 0.8
            unnamed = (on - born).days < 60 and rng.random() < 0.3
            child = {
                "first_name": "" if unnamed else _first_name(rng, group, gender), "last_name": family,
                "date_of_birth": _estimate(rng, born, on) if estimated else born, "gender": gender,
                "region_code": mother["region_code"], "phone_number": mother["phone_number"], "dhis2_uid": None,
                "_group": group, "_gender": gender, "_born": born,
            }
            base = {"date_of_birth_estimated": estimated, "mother_record_id": mother["record_id"]}
            rec_id = f"R{emitted + 1}"
            emitted += 1
            yield _public(child | {"record_id": rec_id, "person_id": f"P{person}", "kind": "original",
                                   "related_record_id": None}) | base
            extras: list[dict[str, Any]] = []
            if rng.random() < dup_rate:
                later = today + datetime.timedelta(days=rng.randrange(30, 240))
                dup = dict(child, date_of_birth=_estimate(rng, born, later))
                if dup["first_name"] and rng.random() < 0.2:
                    dup["first_name"] = typo(dup["first_name"], rng)
                extras.append((dup | {"kind": "duplicate", "person_id": f"P{person}"}, {**base, "date_of_birth_estimated": True}))
            if rng.random() < lookalike_rate:
                person += 1
                if rng.random() < 0.5:
                    twin_gender = gender if rng.random() < 0.5 else ("F" if gender == "M" else "M")
                    name = child["first_name"]
                    for _ in range(50):
                        name = _first_name(rng, group, twin_gender)
                        if not child["first_name"] or _clearly_different(name, child["first_name"]):
                            break
                    twin = dict(child, first_name=name, gender=twin_gender)
                    extras.append((twin | {"kind": "twin", "person_id": f"P{person}"}, base))
                elif previous_mother is not None:
                    # Another woman's child (she was registered earlier) of the same name and about the same age.
                    namesake = dict(
                        child, phone_number=_phone(rng) if rng.random() < 0.6 else None,
                        date_of_birth=child["date_of_birth"] + datetime.timedelta(days=rng.randrange(-45, 46)),
                    )
                    extras.append((namesake | {"kind": "namesake", "person_id": f"P{person}"},
                                   {**base, "mother_record_id": previous_mother}))
            for extra, meta in extras:
                if emitted >= n:
                    return
                extra.update(record_id=f"R{emitted + 1}", related_record_id=rec_id)
                emitted += 1
                yield _public(extra) | meta
        previous_mother = mother["record_id"]


def to_person(rec: dict[str, Any]) -> Any:
    """A ``shared.matching.model.Person`` from a generated record."""
    from shared.matching.model import Person

    dob = rec.get("date_of_birth")
    return Person(
        first_name=rec["first_name"],
        last_name=rec["last_name"],
        date_of_birth=datetime.date.fromisoformat(dob) if dob else None,
        gender=rec.get("gender") or None,
        region_code=rec.get("region_code") or None,
        phone_number=rec.get("phone_number") or None,
        external_ids={"dhis2_uid": rec["dhis2_uid"]} if rec.get("dhis2_uid") else {},
        date_of_birth_estimated=bool(rec.get("date_of_birth_estimated")),
    )


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dup-rate", type=float, default=0.15)
    ap.add_argument("--lookalike-rate", type=float, default=0.05)
    ap.add_argument("--errors", choices=ERROR_MIXES, default="widened", help="the duplicates' error mix")
    ap.add_argument("--out", type=Path, help="file ending in .csv or .jsonl (default: JSON lines on stdout)")
    args = ap.parse_args(argv)
    records = generate(args.n, args.seed, args.dup_rate, args.lookalike_rate, args.errors)
    out = args.out.open("w", newline="", encoding="utf-8") if args.out else sys.stdout
    try:
        if args.out and args.out.suffix == ".csv":
            writer = csv.DictWriter(out, fieldnames=[*FIELDS, "errors"])
            writer.writeheader()
            for rec in records:
                rec["errors"] = ";".join(rec.get("errors", []))
                writer.writerow(rec)
        else:
            for rec in records:
                out.write(json.dumps(rec, ensure_ascii=False) + "\n")
    finally:
        if args.out:
            out.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
