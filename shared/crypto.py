"""Ed25519 signing keys of nodes and hub (PyNaCl)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from nacl.signing import SigningKey, VerifyKey

__all__ = ["generate_key_file", "key_id", "load_key_file"]


def key_id(verify_key: VerifyKey) -> str:
    """A short, stable name for a public key: the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(bytes(verify_key)).hexdigest()[:16]


def generate_key_file(path: Path, key: SigningKey | None = None) -> SigningKey:
    """Write a (new) key pair's private half to ``path``, readable by the owner only."""
    key = key or SigningKey.generate()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(bytes(key).hex().encode())
        f.flush()
        os.fsync(f.fileno())
    return key


def load_key_file(path: Path) -> SigningKey:
    return SigningKey(bytes.fromhex(path.read_text().strip()))
