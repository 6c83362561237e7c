"""What of an exception may be shown in a log or on a terminal: never the values it carries."""

from __future__ import annotations

import sqlalchemy as sa

__all__ = ["exception_text"]


def exception_text(exc: BaseException) -> str:
    """An exception's type and, for a database error, the database's own first line.

    Messages of other exceptions, and what follows the database's first line (PostgreSQL's
    DETAIL repeats the values of a row), may carry personal data: they are left out.
    """
    name = f"{type(exc).__module__}.{type(exc).__qualname__}"
    if isinstance(exc, sa.exc.StatementError) and exc.orig is not None:
        first = str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else ""
        return f"{name}: ({type(exc.orig).__module__}.{type(exc.orig).__qualname__}) {first}"
    return name
