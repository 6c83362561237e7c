"""Changes: the small operations every write appends to the log, hash-chained per node.

A change is (node id, sequence, HLC, key id, kind, mpi_id, payload) plus the hash of the
node's previous change; its own hash covers all of that, so a node's log is a chain in
which any edit, gap or fork shows (as in Secure Scuttlebutt feeds).

Kinds: ``identity.create``, ``identity.set`` (fields), ``external_id.add``,
``programme.add``, ``identity.merge``, ``card.issue``, ``card.revoke``, ``review.open``;
``key.rotate`` (a node names its next signing key); and two the hub writes for the nodes:
``identity.snapshot`` (a whole identity, for a node it enters the scope of) and ``evict``
(it leaves a node's scope).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

__all__ = ["GENESIS_HASH", "KINDS", "Change", "canonical_json", "change_hash"]

GENESIS_HASH = "0" * 64
KINDS = (
    "identity.create",
    "identity.set",
    "external_id.add",
    "programme.add",
    "identity.merge",
    "identity.unmerge",
    "card.issue",
    "card.revoke",
    "review.open",
    "review.not_same",
    "review.decision",
    "key.rotate",
    "identity.snapshot",
    "evict",
)


def canonical_json(value: Any) -> str:
    """One byte-exact JSON text for a value: what hashes and signatures are taken over."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def change_hash(prev_hash: str, node_id: str, seq: int, hlc: int, kind: str, mpi_id: str | None, payload: str) -> str:
    material = canonical_json([prev_hash, node_id, seq, hlc, kind, mpi_id, payload])
    return hashlib.sha256(material.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Change:
    node_id: str
    seq: int
    hlc: int
    key_id: str
    kind: str
    mpi_id: str | None
    payload: str
    prev_hash: str
    hash: str

    def verify_hash(self) -> bool:
        expected = change_hash(self.prev_hash, self.node_id, self.seq, self.hlc, self.kind, self.mpi_id, self.payload)
        return expected == self.hash
