"""mpi-node backup and restore: one file holding everything a node needs to start again.

A backup is a gzip-compressed tar of ``manifest.json`` (what the copy holds, with each
file's size and SHA-256), a consistent snapshot of ``mpi.sqlite3`` and the node's key files
(``node.key`` and the keys it rotated away from, ``admin.token`` if ``scripts/node`` made
one); the manifest also records the ``MPI_*`` settings the backup ran with (no secrets, not
the data folder), which a restore shows. The database's ``node_meta`` carries the node's identity, its hub, its enrolment and
sync cursors and the console's secret, so nothing else of the folder is needed. With a
passphrase the whole file is sealed (``shared.sealed``: Argon2id, SecretBox).

The snapshot is ``VACUUM INTO`` a private temporary folder beside the backup file: one read
transaction of SQLite, so it holds exactly the transactions committed before it began, never
a torn page, while the node goes on serving (WAL: readers do not block the writer). The
backup file is written atomically with mode 0600 (``shared.files.private_file``).

Restore writes into an empty (or new) folder only; everything is unpacked and checked (the
manifest's hashes, ``PRAGMA integrity_check``) in a hidden folder inside it, and moved in
place at the end, the database last: a restore that fails leaves the folder as it was.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import re
import secrets
import shutil
import sqlite3
import tarfile
import tempfile
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, BinaryIO

from shared.files import private_file, sync_folder
from shared.sealed import MAGIC, SealedReader, SealedWriter, SealError
from shared.settings import Settings
from shared.storage.store import utc_now

from .storage import DB_NAME, KEY_NAME

__all__ = ["BackupError", "backup", "restore"]

FORMAT = "mpi-node-backup"
VERSION = 1
MANIFEST = "manifest.json"
TOKEN_NAME = "admin.token"  # scripts/node's admin token
_KEY_FILE = re.compile(re.escape(KEY_NAME) + r"(\.[0-9a-f]{1,64})?")
_BUFFER = 1 << 20


class BackupError(Exception):
    """A backup cannot be made or restored; the message is the one line to show."""


def _members(data_dir: Path) -> list[str]:
    """The files of the folder a backup carries besides the database."""
    names = sorted(p.name for p in data_dir.iterdir() if p.is_file() and _KEY_FILE.fullmatch(p.name))
    if KEY_NAME not in names:
        raise BackupError(f"{data_dir} has no {KEY_NAME}: it is not a whole node folder")
    if (data_dir / TOKEN_NAME).is_file():
        names.append(TOKEN_NAME)
    return names


# Settings a backup does not record: where the data is (the restore says), and secrets.
_NOT_RECORDED = {"MPI_DATA_DIR", "MPI_DATABASE_URL", "MPI_CONSOLE_SECRET", "MPI_HUB_KEY_SECRET", "MPI_HUB_KEY_FILE"}


def _settings_in_force() -> dict[str, str]:
    """The MPI_* settings this process was given (the service's environment file, for a timer's backup)."""
    known = {variable for variable, _, _ in Settings.describe()} - _NOT_RECORDED
    return {k: v for k, v in sorted(os.environ.items()) if k in known}


def _snapshot(source: Path, target: Path) -> None:
    db = sqlite3.connect(source, timeout=60, isolation_level=None)
    try:
        db.execute("VACUUM INTO ?", (str(target),))
    finally:
        db.close()


def _describe(db_path: Path) -> dict[str, Any]:
    """What a snapshot holds, after checking it is whole."""
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, isolation_level=None)
    try:
        check = db.execute("PRAGMA integrity_check").fetchall()
        if check != [("ok",)]:
            raise BackupError(f"the database copy is damaged: {check[0][0]}")
        meta = dict(db.execute("SELECT key, value FROM node_meta").fetchall())
        if meta.get("role") != "node" or not meta.get("node_id"):
            raise BackupError("the database is not an initialised node's")
        last_seq = db.execute("SELECT max(seq) FROM change_log WHERE node_id = ?", (meta["node_id"],)).fetchone()[0]
        return {
            "node_id": meta["node_id"],
            "country": meta.get("country"),
            "region": meta.get("region"),
            "node_number": int(meta.get("node_number", "0")),
            "sync_name": meta.get("sync_name"),
            "hub_url": meta.get("hub_url"),
            "schema_version": db.execute("SELECT max(version) FROM schema_migrations").fetchone()[0],
            "identities": db.execute("SELECT count(*) FROM identity").fetchone()[0],
            "last_seq": int(last_seq or 0),
            "acked_seq": int(meta.get("sync_acked_seq", "0")),
            "last_sync": meta.get("sync_last_success") or None,
        }
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"the database copy cannot be read: {exc}") from None
    finally:
        db.close()


def _file_digest(path: Path) -> dict[str, Any]:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_BUFFER):
            digest.update(chunk)
    return {"size": path.stat().st_size, "sha256": digest.hexdigest()}


def _tar_add(tar: tarfile.TarFile, name: str, data: IO[bytes], size: int) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o600, int(time.time())
    tar.addfile(info, data)


@contextlib.contextmanager
def _sealed_or_plain(out: BinaryIO, passphrase: bytes | None) -> Iterator[BinaryIO]:
    if passphrase is None:
        yield out
        return
    sealed = SealedWriter(out, passphrase)
    yield sealed  # type: ignore[misc]
    sealed.close()


def backup(data_dir: Path, out: Path, passphrase: bytes | None = None) -> dict[str, Any]:
    """Write a backup of the node in ``data_dir`` to ``out``; returns its manifest."""
    if not (data_dir / DB_NAME).is_file():
        raise BackupError(f"{data_dir} is not an initialised node: run mpi-node init --data-dir {data_dir}")
    if not out.parent.is_dir():
        raise BackupError(f"{out.parent} is not a folder")
    if out.resolve().is_relative_to(data_dir.resolve()):
        raise BackupError("write the backup outside the node's folder")
    work = Path(tempfile.mkdtemp(prefix=".mpi-backup-", dir=out.parent))
    try:
        snapshot = work / DB_NAME
        _snapshot(data_dir / DB_NAME, snapshot)
        manifest: dict[str, Any] = {"format": FORMAT, "version": VERSION, "created_at": utc_now(),
                                    **_describe(snapshot), "settings": _settings_in_force()}
        # The keys are read after the snapshot: a key the snapshot's changes name is on disk by then
        # (a rotation keeps the old key file), so the copy can sign everything it holds.
        names = _members(data_dir)
        for name in names:
            shutil.copyfile(data_dir / name, work / name)
        manifest["files"] = {name: _file_digest(work / name) for name in [DB_NAME, *names]}
        body = json.dumps(manifest, indent=2, sort_keys=True).encode()
        with (
            private_file(out) as f,
            _sealed_or_plain(f, passphrase) as stream,
            gzip.GzipFile(fileobj=stream, mode="wb", compresslevel=6, mtime=0) as gz,
            tarfile.open(fileobj=gz, mode="w|", format=tarfile.PAX_FORMAT) as tar,
        ):
            _tar_add(tar, MANIFEST, io.BytesIO(body), len(body))
            for name in [DB_NAME, *names]:
                with (work / name).open("rb") as data:
                    _tar_add(tar, name, data, manifest["files"][name]["size"])
        return manifest
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _allowed(name: str) -> bool:
    return name in (MANIFEST, DB_NAME, TOKEN_NAME) or _KEY_FILE.fullmatch(name) is not None


def _open_backup(f: BinaryIO, source: Path, passphrase: bytes | None) -> BinaryIO:
    head = f.read(len(MAGIC))
    f.seek(0)
    if head.startswith(MAGIC):
        if passphrase is None:
            raise BackupError(f"{source} is encrypted: give --passphrase-file")
        reader = SealedReader(f, passphrase)
        reader.check_first()
        return reader  # type: ignore[return-value]
    if not head.startswith(b"\x1f\x8b"):
        raise BackupError(f"{source} is not an mpi-node backup")
    return f


def _unpack(stream: BinaryIO, work: Path) -> dict[str, Any]:
    """Unpack a backup's members into ``work``, checked against its manifest."""
    manifest: dict[str, Any] | None = None
    seen: dict[str, dict[str, Any]] = {}
    with gzip.GzipFile(fileobj=stream, mode="rb") as gz, tarfile.open(fileobj=gz, mode="r|") as tar:
        for member in tar:
            if not member.isfile() or not _allowed(member.name) or member.name in seen:
                raise BackupError(f"unexpected member {member.name!r}")
            data = tar.extractfile(member)
            assert data is not None  # a regular file
            if member.name == MANIFEST:
                if seen or member.size > 1 << 20:
                    raise BackupError("the manifest is misplaced")
                manifest = json.loads(data.read())
                seen[MANIFEST] = {}
                continue
            if manifest is None:
                raise BackupError("the manifest is missing")
            digest = hashlib.sha256()
            fd = os.open(work / member.name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                while chunk := data.read(_BUFFER):
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            seen[member.name] = {"size": member.size, "sha256": digest.hexdigest()}
    if manifest is None or manifest.get("format") != FORMAT:
        raise BackupError("the manifest is missing")
    if manifest.get("version") != VERSION:
        raise BackupError(f"backup format version {manifest.get('version')} is not one this program reads")
    seen.pop(MANIFEST)
    if seen != manifest.get("files"):
        raise BackupError("its files do not match its manifest")
    if DB_NAME not in seen or KEY_NAME not in seen:
        raise BackupError("it lacks the database or the node key")
    return manifest


# How far a restore moves the ID counter: the copy cannot know how many IDs the lost node
# minted after it was taken (cards may carry them though they never reached the hub). 100,000
# is 0.6 % of a node number's 16.7 million IDs, months of registrations of a busy district.
ID_MARGIN = 100_000


def _mark_restored(db_path: Path, manifest: dict[str, Any], margin: int) -> bool:
    """Move the copy's ID counter by ``margin`` and, if it is enrolled, mark it restored for its first sync.

    Its first sync then learns from the hub what it pushed after the copy was taken
    (``NodeSync._catch_up``) before it pushes anything. Returns whether it is enrolled.
    """
    db = sqlite3.connect(db_path, isolation_level=None)
    try:
        db.execute("BEGIN IMMEDIATE")
        meta = dict(db.execute("SELECT key, value FROM node_meta").fetchall())
        counter = int(meta.get("id_counter", "0")) + margin
        db.execute("UPDATE node_meta SET value = ? WHERE key = 'id_counter'", (str(counter),))
        enrolled = "hub_public_key" in meta
        if enrolled:
            marker = json.dumps({"at": utc_now(), "backup_of": manifest.get("created_at"), "last_seq": manifest.get("last_seq"),
                                 "acked_seq": manifest.get("acked_seq"), "id_margin": margin})
            db.execute("DELETE FROM node_meta WHERE key = 'sync_restored'")
            db.execute("INSERT INTO node_meta (key, value) VALUES ('sync_restored', ?)", (marker,))
        db.execute("COMMIT")
        return enrolled
    finally:
        db.close()


def restore(data_dir: Path, source: Path, passphrase: bytes | None = None, id_margin: int = ID_MARGIN) -> dict[str, Any]:
    """Restore the backup ``source`` into ``data_dir``, which must be empty or absent; returns its manifest.

    The restored node's ID counter moves by ``id_margin`` and an enrolled node is marked
    restored: its first sync catches up with the hub (``_mark_restored``).
    """
    if not source.is_file():
        raise BackupError(f"{source} is not a file")
    if data_dir.exists() and (not data_dir.is_dir() or any(data_dir.iterdir())):
        raise BackupError(f"{data_dir} is not empty: restore into an empty or new folder")
    created = not data_dir.exists()
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    data_dir.chmod(0o700)
    work = data_dir / f".restore-{secrets.token_hex(6)}"
    work.mkdir(mode=0o700)
    try:
        with source.open("rb") as f:
            try:
                manifest = _unpack(_open_backup(f, source, passphrase), work)
            except SealError as exc:
                raise BackupError(f"{source}: {exc}") from None
            except (tarfile.TarError, OSError, EOFError, zlib.error, json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise BackupError(f"{source} is not a whole mpi-node backup ({type(exc).__name__}: {exc})") from None
        described = _describe(work / DB_NAME)
        if described["node_id"] != manifest.get("node_id"):
            raise BackupError("its database is not the node its manifest names")
        manifest["id_margin"] = id_margin
        manifest["enrolled"] = _mark_restored(work / DB_NAME, manifest, id_margin)
        names = sorted(manifest["files"], key=lambda name: name == DB_NAME)  # the database last
        for name in names:
            os.rename(work / name, data_dir / name)
        sync_folder(data_dir)
        return manifest
    except BaseException:
        if created:
            shutil.rmtree(data_dir, ignore_errors=True)
        else:
            shutil.rmtree(work, ignore_errors=True)
            for name in os.listdir(data_dir):  # it was empty: leave it so
                path = data_dir / name
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        raise
    finally:
        with contextlib.suppress(OSError):
            work.rmdir()
