"""Files sealed with a passphrase: Argon2id derives the key, SecretBox seals the data in chunks.

A sealed file is a header, then chunks, so that a file bigger than memory is sealed and
opened as a stream::

    b"MPISEAL1" | salt (16) | opslimit (u64) | memlimit (u64) | nonce prefix (16)
    then per chunk: length (u32) | SecretBox ciphertext of (flag byte | up to 1 MiB of data)

The nonce of chunk ``i`` is the random prefix followed by ``i`` (u64), so chunks cannot be
reordered, dropped or repeated; the flag byte is 1 on the last chunk only, so a file cut
short is told from a whole one. The header is bound by the key (salt and limits derive it)
and by the nonces (the prefix): changing any byte of the file makes opening fail. A wrong
passphrase and a damaged file look the same: ``SealError``.
"""

from __future__ import annotations

import os
import struct
from typing import BinaryIO

from nacl.exceptions import CryptoError
from nacl.pwhash import argon2id
from nacl.secret import SecretBox

__all__ = ["MAGIC", "SealError", "SealedReader", "SealedWriter", "is_sealed", "read_passphrase"]

MAGIC = b"MPISEAL1"
_HEADER = struct.Struct(">16sQQ16s")
_LENGTH = struct.Struct(">I")
_CHUNK = 1 << 20
_MORE, _LAST = b"\x00", b"\x01"
# A damaged or hostile header must not make opening take minutes or gigabytes.
_MAX_OPS, _MAX_MEM = argon2id.OPSLIMIT_SENSITIVE, argon2id.MEMLIMIT_SENSITIVE


class SealError(Exception):
    """A sealed file cannot be opened: wrong passphrase, damaged or cut short."""


def read_passphrase(path: str, *, new: bool) -> bytes:
    """The passphrase in ``path`` (its first line); a new one must have at least 12 characters."""
    with open(path, "rb") as f:
        text = f.read(4096).splitlines()
    passphrase = text[0].strip() if text else b""
    if not passphrase:
        raise ValueError(f"{path} holds no passphrase (its first line is empty)")
    if new and len(passphrase) < 12:
        raise ValueError(f"the passphrase in {path} is too short: use at least 12 characters")
    return passphrase


def is_sealed(head: bytes) -> bool:
    return head.startswith(MAGIC)


def _key(passphrase: bytes, salt: bytes, ops: int, mem: int) -> SecretBox:
    return SecretBox(argon2id.kdf(SecretBox.KEY_SIZE, passphrase, salt, opslimit=ops, memlimit=mem))


class SealedWriter:
    """A write-only stream that seals what is written into ``out``; ``close()`` writes the last chunk."""

    def __init__(self, out: BinaryIO, passphrase: bytes, *, ops: int = argon2id.OPSLIMIT_MODERATE,
                 mem: int = argon2id.MEMLIMIT_MODERATE) -> None:
        salt, self._prefix = os.urandom(argon2id.SALTBYTES), os.urandom(16)
        self._box = _key(passphrase, salt, ops, mem)
        self._out = out
        self._buffer = bytearray()
        self._index = 0
        self.closed = False
        out.write(MAGIC + _HEADER.pack(salt, ops, mem, self._prefix))

    def _nonce(self) -> bytes:
        nonce = self._prefix + self._index.to_bytes(8, "big")
        self._index += 1
        return nonce

    def _seal(self, flag: bytes, data: bytes) -> None:
        sealed = self._box.encrypt(flag + data, self._nonce()).ciphertext
        self._out.write(_LENGTH.pack(len(sealed)) + sealed)

    def write(self, data: bytes) -> int:
        if self.closed:
            raise ValueError("write to a closed SealedWriter")
        self._buffer += data
        while len(self._buffer) > _CHUNK:  # keep at least one byte back: the last chunk is sealed at close
            self._seal(_MORE, bytes(self._buffer[:_CHUNK]))
            del self._buffer[:_CHUNK]
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if not self.closed:
            self._seal(_LAST, bytes(self._buffer))
            self._buffer.clear()
            self.closed = True


class SealedReader:
    """A read-only stream of what a sealed ``source`` holds (its magic already checked or not)."""

    def __init__(self, source: BinaryIO, passphrase: bytes) -> None:
        head = source.read(len(MAGIC) + _HEADER.size)
        if len(head) < len(MAGIC) + _HEADER.size or not is_sealed(head):
            raise SealError("this is not a sealed file, or it is cut short")
        salt, ops, mem, self._prefix = _HEADER.unpack(head[len(MAGIC):])
        if not (argon2id.OPSLIMIT_MIN <= ops <= _MAX_OPS and argon2id.MEMLIMIT_MIN <= mem <= _MAX_MEM):
            raise SealError("the file's header is damaged")
        self._box = _key(passphrase, salt, ops, mem)
        self._source = source
        self._index = 0
        self._data = b""
        self._pos = 0
        self._ended = False

    def _next_chunk(self) -> None:
        raw = self._source.read(_LENGTH.size)
        if len(raw) < _LENGTH.size:
            raise SealError("the file is cut short")
        (length,) = _LENGTH.unpack(raw)
        if not SecretBox.MACBYTES < length <= _CHUNK + 1 + SecretBox.MACBYTES:
            raise SealError("the file is damaged")
        sealed = self._source.read(length)
        if len(sealed) < length:
            raise SealError("the file is cut short")
        nonce = self._prefix + self._index.to_bytes(8, "big")
        try:
            plain = self._box.decrypt(sealed, nonce)
        except CryptoError:
            if self._index == 0:
                raise SealError("wrong passphrase, or the file is damaged") from None
            raise SealError("the file is damaged") from None
        self._index += 1
        flag, self._data, self._pos = plain[:1], plain, 1
        if flag == _LAST:
            self._ended = True
            if self._source.read(1):
                raise SealError("the file has bytes after its end")
        elif flag != _MORE:
            raise SealError("the file is damaged")

    def read(self, size: int = -1) -> bytes:
        out = bytearray()
        while size < 0 or len(out) < size:
            left = len(self._data) - self._pos
            if left <= 0:
                if self._ended:
                    break
                self._next_chunk()
                continue
            take = left if size < 0 else min(size - len(out), left)
            out += self._data[self._pos:self._pos + take]
            self._pos += take
        return bytes(out)

    def check_first(self) -> None:
        """Open the first chunk now: a wrong passphrase is told before anything is written."""
        if self._index == 0:
            self._next_chunk()
