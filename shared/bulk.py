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

from .errors import ApiError, BadRequest
from .matching import NameFrequencies, Thresholds, evidence_detail, matcher_of
from .registration import register_batch
from .registry import Registry
from .schemas import RegisterIn, decode_json, parse_body
from .settings import Settings
from .storage import schema as t
from .storage.store import Store, utc_now

__all__ = ["ImportStats", "import_file", "import_rows"]

BATCH = 500
_FIELDS = set(RegisterIn.model_fields)
_REPORT_COLUMNS = ["line", "action", "mpi_id", "existing_mpi_id", "similarity_score", "matched_fields", "error"]


class ImportError_(ValueError):
    """A file that cannot be imported at all (unreadable, wrong header)."""


@dataclass
class ImportStats:
    created: int = 0
    queued: int = 0
    blocked: int = 0
    errors: int = 0
    skipped: int = 0  # lines done by an earlier, interrupted run
    seconds: float = 0.0
    report: list[dict[str, Any]] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return self.created + self.queued + self.blocked + self.errors


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _rows(path: Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """(line number, row) or (line number, error message) for every data line."""
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
            raise ImportError_(
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


async def import_rows(
    registry: Registry, path: Path, *, actor: str = "import", progress: bool = True
) -> ImportStats:
    """Import ``path`` into the registry's store; resumable, see the module docstring."""
    store = registry.store
    thresholds = registry.matcher.thresholds
    sha = _sha256(path)
    stats = ImportStats()
    started = time.perf_counter()
    async with store.read() as conn:
        done = (
            await conn.execute(sa.select(t.import_progress.c.last_line).where(t.import_progress.c.file_sha256 == sha))
        ).scalar()
    done = int(done or 0)
    bar = tqdm(desc=f"import {path.name}", unit=" rows", disable=not progress, file=sys.stderr)
    batch: list[tuple[int, dict[str, Any] | str]] = []

    async def flush() -> None:
        if not batch:
            return
        report: list[dict[str, Any]] = []
        counts = {"created": 0, "queued": 0, "blocked": 0, "errors": 0}
        valid: list[tuple[int, RegisterIn]] = []
        for number, row in batch:
            try:
                if isinstance(row, str):
                    raise BadRequest(row, code="invalid_row")
                if "__extra__" in row:
                    raise BadRequest("more values than columns", code="invalid_row")
                valid.append((number, parse_body(RegisterIn, row)))
            except ApiError as exc:
                report.append({"line": number, "action": "error", "error": exc.message})
                counts["errors"] += 1
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
                    counts["errors"] += 1
                elif outcome.action == "blocked":
                    entry["action"] = "blocked"
                    counts["blocked"] += 1
                elif outcome.match is not None and outcome.match.score >= thresholds.probable:
                    assert outcome.mpi_id is not None and outcome.match_mpi_id is not None
                    reason = "force_create" if registry.blocks(outcome.match) else "import_probable"
                    await registry.open_review(
                        tx, reason, [outcome.match_mpi_id, outcome.mpi_id], outcome.match.score,
                        outcome.match.matched_fields, evidence_detail(outcome.match),
                    )
                    entry["action"] = "queued"
                    counts["queued"] += 1
                else:
                    counts["created"] += 1
                    continue
                report.append(entry)
            last = batch[-1][0]
            await tx.conn.execute(sa.delete(t.import_progress).where(t.import_progress.c.file_sha256 == sha))
            await tx.conn.execute(
                sa.insert(t.import_progress).values(file_sha256=sha, path=str(path), last_line=last, updated_at=utc_now())
            )
        stats.created += counts["created"]
        stats.queued += counts["queued"]
        stats.blocked += counts["blocked"]
        stats.errors += counts["errors"]
        stats.report.extend(sorted(report, key=lambda e: int(e["line"])))
        bar.update(len(batch))
        batch.clear()

    try:
        for number, row in _rows(path):
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


def write_report(stats: ImportStats, out: TextIO, *, header: bool = True) -> None:
    writer = csv.DictWriter(out, fieldnames=_REPORT_COLUMNS)
    if header:
        writer.writeheader()
    for entry in stats.report:
        writer.writerow(entry)


def append_report(stats: ImportStats, path: Path) -> None:
    """Add this run's rows to the report: a resumed or repeated import never loses an earlier one's."""
    fresh = not path.exists() or path.stat().st_size == 0
    buffer = io.StringIO()
    write_report(stats, buffer, header=fresh)
    with path.open("a", encoding="utf-8", newline="") as f:
        f.write(buffer.getvalue())


async def import_file(store: Store, settings: Settings, path: Path, *, report: str | None, actor: str) -> int:
    """The ``mpi-node import`` command: import, write the report, print a summary line."""
    if not path.is_file():
        raise ImportError_(f"{path}: no such file")
    frequencies = NameFrequencies()
    matcher = matcher_of(
        settings.matcher,
        frequencies,
        Thresholds(settings.certain_threshold, settings.probable_threshold, settings.possible_threshold),
    )
    registry = Registry(store, matcher, frequencies, settings.candidate_limit)
    await store.open()
    try:
        await registry.load_frequencies()
        stats = await import_rows(registry, path, actor=actor, progress=sys.stderr.isatty())
    finally:
        await store.close()
    report_path = Path(report) if report else path.with_name(path.name + ".report.csv")
    append_report(stats, report_path)
    rate = stats.rows / stats.seconds if stats.seconds else 0.0
    for entry in stats.report:
        if entry["action"] == "error":
            print(f"{path}:{entry['line']}: {entry['error']}", file=sys.stderr)
    print(
        f"imported {stats.rows} rows in {stats.seconds:.1f} s ({rate:.0f}/s): {stats.created} created, "
        f"{stats.queued} queued for review, {stats.blocked} blocked as duplicates, {stats.errors} errors"
        + (f", {stats.skipped} already imported" if stats.skipped else "")
        + f"; report: {report_path}"
    )
    return 1 if stats.errors else 0
