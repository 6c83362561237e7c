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
from pathlib import Path

__all__ = ["write_private"]


def write_private(path: str | os.PathLike[str], data: bytes, *, exclusive: bool = False) -> None:
    """Write ``data`` to ``path`` atomically with mode 0600; ``exclusive``: refuse an existing file."""
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
            f.write(data)
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
    with contextlib.suppress(OSError):
        folder = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
