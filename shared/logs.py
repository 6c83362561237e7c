"""Logging: one JSON object a line on stderr (or plain text), and never personal data.

Kept apart from the application so that a command-line run configures its logs without
importing the web stack.
"""

from __future__ import annotations

import json
import logging
import traceback
from typing import Any

from .redact import exception_text
from .settings import Settings

__all__ = ["configure_logging"]


class _SafeFormatter(logging.Formatter):
    """Tracebacks as frames (file, line, function, source) and exception types: no values."""

    def formatException(self, ei: Any) -> str:  # noqa: N802 - logging's name
        _, exc, tb = ei
        lines = ["Traceback (most recent call last):"]
        for frame in traceback.extract_tb(tb):
            lines.append(f'  File "{frame.filename}", line {frame.lineno}, in {frame.name}')
            if frame.line:
                lines.append(f"    {frame.line.strip()}")
        chain = []
        seen: set[int] = set()
        while exc is not None and id(exc) not in seen:
            seen.add(id(exc))
            chain.append(exception_text(exc))
            exc = exc.__cause__ or exc.__context__
        lines.append(" <- ".join(chain))
        return "\n".join(lines)


class _JsonFormatter(_SafeFormatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(settings: Settings) -> None:
    """Structured logs: one JSON object a line on stderr (or plain text); no personal data.

    Requests are logged by route template (``/mpi/{mpi_id}``), never by path, so no MPI ID,
    DHIS2 UID or card token reaches the log; tracebacks carry no exception messages.
    """
    handler = logging.StreamHandler()
    if settings.log_format == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(_SafeFormatter("%(asctime)s %(levelname)s %(name)s %(message)s %(fields)s", defaults={"fields": ""}))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
