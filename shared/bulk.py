"""Bulk import of beneficiary lists (CSV with a header row, or JSON lines) through the matcher.

Rows are registered in batches, each batch one transaction that also records how far the
file has been read (``import_progress``, keyed by the file's SHA-256). A crash or Ctrl-C
loses at most the batch in flight, and running the same command again resumes after the
last committed line: nobody is registered twice.

What happens to a row:
- ``created``: registered; no match at or above the probable threshold;
- ``queued``: registered, but a match between probable and certain went to the review queue;
- ``blocked``: not registered, a match at or above certain exists (its ID is reported);
- ``error``: the row is invalid (line number and reason reported), nothing written.
The report CSV lists every row that was not plainly created; each run appends to it, so a
resumed or repeated import keeps what the earlier runs reported.

What every data row became is also kept in the database (``import_line``, written in the
batch's transaction): the map (``--map``), one ``line,mpi_id,status`` per data row, is
written from it, so a killed and resumed import still maps every line exactly once. The
reading of files, the validation of rows, the progress and the map are shared with the
hub's import (``shared/seed.py``), which loads rows without matching them.
"""

from __future__ import annotations

import csv
import hashlib
import io
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import sqlalchemy as sa
from tqdm import tqdm

from .compose import services
from .errors import ApiError, BadRequest
from .matching import evidence_detail
from .registration import register_batch
from .registry import Registry
from .schemas import RegisterIn, decode_json, parse_body
from .settings import Settings
from .storage import schema as t
from .storage.store import Store, Tx

__all__ = [
    "BadImportFile",
    "ImportStats",
    "append_report",
    "file_sha256",
    "import_file",
    "import_rows",
    "lines_done",
    "read_rows",
    "record_batch",
    "validate",
    "write_map",
]

BATCH = 500
_FIELDS = set(RegisterIn.model_fields)
_REPORT_COLUMNS = ["line", "action", "mpi_id", "existing_mpi_id", "similarity_score", "matched_fields", "error"]
MAP_COLUMNS = ["line", "mpi_id", "status"]
_MAP_PAGE = 50_000


class BadImportFile(ValueError):
    """A file that cannot be imported at all (missing, unreadable, wrong header, broken CSV)."""


@dataclass
class ImportStats:
    created: int = 0
    queued: int = 0
    blocked: int = 0
    errors: int = 0
    skipped: int = 0  # lines done by an earlier, interrupted run
    seconds: float = 0.0
    report: list[dict[str, Any]] = field(default_factory=list)
    file_sha256: str = ""

    @property
    def rows(self) -> int:
        return self.created + self.queued + self.blocked + self.errors


def file_sha256(path: Path) -> str:
    """The file's SHA-256: what its progress and its lines are kept under (a renamed copy resumes too)."""
    if not path.is_file():
        raise BadImportFile(f"{path}: no such file")
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_rows(path: Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """(line number, row) or (line number, error message) for every data line.

    The line number is the file's (a CSV's header is line 1); blank lines are no rows.
    """
    try:
        yield from _rows(path)
    except csv.Error as exc:
        raise BadImportFile(f"{path}: not a readable CSV file ({exc})") from None
    except UnicodeError as exc:
        raise BadImportFile(f"{path}: {exc}") from None


def _rows(path: Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    # Bytes that are not UTF-8 become lone surrogates, which validation reports with their
    # line number like any other bad value, instead of ending the import half-way.
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        with path.open(encoding="utf-8", errors="surrogateescape") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    yield number, decode_json(line)
                except ApiError as exc:
                    yield number, exc.message.replace("the body is", "the line is")
        return
    with path.open(encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        unknown = [h for h in header if h not in _FIELDS and not h.startswith("external_ids.")]
        if not header or unknown:
            raise BadImportFile(
                f"{path}: unknown column(s) {', '.join(unknown) or '(no header)'}; "
                f"expected {', '.join(sorted(_FIELDS))} or external_ids.<system>"
            )
        for record in reader:
            row: dict[str, Any] = {}
            external: dict[str, str] = {}
            for key, value in record.items():
                if key is None:
                    row["__extra__"] = value
                elif value is None or value.strip() == "":
                    continue
                elif key.startswith("external_ids."):
                    external[key.removeprefix("external_ids.")] = value.strip()
                elif key == "force_create":
                    row[key] = value.strip().lower() in ("1", "true", "yes")
                else:
                    row[key] = value.strip()
            if external:
                row["external_ids"] = external
            yield reader.line_num, row


def validate(row: dict[str, Any] | str) -> RegisterIn | str:
    """The row as a registration, or why it is invalid (one line)."""
    try:
        if isinstance(row, str):
            raise BadRequest(row, code="invalid_row")
        if "__extra__" in row:
            raise BadRequest("more values than columns", code="invalid_row")
        if row.get("related_persons"):
            # Links are checked against the registry one by one (register, PATCH): not here yet.
            raise BadRequest("related_persons cannot be imported: link them with PATCH /mpi/{id}", code="invalid_row")
        return parse_body(RegisterIn, row)
    except ApiError as exc:
        return exc.message


async def lines_done(store: Store, sha: str) -> int:
    """The last line an earlier run of this file committed (0: none)."""
    async with store.read() as conn:
        done = (
            await conn.execute(sa.select(t.import_progress.c.last_line).where(t.import_progress.c.file_sha256 == sha))
        ).scalar()
    return int(done or 0)


async def record_batch(tx: Tx, sha: str, path: Path, lines: list[tuple[int, str | None, str]]) -> None:
    """In the batch's transaction: what each of its lines became, and how far the file is read."""
    if not lines:
        return
    await tx.bulk_insert(
        t.import_line, [{"file_sha256": sha, "line": n, "mpi_id": mpi_id, "status": status} for n, mpi_id, status in lines]
    )
    await tx.conn.execute(sa.delete(t.import_progress).where(t.import_progress.c.file_sha256 == sha))
    await tx.conn.execute(
        sa.insert(t.import_progress).values(
            file_sha256=sha, path=str(path), last_line=max(n for n, _, _ in lines), updated_at=tx.now
        )
    )


async def write_map(store: Store, sha: str, out: Path) -> int:
    """Write ``line,mpi_id,status`` for every data row of the file imported so far; the row count.

    Written to a temporary file beside ``out`` and renamed: a map is whole or absent.
    """
    column = t.import_line.c
    part = out.with_name(out.name + ".part")
    count = last = 0
    with part.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(MAP_COLUMNS)
        while True:
            async with store.read() as conn:
                page = (
                    await conn.execute(
                        sa.select(column.line, column.mpi_id, column.status)
                        .where(column.file_sha256 == sha, column.line > last)
                        .order_by(column.line)
                        .limit(_MAP_PAGE)
                    )
                ).all()
            if not page:
                break
            writer.writerows((line, mpi_id or "", status) for line, mpi_id, status in page)
            count, last = count + len(page), int(page[-1][0])
    part.replace(out)
    return count


async def import_rows(
    registry: Registry, path: Path, *, actor: str = "import", progress: bool = True
) -> ImportStats:
    """Import ``path`` into the registry's store; resumable, see the module docstring."""
    store = registry.store
    thresholds = registry.matcher.thresholds
    sha = file_sha256(path)
    stats = ImportStats(file_sha256=sha)
    started = time.perf_counter()
    done = await lines_done(store, sha)
    bar = tqdm(desc=f"import {path.name}", unit=" rows", disable=not progress, file=sys.stderr)
    batch: list[tuple[int, dict[str, Any] | str]] = []

    async def flush() -> None:
        if not batch:
            return
        report: list[dict[str, Any]] = []
        lines: list[tuple[int, str | None, str]] = []
        counts = {"created": 0, "queued": 0, "blocked": 0, "errors": 0}
        valid: list[tuple[int, RegisterIn]] = []
        for number, row in batch:
            body = validate(row)
            if isinstance(body, str):
                report.append({"line": number, "action": "error", "error": body})
                lines.append((number, None, "invalid"))
                counts["errors"] += 1
            else:
                valid.append((number, body))
        async with store.write(actor) as tx:
            outcomes = await register_batch(registry, tx, [body for _, body in valid])
            for (number, _body), outcome in zip(valid, outcomes, strict=True):
                entry: dict[str, Any] = {"line": number, "mpi_id": outcome.mpi_id}
                if outcome.match is not None:
                    entry.update(
                        existing_mpi_id=outcome.match_mpi_id,
                        similarity_score=outcome.match.score,
                        matched_fields=" ".join(outcome.match.matched_fields),
                    )
                if outcome.action == "conflict":
                    entry.update(action="error", error=outcome.message)
                    lines.append((number, None, "invalid"))
                    counts["errors"] += 1
                elif outcome.action == "blocked":
                    entry["action"] = "blocked"
                    lines.append((number, outcome.match_mpi_id, "blocked"))
                    counts["blocked"] += 1
                elif outcome.match is not None and outcome.match.score >= thresholds.probable:
                    assert outcome.mpi_id is not None and outcome.match_mpi_id is not None
                    reason = "force_create" if registry.blocks(outcome.match) else "import_probable"
                    await registry.open_review(
                        tx, reason, [outcome.match_mpi_id, outcome.mpi_id], outcome.match.score,
                        outcome.match.matched_fields, evidence_detail(outcome.match),
                    )
                    entry["action"] = "queued"
                    lines.append((number, outcome.mpi_id, "queued"))
                    counts["queued"] += 1
                else:
                    lines.append((number, outcome.mpi_id, "created"))
                    counts["created"] += 1
                    continue
                report.append(entry)
            await record_batch(tx, sha, path, lines)
        stats.created += counts["created"]
        stats.queued += counts["queued"]
        stats.blocked += counts["blocked"]
        stats.errors += counts["errors"]
        stats.report.extend(sorted(report, key=lambda e: int(e["line"])))
        bar.update(len(batch))
        batch.clear()

    try:
        for number, row in read_rows(path):
            if number <= done:
                stats.skipped += 1
                continue
            batch.append((number, row))
            if len(batch) >= BATCH:
                await flush()
        await flush()
    finally:
        bar.close()
        stats.seconds = time.perf_counter() - started
    return stats


def write_report(report: list[dict[str, Any]], out: TextIO, *, header: bool = True) -> None:
    writer = csv.DictWriter(out, fieldnames=_REPORT_COLUMNS)
    if header:
        writer.writeheader()
    for entry in report:
        writer.writerow(entry)


def append_report(report: list[dict[str, Any]], path: Path) -> None:
    """Add this run's rows to the report: a resumed or repeated import never loses an earlier one's."""
    fresh = not path.exists() or path.stat().st_size == 0
    buffer = io.StringIO()
    write_report(report, buffer, header=fresh)
    with path.open("a", encoding="utf-8", newline="") as f:
        f.write(buffer.getvalue())


async def import_file(
    settings: Settings, path: Path, *, report: str | None, actor: str, map_path: str | None = None
) -> int:
    """The ``mpi-node import`` command: import, write the report (and the map), print a summary line."""
    file_sha256(path)  # a missing file is one line before the database is opened
    async with services(settings, "node") as node:
        stats = await import_rows(node.registry, path, actor=actor, progress=sys.stderr.isatty())
        mapped = await write_map(node.store, stats.file_sha256, Path(map_path)) if map_path else 0
    report_path = Path(report) if report else path.with_name(path.name + ".report.csv")
    append_report(stats.report, report_path)
    rate = stats.rows / stats.seconds if stats.seconds else 0.0
    for entry in stats.report:
        if entry["action"] == "error":
            print(f"{path}:{entry['line']}: {entry['error']}", file=sys.stderr)
    print(
        f"imported {stats.rows} rows in {stats.seconds:.1f} s ({rate:.0f}/s): {stats.created} created, "
        f"{stats.queued} queued for review, {stats.blocked} blocked as duplicates, {stats.errors} errors"
        + (f", {stats.skipped} already imported" if stats.skipped else "")
        + f"; report: {report_path}"
        + (f"; map of {mapped} rows: {map_path}" if map_path else "")
    )
    return 1 if stats.errors else 0
