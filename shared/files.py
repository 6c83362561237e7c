"""Files the command lines write (bundles, enrolment files, key files): owner-only and atomic.

A file is written to a new temporary file in the same folder, opened with
``O_CREAT | O_EXCL | O_NOFOLLOW`` and mode 0600 (so a symlink planted at that name is never
followed and nobody else can read it while it is written), synced, then renamed over the
target; the folder is synced too. A reader sees the old file or the whole new one.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = ["private_file", "sync_folder", "write_private"]


def write_private(path: str | os.PathLike[str], data: bytes, *, exclusive: bool = False) -> None:
    """Write ``data`` to ``path`` atomically with mode 0600; ``exclusive``: refuse an existing file."""
    with private_file(path, exclusive=exclusive) as f:
        f.write(data)


@contextlib.contextmanager
def private_file(path: str | os.PathLike[str], *, exclusive: bool = False) -> Iterator[BinaryIO]:
    """A file to write ``path`` through, atomically and with mode 0600 (for what is too big for memory).

    What is written goes to a temporary file beside ``path``; when the block ends without an
    exception the file is synced and renamed over ``path`` (``exclusive``: it must not exist),
    else removed: a reader sees the old file or the whole new one, never a part.
    """
    target = Path(path)
    if exclusive and (target.exists() or target.is_symlink()):
        raise FileExistsError(f"{target} exists already")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    for _ in range(10):
        tmp = target.with_name(f"{target.name}.{secrets.token_hex(6)}.tmp")
        try:
            fd = os.open(tmp, flags, 0o600)
            break
        except FileExistsError:
            continue
    else:  # pragma: no cover - ten random names taken
        raise FileExistsError(f"cannot create a temporary file beside {target}")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if exclusive:
            os.link(tmp, target)  # fails if the target appeared meanwhile
            tmp.unlink()
        else:
            os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    sync_folder(target.parent)


def sync_folder(folder: str | os.PathLike[str]) -> None:
    """fsync a folder, so that the names created or renamed in it survive a power cut."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
