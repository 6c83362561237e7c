"""Ed25519 signing keys of nodes and hub (PyNaCl), and the hub's key sealed at rest.

A node's key is a file in its data folder (0600). The hub's key lives in its database
(``node_meta``), sealed with SecretBox under a key that is *not* in the database: the
environment (``MPI_HUB_KEY_SECRET``) or a key file (``MPI_HUB_KEY_FILE``), so a copy of the
database alone cannot sign as the hub.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import nacl.utils
from nacl.exceptions import CryptoError
from nacl.secret import SecretBox
from nacl.signing import SigningKey, VerifyKey

from .files import write_private

__all__ = [
    "DEFAULT_HUB_KEY_FILE",
    "PLAIN_META",
    "SEALED_META",
    "HubKeyError",
    "generate_key_file",
    "key_id",
    "load_key_file",
    "open_signing_key",
    "seal_signing_key",
    "sealing_key",
]


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


# -- the hub's signing key, sealed at rest ------------------------------------------------------

SEALED_META = "signing_key_sealed"
PLAIN_META = "signing_key"  # older hubs: the key in clear, until `mpi-hub key reseal`
DEFAULT_HUB_KEY_FILE = "~/.config/mpi/hub.key"


class HubKeyError(ValueError):
    """The hub's signing key cannot be opened (no sealing key, a wrong one, or a key in clear)."""


def sealing_key(secret: str, key_file: str, *, create: bool = False) -> tuple[bytes, str]:
    """The key that seals the hub's signing key, and where it came from.

    ``secret`` (``MPI_HUB_KEY_SECRET``) wins; otherwise the file ``key_file``
    (``MPI_HUB_KEY_FILE``, default ``~/.config/mpi/hub.key``), made (0600) when ``create``.
    """
    if secret:
        return hashlib.blake2b(secret.encode(), digest_size=32, person=b"mpi-hub-seal").digest(), "MPI_HUB_KEY_SECRET"
    path = Path(os.path.expanduser(key_file or DEFAULT_HUB_KEY_FILE))
    if not path.exists() and create:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_private(path, (nacl.utils.random(SecretBox.KEY_SIZE).hex() + "\n").encode(), exclusive=True)
    try:
        raw = bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        raise HubKeyError(
            f"no key to open the hub's signing key: set MPI_HUB_KEY_SECRET or MPI_HUB_KEY_FILE ({path} does not exist)"
        ) from None
    except ValueError:
        raise HubKeyError(f"{path} does not hold a sealing key (64 hex digits)") from None
    if len(raw) != SecretBox.KEY_SIZE:
        raise HubKeyError(f"{path} does not hold a sealing key (64 hex digits)")
    if path.stat().st_mode & 0o077:
        raise HubKeyError(f"{path} is readable by others: chmod 600 {path}")
    return raw, str(path)


def seal_signing_key(key: SigningKey, sealing: bytes) -> str:
    """The hub's signing key encrypted and authenticated (XSalsa20-Poly1305) for ``node_meta``."""
    return SecretBox(sealing).encrypt(bytes(key)).hex()


def open_signing_key(meta: dict[str, str], sealing: bytes | None) -> SigningKey:
    """The hub's signing key from its ``node_meta``; HubKeyError when it is in clear or will not open."""
    if SEALED_META not in meta:
        if PLAIN_META in meta:
            raise HubKeyError("the hub's signing key is stored in clear (an older hub): run mpi-hub key reseal")
        raise HubKeyError("this database is not a hub's: run mpi-hub init")
    if sealing is None:
        raise HubKeyError("no key to open the hub's signing key: set MPI_HUB_KEY_SECRET or MPI_HUB_KEY_FILE")
    try:
        return SigningKey(SecretBox(sealing).decrypt(bytes.fromhex(meta[SEALED_META])))
    except (CryptoError, ValueError):
        raise HubKeyError("the hub's signing key does not open with this MPI_HUB_KEY_SECRET / MPI_HUB_KEY_FILE") from None
