"""Name normalisation: the single canonical text form every other matching module starts from.

Owns: case folding, accent stripping (Sène -> SENE), apostrophes that glue a prenasal
consonant to its name (N'Diaye -> NDIAYE, M'Baye -> MBAYE), hyphens and stray spaces in
compound names (Mame-Diarra, "mame  diarra" -> MAME DIARRA), and the compact form used when
clerks disagree on where the spaces go (Ndeyefatou / Ndeye Fatou).
"""

from __future__ import annotations

import unicodedata
from functools import lru_cache

__all__ = ["compact", "name_tokens", "normalize_name", "squeeze_doubles"]

# Letters that NFKD does not decompose into ASCII + combining mark.
_SPECIAL = str.maketrans(
    {
        "Œ": "OE",
        "œ": "OE",
        "Æ": "AE",
        "æ": "AE",
        "ß": "SS",
        "Ø": "O",
        "ø": "O",
        "Đ": "D",
        "đ": "D",
        "Ł": "L",
        "ł": "L",
    }
)
# Apostrophe look-alikes: clerks type whichever their keyboard offers, and the name is
# always read as one word (N'Diaye is "Ndiaye"), so they are removed rather than spaced.
_APOSTROPHES = frozenset("'’‘`´ʼʻ")


@lru_cache(maxsize=262_144)
def normalize_name(s: str) -> str:
    """Upper-case ASCII letters, tokens separated by one space.

    >>> normalize_name("N'Diaye ")
    'NDIAYE'
    >>> normalize_name("Sène")
    'SENE'
    >>> normalize_name("mame  diarra")
    'MAME DIARRA'
    """
    decomposed = unicodedata.normalize("NFKD", s.translate(_SPECIAL))
    out: list[str] = []
    for ch in decomposed:
        if ch in _APOSTROPHES or unicodedata.combining(ch):
            continue
        if "a" <= ch <= "z" or "A" <= ch <= "Z":
            out.append(ch.upper())
        else:
            # Digits, hyphens, dots and any other punctuation separate tokens.
            out.append(" ")
    return " ".join("".join(out).split())


def name_tokens(s: str) -> list[str]:
    """Normalised tokens for the text-search index: "Mame Diarra" -> ["MAME", "DIARRA"]."""
    return normalize_name(s).split()


def compact(s: str) -> str:
    """Normalised name without spaces, so "Ndeye Fatou" and "Ndeyefatou" compare equal."""
    return normalize_name(s).replace(" ", "")


def squeeze_doubles(s: str) -> str:
    """Collapse runs of the same letter (DIALLO -> DIALO): doubling is a spelling choice."""
    if not s:
        return s
    out = [s[0]]
    for ch in s[1:]:
        if ch != out[-1]:
            out.append(ch)
    return "".join(out)
