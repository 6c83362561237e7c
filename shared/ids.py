"""MPI identifiers: minting unique IDs offline and checking them on every endpoint.

An ID reads ``CC-RRR-YY-XXXXXXXX``: country, region, two-digit registration year and
eight characters of ``23456789ABCDEFGHJKLMNPQRSTUVWXYZ``. The first seven encode
(node number, per-node counter) through a keyed permutation of 35 bits, so two nodes
can never mint the same ID and consecutive IDs do not look sequential. The eighth is a
check character computed over the *whole* ID with the Damm algorithm on GF(32):
``x * y = a*x + y`` with ``a`` not in {0, 1} is a totally anti-symmetric quasigroup, so
every single substituted character and every swap of two neighbours is caught.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

__all__ = [
    "ALPHABET",
    "COUNTER_BITS",
    "MAX_NODE_NUMBER",
    "IdError",
    "MpiId",
    "card_suffix",
    "mint",
    "parse",
]

ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"
_INDEX = {c: i for i, c in enumerate(ALPHABET)}
NODE_BITS = 11
COUNTER_BITS = 24
MAX_NODE_NUMBER = (1 << NODE_BITS) - 1
MAX_COUNTER = (1 << COUNTER_BITS) - 1
_PAYLOAD_BITS = NODE_BITS + COUNTER_BITS  # 35 bits = 7 characters of base 32
_HALF = 18  # the Feistel network works on 36 bits; cycle-walking brings results back under 2**35
_ROUNDS = 6
_SHAPE = re.compile(r"^[A-Z]{2}-[A-Z]{3}-[0-9]{2}-[A-Z0-9]{8}$")
_DEFAULT_KEY = b"mpi-id-permutation-v1"


class IdError(ValueError):
    """An ID that cannot be accepted; ``code`` is ``invalid_mpi_id`` or ``invalid_check_character``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# GF(32) with the primitive polynomial x^5 + x^2 + 1.
def _gf_mul(x: int, y: int) -> int:
    r = 0
    while y:
        if y & 1:
            r ^= x
        y >>= 1
        x <<= 1
        if x & 0x20:
            x ^= 0x25
    return r


_A = 2  # the element x: neither 0 nor 1, so the quasigroup is totally anti-symmetric
_MUL_A = [_gf_mul(_A, v) for v in range(32)]


def _symbol(position: int, char: str) -> int:
    """Map a character to GF(32), injectively for the kind of character each position holds."""
    if position < 5:  # country and region letters
        return ord(char) - ord("A")
    if position < 7:  # year digits
        return ord(char) - ord("0")
    return _INDEX[char]


def _damm(symbols: list[int]) -> int:
    interim = 0
    for s in symbols:
        interim = _MUL_A[interim] ^ s
    return interim


def _check_char(body: str) -> str:
    """Check character for the 17 characters ``CCRRRYYXXXXXXX`` (hyphens removed, 14 symbols)."""
    symbols = [_symbol(i, c) for i, c in enumerate(body)]
    # interim * d == 0  <=>  a*interim + d == 0  <=>  d == a*interim in characteristic 2.
    return ALPHABET[_MUL_A[_damm(symbols)]]


def _round(key: bytes, rnd: int, half: int) -> int:
    digest = hashlib.blake2b(half.to_bytes(3, "big") + bytes([rnd]), key=key, digest_size=4).digest()
    return int.from_bytes(digest, "big") & ((1 << _HALF) - 1)


def _feistel(value: int, key: bytes) -> int:
    left, right = value >> _HALF, value & ((1 << _HALF) - 1)
    for rnd in range(_ROUNDS):
        left, right = right, left ^ _round(key, rnd, right)
    return (left << _HALF) | right


def _feistel_inverse(value: int, key: bytes) -> int:
    left, right = value >> _HALF, value & ((1 << _HALF) - 1)
    for rnd in reversed(range(_ROUNDS)):
        left, right = right ^ _round(key, rnd, left), left
    return (left << _HALF) | right


def _permute(value: int, key: bytes) -> int:
    # Cycle-walking keeps a bijection on [0, 2**35) out of one on [0, 2**36).
    out = _feistel(value, key)
    while out >> _PAYLOAD_BITS:
        out = _feistel(out, key)
    return out


def _unpermute(value: int, key: bytes) -> int:
    out = _feistel_inverse(value, key)
    while out >> _PAYLOAD_BITS:
        out = _feistel_inverse(out, key)
    return out


@dataclass(frozen=True, slots=True)
class MpiId:
    country: str
    region: str
    year: int
    payload: str  # the 7 permuted characters, unique across the whole country

    def __str__(self) -> str:
        body = f"{self.country}{self.region}{self.year:02d}{self.payload}"
        return f"{self.country}-{self.region}-{self.year:02d}-{self.payload}{_check_char(body)}"

    def origin(self, key: bytes = _DEFAULT_KEY) -> tuple[int, int]:
        """(node number, counter) this ID was minted from."""
        value = 0
        for c in self.payload:
            value = value * 32 + _INDEX[c]
        plain = _unpermute(value, key)
        return plain >> COUNTER_BITS, plain & MAX_COUNTER


def mint(country: str, region: str, year: int, node_number: int, counter: int, key: bytes = _DEFAULT_KEY) -> str:
    """The ID of the ``counter``-th registration of node ``node_number``."""
    if not 0 <= node_number <= MAX_NODE_NUMBER:
        raise ValueError(f"node number must be 0..{MAX_NODE_NUMBER}")
    if not 0 <= counter <= MAX_COUNTER:
        raise ValueError("this node has minted all the IDs it can")
    value = _permute((node_number << COUNTER_BITS) | counter, key)
    chars = []
    for _ in range(7):
        chars.append(ALPHABET[value & 31])
        value >>= 5
    return str(MpiId(country, region, year % 100, "".join(reversed(chars))))


def parse(text: str) -> MpiId:
    """Parse and check an ID as a user typed it (case-insensitive, surrounding spaces ignored)."""
    candidate = text.strip().upper()
    if len(candidate) != 18 or candidate.count("-") != 3:
        raise IdError("invalid_mpi_id", "not an MPI ID: expected CC-RRR-YY-XXXXXXXX")
    if not _SHAPE.match(candidate) or any(c not in _INDEX for c in candidate[10:]):
        raise IdError("invalid_check_character", "invalid check character: the MPI ID was mistyped")
    body = candidate.replace("-", "")
    if _check_char(body[:-1]) != body[-1]:
        raise IdError("invalid_check_character", "invalid check character: the MPI ID was mistyped")
    return MpiId(candidate[0:2], candidate[3:6], int(candidate[7:9]), candidate[10:17])


def card_suffix(mpi_id: str) -> str:
    """The eight characters printed in a card code."""
    return mpi_id[-8:]
