"""Reading identities: by ID (following merges), by primary key, and what hangs off them.

``find`` and ``find_whole`` follow the merge chain inside the database (a recursive CTE),
so reaching the canonical identity is one statement however the ID was merged;
``find_whole`` also gathers the programmes and external ids into that same statement, as
JSON aggregates (the one dialect difference, in ``storage/dialects.py``).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection

from ..errors import CorruptMergeChain, NotFound
from ..storage import schema as t
from ..storage.dialects import Dialect, read_json_rows
from .fields import Found, Row, check_id

__all__ = [
    "MERGE_CHAIN_LIMIT",
    "external_ids_of",
    "find",
    "find_whole",
    "holder_of",
    "programme_count",
    "root_of",
    "row_by_pk",
    "row_of",
    "text_in",
]

MERGE_CHAIN_LIMIT = 64  # merges form a forest; a longer chain means a corrupt database


async def row_of(conn: AsyncConnection, mpi_id: str | None) -> Row | None:
    """The identity stored under exactly this ID (merges not followed), or None."""
    if mpi_id is None:
        return None
    return (await conn.execute(sa.select(t.identity).where(t.identity.c.mpi_id == mpi_id))).first()


async def row_by_pk(conn: AsyncConnection, pk: int) -> Row:
    return (await conn.execute(sa.select(t.identity).where(t.identity.c.pk == pk))).one()


async def root_of(conn: AsyncConnection, row: Row | None) -> Row | None:
    """The end of ``row``'s merge chain as far as this replica holds it (lenient: sync's view)."""
    for _ in range(MERGE_CHAIN_LIMIT):
        if row is None or row.merged_into is None:
            return row
        nxt = await row_of(conn, row.merged_into)
        if nxt is None:
            return row
        row = nxt
    return row


def _chain_end() -> sa.Subquery:
    """The pk of the last identity on the merge chain starting at ``:requested``, and its depth."""
    i = t.identity
    start = sa.select(i.c.pk, i.c.merged_into, sa.literal_column("0").label("depth")).where(
        i.c.mpi_id == sa.bindparam("requested", type_=sa.String)
    )
    chain = start.cte("chain", recursive=True)
    step = i.alias("step")
    chain = chain.union_all(
        sa.select(step.c.pk, step.c.merged_into, (chain.c.depth + sa.literal_column("1")).label("depth")).where(
            step.c.mpi_id == chain.c.merged_into, chain.c.depth < sa.literal_column(str(MERGE_CHAIN_LIMIT))
        )
    )
    return sa.select(chain.c.pk, chain.c.depth).order_by(chain.c.depth.desc()).limit(1).subquery("chain_end")


# The statements are built once: building one costs more than running it. Their only
# parameter is ``requested``.


@functools.cache
def _find_statement() -> sa.Select[Any]:
    end = _chain_end()
    return sa.select(t.identity, end.c.depth).join(end, end.c.pk == t.identity.c.pk)


_whole_statements: dict[str, sa.Select[Any]] = {}  # by dialect name


def _whole_statement(dialect: Dialect) -> sa.Select[Any]:
    if dialect.name not in _whole_statements:
        _whole_statements[dialect.name] = _build_whole_statement(dialect)
    return _whole_statements[dialect.name]


def _build_whole_statement(dialect: Dialect) -> sa.Select[Any]:
    i, p, x = t.identity, t.programme, t.external_id
    end = _chain_end()
    programmes = (
        sa.select(dialect.json_rows({"t": p.c.programme_type, "at": p.c.linked_at}))
        .where(p.c.identity_pk == i.c.pk)
        .scalar_subquery()
    )
    external = (
        sa.select(dialect.json_rows({"s": x.c.system, "v": x.c.value})).where(x.c.identity_pk == i.c.pk).scalar_subquery()
    )
    return sa.select(i, end.c.depth, programmes.label("programmes_json"), external.label("external_json")).join(
        end, end.c.pk == i.c.pk
    )


def _checked(row: Row | None, requested: str) -> Row:
    if row is None:
        raise NotFound(f"no identity {requested}")
    if row.merged_into is not None:
        if row.depth >= MERGE_CHAIN_LIMIT:
            raise CorruptMergeChain("merge chain too long")
        raise NotFound(f"no identity {row.merged_into}")
    return row


async def find(conn: AsyncConnection, mpi_id: str) -> Found:
    """The canonical identity for an ID, following merges, in one statement; 404 when no such ID exists."""
    requested = check_id(mpi_id)
    row = (await conn.execute(_find_statement(), {"requested": requested})).first()
    return Found(_checked(row, requested), requested)


async def find_whole(conn: AsyncConnection, dialect: Dialect, mpi_id: str) -> Found:
    """``find``, with the identity's programmes and external ids, still in one statement."""
    requested = check_id(mpi_id)
    row = _checked((await conn.execute(_whole_statement(dialect), {"requested": requested})).first(), requested)
    return Found(
        row,
        requested,
        sorted(((str(e["t"]), str(e["at"])) for e in read_json_rows(row.programmes_json)), key=lambda e: (e[1], e[0])),
        {str(e["s"]): str(e["v"]) for e in read_json_rows(row.external_json)},
    )


def id_param(dialect: str, ids: Sequence[int]) -> Any:
    """The value to bind for ``id_list``: an array on PostgreSQL, a JSON array on SQLite."""
    return list(ids) if dialect == "postgresql" else json.dumps(list(ids))


def id_list(dialect: str, name: str, ids: Sequence[int] | None = None) -> Any:
    """A list of integers bound as one parameter ``name``, as a one-column table (``value``).

    However many integers, the statement's text is the same: no bound-parameter limit to
    chunk under, and no new statement for the driver to parse per list length.  ``ids``
    binds the value now; without it the caller passes ``id_param(dialect, ids)`` at execution
    (a statement built once and cached).
    """
    bound = {} if ids is None else {"value": id_param(dialect, ids)}
    if dialect == "postgresql":
        array = sa.cast(sa.bindparam(name, **bound), postgresql.ARRAY(sa.BigInteger))
        return sa.func.unnest(array).table_valued("value").render_derived()
    return sa.func.json_each(sa.bindparam(name, type_=sa.String, **bound)).table_valued("value")


def pk_in(conn: AsyncConnection, column: Any, pks: Sequence[int]) -> Any:
    """``column IN pks`` with the pks bound as one value (``id_list``): tens of thousands cost one statement."""
    return column.in_(sa.select(id_list(conn.dialect.name, "pk_list", pks).c.value))


def text_in(conn: AsyncConnection, column: Any, values: Sequence[str]) -> Any:
    """``column IN values`` with the strings bound as one value (a text array on PostgreSQL, JSON on SQLite)."""
    if conn.dialect.name == "postgresql":
        return column == sa.any_(sa.cast(sa.bindparam("text_list", list(values)), postgresql.ARRAY(sa.Text)))
    listed = sa.func.json_each(sa.bindparam("text_list", json.dumps(list(values)), type_=sa.String)).table_valued("value")
    return column.in_(sa.select(listed.c.value))


async def external_ids_of(conn: AsyncConnection, pks: Sequence[int]) -> dict[int, dict[str, str]]:
    """{pk: {system: value}} for these identities."""
    out: dict[int, dict[str, str]] = {pk: {} for pk in pks}
    if pks:
        x = t.external_id
        for pk, system, value in await conn.execute(
            sa.select(x.c.identity_pk, x.c.system, x.c.value).where(pk_in(conn, x.c.identity_pk, pks))
        ):
            out[pk][system] = value
    return out


async def programme_count(conn: AsyncConnection, pk: int) -> int:
    p = t.programme
    return int((await conn.execute(sa.select(sa.func.count()).select_from(p).where(p.c.identity_pk == pk))).scalar_one())


async def holder_of(conn: AsyncConnection, system: str, value: str) -> str | None:
    """The MPI ID that holds external id ``system``/``value`` (merges not followed), or None."""
    x = t.external_id
    return (
        await conn.execute(
            sa.select(t.identity.c.mpi_id)
            .join(x, x.c.identity_pk == t.identity.c.pk)
            .where(x.c.system == system, x.c.value == value)
        )
    ).scalar()
