"""The one door from the FHIR face into the identity layer.

Every call FHIR makes into the registry goes through ``FhirService``, so that the calls can
be re-pointed in one place when the identity layer moves. Two kinds of code live here:

- calls of the identity operations: ``Registry.register``, ``patch``, ``find``, ``view``,
  ``person`` and ``rank`` (what ``Registry.match`` does, in a read that goes on to load the
  matched Patients), ``frequencies`` (to pick the rarest name word), and ``Store.read`` /
  ``Store.audit_read``;
- a few narrow read-only queries the native operations lack, each a ``_query_*`` function
  at the bottom of this module, reading the tables ``/mpi/search`` reads (identity,
  name_token, external_id, programme): a row by ID without following merges, the IDs merged
  into an identity, views of many identities at once (one UNION ALL), an external id's
  holder, and the Patient search with gender, identifier and family/given filters. They are candidates to fold into
  the identity layer.

Nothing here writes: every write is a native operation, with its own change log and audit.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from ..errors import BadRequest, NotFound
from ..identities import Found, api_time, check_id, find, find_whole, view
from ..matching import name_tokens
from ..registry import Registry
from ..schemas import MatchIn, PatchIn, RegisterIn
from ..storage import schema as t
from .resources import Systems
from .search import Criteria

__all__ = ["FhirService", "Match", "Record", "normalise_id"]

_CHAIN_LIMIT = 64


def normalise_id(text: str) -> str:
    """An MPI ID as the registry writes it; 400 for a malformed one or a wrong check character."""
    return check_id(text)


@dataclass(frozen=True, slots=True)
class Record:
    """One identity as FHIR shows it: the native view, and its merge links."""

    view: dict[str, Any]
    replaces: tuple[str, ...] = ()
    replaced_by: str | None = None


@dataclass(frozen=True, slots=True)
class Match:
    record: Record
    score: float
    band: str  # certain, probable, possible or unlikely, as /mpi/match says


class FhirService:
    def __init__(self, registry: Registry, systems: Systems) -> None:
        self.registry = registry
        self.store = registry.store
        self.systems = systems

    # -- writes: native operations --------------------------------------------------------

    async def create(self, body: RegisterIn, actor: str) -> Record:
        """POST /fhir/Patient: the native registration (same matcher, same 409)."""
        created = await self.registry.register(body, actor)
        async with self.store.read() as conn:
            return Record(view(await find_whole(conn, self.store.dialect, created["mpi_id"])))

    async def update(self, mpi_id: str, body: PatchIn, actor: str) -> Record:
        """PUT /fhir/Patient/{id}: the native PATCH (a merged-away ID writes to its canonical)."""
        view = await self.registry.patch(mpi_id, body, actor)
        view.pop("merged_from", None)
        async with self.store.read() as conn:
            replaces = await _query_replaces(conn, [view["mpi_id"]])
        return Record(view, tuple(replaces.get(view["mpi_id"], [])))

    # -- reads ----------------------------------------------------------------------------

    async def read(self, mpi_id: str, actor: str) -> Record:
        """GET /fhir/Patient/{id}: a merged-away ID answers its own (inactive) Patient."""
        async with self.store.read() as conn:
            found = await find_whole(conn, self.store.dialect, mpi_id)
            if found.merged_from:
                # A merged-away identity's programmes and ids went to the canonical one: it has none left.
                row = await _query_identity(conn, found.requested)
                body = view(Found(row, row.mpi_id))
                replaced_by: str | None = found.row.mpi_id
            else:
                body = view(found)
                replaced_by = None
            replaces = await _query_replaces(conn, [body["mpi_id"]])
        self.store.audit_read(actor, "read", found.row.mpi_id, requested=found.requested, api="fhir")
        return Record(body, tuple(replaces.get(body["mpi_id"], [])), replaced_by)

    async def match(self, body: MatchIn, actor: str) -> list[Match]:
        """POST /fhir/Patient/$match: what ``/mpi/match`` ranks, in one read with the Patients.

        ``Registry.match`` answers IDs only; FHIR needs each identity whole, so this ranks
        with the same ``Registry.person`` and ``Registry.rank`` in the connection that then
        reads the matches' ids, programmes and merges (one more query), and audits as it does.
        """
        person = self.registry.person(body)
        async with self.store.read() as conn:
            ranked = await self.registry.rank(conn, person, body.limit, body.min_score)
            records = await self._records(conn, [row for row, _ in ranked])
        matches = [
            Match(record, result.score, result.band or "unlikely")
            for record, (_, result) in zip(records, ranked, strict=True)
        ]
        self.store.audit_read(actor, "match", None, returned=[m.record.view["mpi_id"] for m in matches], api="fhir")
        return matches

    async def search(self, criteria: Criteria, actor: str) -> tuple[int, list[Record]]:
        """GET /fhir/Patient: (total, one page of active Patients ordered by name)."""
        async with self.store.read() as conn:
            total, rows = await _query_search(conn, self.registry, self.systems, criteria)
            records = await self._records(conn, rows)
        self.store.audit_read(actor, "search", None, returned=[r.view["mpi_id"] for r in records], api="fhir")
        return total, records

    async def resolve(self, system: str, value: str, actor: str) -> Record:
        """GET /fhir/Patient/$ihe-pix: the identity holding an identifier, following merges."""
        async with self.store.read() as conn:
            if system == self.systems.mpi_id:
                found = await find_whole(conn, self.store.dialect, value)
            else:
                native = self.systems.native(system)
                holder = await _query_holder(conn, native, value) if native else None
                if holder is None:
                    raise NotFound(f"no Patient has the identifier {system}|{value}")
                found = await find_whole(conn, self.store.dialect, holder)
        self.store.audit_read(actor, "pix_query", found.row.mpi_id, system=system, api="fhir")
        return Record(view(found))

    async def _records(self, conn: AsyncConnection, rows: list[Any]) -> list[Record]:
        views, replaces = await _query_views(conn, rows)
        return [Record(v, tuple(replaces.get(v["mpi_id"], []))) for v in views]


# -- narrow queries the identity layer does not have (yet) -----------------------------------


async def _query_identity(conn: AsyncConnection, mpi_id: str) -> Any:
    """The identity row of exactly this ID, merged or not (``Registry.find`` follows merges)."""
    return (await conn.execute(sa.select(t.identity).where(t.identity.c.mpi_id == mpi_id))).one()


async def _query_replaces(conn: AsyncConnection, mpi_ids: list[str]) -> dict[str, list[str]]:
    """{ID: every ID merged into it, directly or through another merged ID}.

    Merge groups are found through ``merge_link`` (what sync settles groups from; indexed
    both ways), then their identity rows by ID: ``identity.merged_into`` alone is no good
    for this on SQLite, where ANALYZE sees a column of NULLs and scans the whole table.
    """
    ml = t.merge_link
    seen = set(mpi_ids)
    frontier = list(mpi_ids)
    for _ in range(_CHAIN_LIMIT):
        if not frontier:
            break
        links = await conn.execute(
            sa.select(ml.c.source, ml.c.target).where(sa.or_(ml.c.source.in_(frontier), ml.c.target.in_(frontier)))
        )
        frontier = sorted({end for link in links for end in link} - seen)
        seen.update(frontier)
    if len(seen) == len(set(mpi_ids)):
        return {}
    i = t.identity
    rows = (
        await conn.execute(
            sa.select(i.c.mpi_id, i.c.merged_into).where(i.c.mpi_id.in_(sorted(seen))).order_by(i.c.merged_at, i.c.mpi_id)
        )
    ).all()
    children: dict[str, list[str]] = {}
    for mpi_id, into in rows:
        if into is not None:
            children.setdefault(into, []).append(mpi_id)
    out: dict[str, list[str]] = {}
    for wanted in mpi_ids:
        below: list[str] = []
        todo = list(children.get(wanted, []))
        while todo and len(below) < _CHAIN_LIMIT * _CHAIN_LIMIT:
            current = todo.pop(0)
            if current in below or current == wanted:
                continue
            below.append(current)
            todo.extend(children.get(current, []))
        if below:
            out[wanted] = below
    return out


async def _query_views(conn: AsyncConnection, rows: list[Any]) -> tuple[list[dict[str, Any]], dict[str, list[str]]]:
    """``Registry.view`` of many identity rows, and the IDs merged into each, in one query.

    One UNION ALL reads the rows' external ids, programmes and merge links; only identities
    with merge links (rare) cost the queries of ``_query_replaces`` more.
    """
    if not rows:
        return [], {}
    pks = [r.pk for r in rows]
    mpi_ids = [r.mpi_id for r in rows]
    e, p, ml = t.external_id, t.programme, t.merge_link
    text = sa.String(40)
    extras = sa.union_all(
        sa.select(sa.literal("e"), sa.cast(e.c.identity_pk, text), e.c.system, e.c.value).where(
            e.c.identity_pk.in_(pks)
        ),
        sa.select(sa.literal("p"), sa.cast(p.c.identity_pk, text), p.c.programme_type, p.c.linked_at).where(
            p.c.identity_pk.in_(pks)
        ),
        sa.select(sa.literal("m"), ml.c.source, ml.c.target, ml.c.target).where(
            sa.or_(ml.c.source.in_(mpi_ids), ml.c.target.in_(mpi_ids))
        ),
    )
    external: dict[int, dict[str, str]] = {pk: {} for pk in pks}
    programmes: dict[int, list[tuple[str, str]]] = {pk: [] for pk in pks}
    linked = False
    for kind, key, a, b in await conn.execute(extras):
        if kind == "e":
            external[int(key)][a] = b
        elif kind == "p":
            programmes[int(key)].append((b, a))
        else:
            linked = True
    replaces = await _query_replaces(conn, mpi_ids) if linked else {}
    views = [
        {
            "mpi_id": r.mpi_id,
            "first_name": r.first_name,
            "last_name": r.last_name,
            "date_of_birth": r.date_of_birth.isoformat() if r.date_of_birth else None,
            "gender": r.gender,
            "region_code": r.region_code,
            "country_code": r.country_code,
            "phone_number": r.phone_number,
            "programmes": [{"programme_type": kind, "linked_at": api_time(at)} for at, kind in sorted(programmes[r.pk])],
            "external_ids": external[r.pk],
            "status": r.status,
            "created_at": api_time(r.created_at),
            "updated_at": api_time(r.updated_at),
        }
        for r in rows
    ]
    return views, replaces


async def _query_holder(conn: AsyncConnection, system: str, value: str) -> str | None:
    """The MPI ID that holds external id ``system``/``value`` (merges not followed)."""
    return (
        await conn.execute(
            sa.select(t.identity.c.mpi_id)
            .join(t.external_id, t.external_id.c.identity_pk == t.identity.c.pk)
            .where(t.external_id.c.system == system, t.external_id.c.value == value)
        )
    ).scalar()


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


async def _query_search(
    conn: AsyncConnection, registry: Registry, systems: Systems, c: Criteria
) -> tuple[int, list[Any]]:
    """The Patient search: (total, the page's identity rows), active identities only.

    Every name word narrows through the ``name_token`` index (the rarest word drives, the
    others are index probes). The index does not say whether a word is in the first or the
    last name, so with ``family`` or ``given`` the narrowed (pk, names) are read and checked
    here before counting and paging; otherwise SQL counts and pages.
    """
    i, nt = t.identity, t.name_token
    conditions: list[Any] = [i.c.status == "active"]
    for raw in c.ids:
        try:
            found = await find(conn, raw)
        except (NotFound, BadRequest):
            return 0, []
        conditions.append(i.c.pk == found.row.pk)
    for system, value in c.identifiers:
        conditions.append(await _identifier_condition(conn, registry, systems, system, value))
    words = c.words
    if words:
        freq = registry.frequencies

        def share(w: str) -> float:
            return max(freq.first_name_share(w), freq.last_name_share(w)) - len(w) * 1e-9

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
        conditions.append(i.c.gender == c.gender if c.gender else sa.false())
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


async def _identifier_condition(
    conn: AsyncConnection, registry: Registry, systems: Systems, system: str | None, value: str
) -> Any:
    """The identities holding an identifier: the MPI ID (following merges) or an external id."""
    i, e = t.identity, t.external_id
    mpi_pk: int | None = None
    if system is None or system == systems.mpi_id:
        try:
            mpi_pk = (await find(conn, value)).row.pk
        except NotFound:
            mpi_pk = None
        except BadRequest:
            if system is not None:
                raise  # an MPI ID with a typo: 400 as natively
    if system == systems.mpi_id:
        return i.c.pk == mpi_pk if mpi_pk is not None else sa.false()
    if system is None:
        holders = sa.select(e.c.identity_pk).where(e.c.value == value)
    else:
        native = systems.native(system)
        if native is None:
            return sa.false()
        holders = sa.select(e.c.identity_pk).where(e.c.system == native, e.c.value == value)
    held = i.c.pk.in_(holders)
    return sa.or_(held, i.c.pk == mpi_pk) if mpi_pk is not None else held
