"""Searching identities: GET /mpi/search (``search``) and the FHIR Patient search (``people``).

``search``: every word of ``q`` is a whole word of the name, but the last, which may be the
beginning of one (what a clerk types: ``fatou dia``). One word is a prefix range of words.
Two or more: the pair (rarest whole word, last word) is one prefix range of pair tokens
(``index.search_tokens``), and each other word one index probe.

``people``: each word the beginning of a word of the name (``family=dia`` finds Diallo), in
the last name, the first name or either, with identifiers, birth-date ranges, gender and
region; it answers identity rows, which ``views.views_of`` turns into the API's view.

Both take at most ``SEARCH_WORDS_MAX`` name words and ``SEARCH_TEXT_MAX`` characters of name
text (``shared.schemas``), so a search is a bounded number of index probes.
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from ..errors import BadRequest, NotFound
from ..matching import NameFrequencies, name_tokens
from ..schemas import SEARCH_WORDS_MAX, SearchQuery
from ..storage import schema as t
from .family import linked_to
from .fields import Row, api_time, iso
from .index import PAIR
from .lookup import find
from .views import replaces_of

__all__ = ["MPI_ID", "Criteria", "DateRange", "name_terms", "people", "search"]

MPI_ID = ""  # the system of an identifier that is the MPI ID itself (``Criteria.identifiers``)


def name_terms(q: str, frequencies: NameFrequencies) -> tuple[str, str, list[str]] | None:
    """The index reads the words of ``q`` make: (low, high) of one prefix range, and whole words to probe."""
    words = list(dict.fromkeys(name_tokens(q)))
    if not words:
        return None

    def share(token: str) -> float:  # how common a word is (0 for unknown: assumed rare)
        return max(frequencies.first_name_share(token), frequencies.last_name_share(token))

    if len(words) == 1:
        low = words[0][:60]
        probes: list[str] = []
    else:
        *whole, last = words
        anchor = min(whole, key=lambda w: (share(w), -len(w)))
        low = f"{PAIR}{anchor} {last}"[:60]
        probes = [w[:60] for w in whole if w != anchor]
    return low, low[:-1] + chr(ord(low[-1]) + 1), probes


@functools.cache
def _statement(
    probes: int, by_pk: bool, region: bool, dob: bool, program: bool, named: bool, related: bool = False
) -> sa.Select[Any]:
    """The search statement of one shape (which filters, how many words), built once; values are parameters."""
    i, p, nt = t.identity, t.programme, t.name_token
    conditions: list[Any] = [i.c.status == "active"]
    if by_pk:
        conditions.append(i.c.pk == sa.bindparam("pk"))
    if related:
        conditions.append(i.c.pk.in_(sa.bindparam("related", expanding=True)))
    if named:
        conditions.append(
            i.c.pk.in_(sa.select(nt.c.identity_pk).where(nt.c.token >= sa.bindparam("low"), nt.c.token < sa.bindparam("high")))
        )
    for n in range(probes):
        probe = t.name_token.alias(f"nt{n}")
        conditions.append(sa.exists().where(probe.c.identity_pk == i.c.pk, probe.c.token == sa.bindparam(f"w{n}")))
    if region:
        conditions.append(i.c.region_code == sa.bindparam("region"))
    if dob:
        conditions.append(i.c.date_of_birth == sa.bindparam("dob", type_=sa.Date))
    if program:
        conditions.append(i.c.pk.in_(sa.select(p.c.identity_pk).where(p.c.programme_type == sa.bindparam("program"))))
    count = sa.select(sa.func.count()).select_from(p).where(p.c.identity_pk == i.c.pk).scalar_subquery()
    columns = [
        i.c.mpi_id, i.c.first_name, i.c.last_name, i.c.date_of_birth, i.c.date_of_birth_estimated, i.c.gender,
        i.c.region_code, i.c.created_at,
    ]
    return (
        sa.select(*columns, count.label("programme_count"), sa.func.count().over().label("total"))
        .where(*conditions)
        .order_by(i.c.last_name, i.c.first_name, i.c.pk)
        .limit(sa.bindparam("limit", type_=sa.Integer, literal_execute=False))
        .offset(sa.bindparam("offset", type_=sa.Integer, literal_execute=False))
    )


async def search(conn: AsyncConnection, frequencies: NameFrequencies, query: SearchQuery) -> dict[str, Any]:
    """GET /mpi/search's answer: ``{"total", "items"}``."""
    params: dict[str, Any] = {
        "limit": query.limit, "offset": query.offset, "region": query.region_code, "dob": query.date_of_birth,
        "program": query.program,
    }
    if query.mpi_id:
        try:
            params["pk"] = (await find(conn, query.mpi_id)).row.pk
        except NotFound:
            return {"total": 0, "items": []}
    if query.related_to:
        try:
            target = (await find(conn, query.related_to)).row.mpi_id
        except NotFound:
            return {"total": 0, "items": []}
        merged_in = (await replaces_of(conn, [target])).get(target, [])
        params["related"] = [pk for pk, _ in await linked_to(conn, [target, *merged_in])]
        if not params["related"]:
            return {"total": 0, "items": []}
    terms = name_terms(query.q or "", frequencies)
    if terms is not None:
        params["low"], params["high"], words = terms
        params.update({f"w{n}": w for n, w in enumerate(words)})
    statement = _statement(
        len(terms[2]) if terms else 0, bool(query.mpi_id), bool(query.region_code), bool(query.date_of_birth),
        bool(query.program), terms is not None, bool(query.related_to),
    )
    rows = (await conn.execute(statement, params)).all()
    if rows:
        total = rows[0].total
    elif query.offset == 0:
        total = 0
    else:  # past the last page: the window had no row to count on
        counted = sa.select(sa.func.count()).select_from(statement.limit(None).offset(None).subquery())
        total = (await conn.execute(counted, params)).scalar_one()
    items = [
        {
            "mpi_id": r.mpi_id,
            "first_name": r.first_name,
            "last_name": r.last_name,
            "date_of_birth": iso(r.date_of_birth),
            "date_of_birth_estimated": bool(r.date_of_birth_estimated),
            "gender": r.gender,
            "region_code": r.region_code,
            "programme_count": int(r.programme_count),
            "created_at": api_time(r.created_at),
        }
        for r in rows
    ]
    return {"total": total, "items": items}


# -- the Patient search (FHIR) ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DateRange:
    low: dt.date | None  # inclusive
    high: dt.date | None  # inclusive


@dataclass
class Criteria:
    """What a Patient search asks for; name words are folded like the search index's tokens.

    ``identifiers``: (system, value) with the native system name (``dhis2_uid``, ``nin``),
    ``MPI_ID`` for the MPI ID (merges followed), or None for any of them. ``nobody``: the
    search asked for something no identity here can have (an unknown identifier system,
    gender ``other``).
    """

    ids: list[str] = field(default_factory=list)
    identifiers: list[tuple[str | None, str]] = field(default_factory=list)
    family: list[str] = field(default_factory=list)
    given: list[str] = field(default_factory=list)
    name: list[str] = field(default_factory=list)
    birthdate: list[DateRange] = field(default_factory=list)
    gender: str | None = None  # M, F or U
    region: str | None = None
    nobody: bool = False
    count: int = 20
    offset: int = 0

    @property
    def words(self) -> list[str]:
        return [*self.family, *self.given, *self.name]

    def check(self) -> None:
        """400 ``invalid_search`` past ``SEARCH_WORDS_MAX``, the limit every search obeys.

        (The parser of each face refuses more than ``SEARCH_TEXT_MAX`` characters of the text
        it was given, before folding.)
        """
        if len(self.words) > SEARCH_WORDS_MAX:
            raise BadRequest(
                f"at most {SEARCH_WORDS_MAX} name words in a search, not {len(self.words)}", code="invalid_search"
            )


def _prefix(column: Any, word: str) -> tuple[Any, Any]:
    """``column`` begins with ``word``, as an index range (tokens are upper-case letters)."""
    return column >= word, column < word[:-1] + chr(ord(word[-1]) + 1)


@functools.lru_cache(maxsize=65_536)
def _tokens(text: str) -> tuple[str, ...]:
    # Names repeat (thousands of Diallo): fold each spelling once, not once a row.
    return tuple(name_tokens(text))


def _words_match(words: list[str], text: str) -> bool:
    tokens = _tokens(text)
    return all(any(tok.startswith(w) for tok in tokens) for w in words)


async def _identifier(conn: AsyncConnection, system: str | None, value: str) -> Any:
    """The identities holding an identifier: the MPI ID (following merges) or an external id.

    An external id is found through its primary key (system, value) or, for any system,
    through ``ix_external_id_value``: never a scan of ``external_id``.
    """
    i, e = t.identity, t.external_id
    mpi_pk: int | None = None
    if system is None or system == MPI_ID:
        try:
            mpi_pk = (await find(conn, value)).row.pk
        except NotFound:
            mpi_pk = None
        except BadRequest:
            if system is not None:
                raise  # an MPI ID with a typo: 400 as natively
    if system == MPI_ID:
        return i.c.pk == mpi_pk if mpi_pk is not None else sa.false()
    if system is None:
        holders = sa.select(e.c.identity_pk).where(e.c.value == value)
    else:
        holders = sa.select(e.c.identity_pk).where(e.c.system == system, e.c.value == value)
    held = i.c.pk.in_(holders)
    return sa.or_(held, i.c.pk == mpi_pk) if mpi_pk is not None else held


async def people(conn: AsyncConnection, frequencies: NameFrequencies, c: Criteria) -> tuple[int, list[Row]]:
    """The Patient search: (total, the page's identity rows), active identities only.

    Every name word narrows through the ``name_token`` index (the rarest word drives, the
    others are index probes). The index does not say whether a word is in the first or the
    last name, so with ``family`` or ``given`` the narrowed (pk, names) are read and checked
    here before counting and paging; otherwise SQL counts and pages.
    """
    c.check()
    if c.nobody:
        return 0, []
    i, nt = t.identity, t.name_token
    conditions: list[Any] = [i.c.status == "active"]
    for raw in c.ids:
        try:
            found = await find(conn, raw)
        except (NotFound, BadRequest):
            return 0, []
        conditions.append(i.c.pk == found.row.pk)
    for system, value in dict.fromkeys(c.identifiers):
        conditions.append(await _identifier(conn, system, value))
    words = c.words
    if words:

        def share(w: str) -> float:
            return max(frequencies.first_name_share(w), frequencies.last_name_share(w)) - len(w) * 1e-9

        driver, *others = sorted(dict.fromkeys(words), key=share)
        conditions.append(i.c.pk.in_(sa.select(nt.c.identity_pk).where(*_prefix(nt.c.token, driver))))
        for n, word in enumerate(others):
            probe = nt.alias(f"fw{n}")
            conditions.append(sa.exists().where(probe.c.identity_pk == i.c.pk, *_prefix(probe.c.token, word)))
    for r in c.birthdate:
        if r.low is not None:
            conditions.append(i.c.date_of_birth >= r.low)
        if r.high is not None:
            conditions.append(i.c.date_of_birth <= r.high)
    if c.gender is not None:
        conditions.append(i.c.gender == c.gender)
    if c.region is not None:
        conditions.append(i.c.region_code == c.region)
    order = (i.c.last_name, i.c.first_name, i.c.pk)
    if c.family or c.given:
        narrowed = (
            await conn.execute(sa.select(i.c.pk, i.c.first_name, i.c.last_name).where(*conditions).order_by(*order))
        ).all()
        kept = [
            r.pk for r in narrowed
            if _words_match(c.family, r.last_name) and _words_match(c.given, r.first_name)
        ]
        page = kept[c.offset : c.offset + c.count]
        rows = (await conn.execute(sa.select(i).where(i.c.pk.in_(page)))).all() if page else []
        position = {pk: n for n, pk in enumerate(page)}
        return len(kept), sorted(rows, key=lambda r: position[r.pk])
    total = (await conn.execute(sa.select(sa.func.count()).select_from(i).where(*conditions))).scalar_one()
    if c.count == 0 or c.offset >= total:
        return int(total), []
    rows = (await conn.execute(sa.select(i).where(*conditions).order_by(*order).limit(c.count).offset(c.offset))).all()
    return int(total), list(rows)
