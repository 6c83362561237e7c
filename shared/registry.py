"""The registry: identities and what hangs off them, as domain operations over a Store.

Handlers parse a request, call one of these and serialize the answer. Each write is one
``store.write`` transaction that also appends its changes and its audit record. IDs given
by callers are checked (check character) and followed through merges to the canonical
identity before anything is read or written.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from . import ids
from .errors import BadRequest, Conflict, Duplicate, NotFound
from .matching import (
    Matcher,
    MatchResult,
    NameFrequencies,
    Person,
    index_keys,
    name_tokens,
    person_of,
    query_keys,
)
from .review import open_pair_review
from .schemas import LinkDhis2In, MatchIn, MergeIn, PatchIn, ProgrammeIn, RegisterIn, SearchQuery
from .storage import schema as t
from .storage.store import Store, Tx, utc_now
from .sync.apply import stamp

__all__ = ["Registry", "check_id", "move_programmes_and_cards", "person_of"]

_DEMOGRAPHIC = ("first_name", "last_name", "date_of_birth", "gender", "region_code", "country_code", "phone_number")
_MERGE_CHAIN_LIMIT = 64  # merges form a forest; a longer chain means a corrupt database


def check_id(text: str) -> str:
    """A caller's MPI ID, normalised, or 400 invalid_mpi_id / invalid_check_character."""
    try:
        return str(ids.parse(text))
    except ids.IdError as exc:
        raise BadRequest(exc.message, code=exc.code) from None


_PAIR = "~"  # sorts after every letter: pair tokens never fall in the range of a name prefix


def search_tokens(first_name: str, last_name: str) -> set[str]:
    """What the search index holds for a name: each word, and each ordered pair of words.

    A pair token ``~FATOU DIALLO`` lets the usual query, whole words then the beginning
    of the last one, be one range scan however common each word is on its own.
    """
    words = list(dict.fromkeys([*name_tokens(first_name), *name_tokens(last_name)]))
    pairs = {f"{_PAIR}{a} {b}" for a in words for b in words if a != b}
    return {w[:60] for w in words} | {p[:60] for p in pairs}


async def move_programmes_and_cards(tx: Tx, from_pk: int, to_pk: int) -> None:
    """What hangs off a merged identity goes to the canonical one (programmes kept once)."""
    await tx.conn.execute(
        tx.insert_ignore(t.programme).from_select(
            ["identity_pk", "programme_type", "linked_at"],
            sa.select(sa.literal(to_pk), t.programme.c.programme_type, t.programme.c.linked_at).where(
                t.programme.c.identity_pk == from_pk
            ),
        )
    )
    await tx.conn.execute(sa.delete(t.programme).where(t.programme.c.identity_pk == from_pk))
    await tx.conn.execute(sa.update(t.card).where(t.card.c.identity_pk == from_pk).values(identity_pk=to_pk))


def _iso(value: dt.date | None) -> str | None:
    return value.isoformat() if value is not None else None


def api_time(value: str) -> str:
    """API timestamps are whole seconds, as in the reference (``2026-05-15T09:00:00Z``)."""
    return value[:19] + "Z"


@dataclass(frozen=True, slots=True)
class Found:
    """An identity as stored, reached from the ID a caller gave."""

    row: Any
    requested: str

    @property
    def merged_from(self) -> str | None:
        return self.requested if self.requested != self.row.mpi_id else None


class Registry:
    def __init__(self, store: Store, matcher: Matcher, frequencies: NameFrequencies, candidate_limit: int = 300) -> None:
        self.store = store
        self.matcher = matcher
        self.frequencies = frequencies
        self.candidate_limit = candidate_limit

    async def load_frequencies(self) -> None:
        """Name frequencies come from the registry itself: read them once at start-up."""
        async with self.store.read() as conn:
            # The same fields as every later add and remove: the counts must agree with them.
            i = t.identity
            rows = await conn.stream(
                sa.select(i.c.first_name, i.c.last_name, i.c.date_of_birth, i.c.gender, i.c.region_code, i.c.phone_number)
                .where(i.c.status == "active")
            )
            async for row in rows:
                self.frequencies.add(person_of(row))

    # -- lookups ----------------------------------------------------------------------

    async def find(self, conn: AsyncConnection, mpi_id: str) -> Found:
        """The canonical identity for an ID, following merges; 404 when no such ID exists."""
        requested = check_id(mpi_id)
        current = requested
        for _ in range(_MERGE_CHAIN_LIMIT):
            row = (await conn.execute(sa.select(t.identity).where(t.identity.c.mpi_id == current))).first()
            if row is None:
                raise NotFound(f"no identity {current}")
            if row.merged_into is None:
                return Found(row, requested)
            current = row.merged_into
        raise Conflict("merge chain too long", code="corrupt_merge_chain")

    async def external_ids_of(self, conn: AsyncConnection, pks: list[int]) -> dict[int, dict[str, str]]:
        """{pk: {system: value}} for these identities."""
        return await self._external_ids(conn, pks)

    async def _external_ids(self, conn: AsyncConnection, pks: list[int]) -> dict[int, dict[str, str]]:
        out: dict[int, dict[str, str]] = {pk: {} for pk in pks}
        if pks:
            rows = await conn.execute(
                sa.select(t.external_id.c.identity_pk, t.external_id.c.system, t.external_id.c.value).where(
                    t.external_id.c.identity_pk.in_(pks)
                )
            )
            for pk, system, value in rows:
                out[pk][system] = value
        return out

    async def view(self, conn: AsyncConnection, found: Found) -> dict[str, Any]:
        """The full identity, in the shape of GET /mpi/{mpi_id}."""
        row = found.row
        programmes = await conn.execute(
            sa.select(t.programme.c.programme_type, t.programme.c.linked_at)
            .where(t.programme.c.identity_pk == row.pk)
            .order_by(t.programme.c.linked_at, t.programme.c.programme_type)
        )
        external = (await self._external_ids(conn, [row.pk]))[row.pk]
        body: dict[str, Any] = {
            "mpi_id": row.mpi_id,
            "first_name": row.first_name,
            "last_name": row.last_name,
            "date_of_birth": _iso(row.date_of_birth),
            "gender": row.gender,
            "region_code": row.region_code,
            "country_code": row.country_code,
            "phone_number": row.phone_number,
            "programmes": [{"programme_type": p, "linked_at": api_time(at)} for p, at in programmes],
            "external_ids": external,
            "status": row.status,
            "created_at": api_time(row.created_at),
            "updated_at": api_time(row.updated_at),
        }
        if found.merged_from:
            body["merged_from"] = found.merged_from
        return body

    async def get(self, mpi_id: str, actor: str) -> dict[str, Any]:
        async with self.store.read() as conn:
            found = await self.find(conn, mpi_id)
            body = await self.view(conn, found)
        self.store.audit_read(actor, "read", found.row.mpi_id, requested=found.requested)
        return body

    # -- matching ---------------------------------------------------------------------

    async def candidates(self, conn: AsyncConnection, person: Person, exclude: int | None = None) -> list[tuple[Any, Person]]:
        """Active identities sharing a blocking key with ``person``, most shared keys first."""
        keys = query_keys(person)
        if not keys:
            return []
        hits = (
            sa.select(t.blocking_key.c.identity_pk)
            .where(t.blocking_key.c.key.in_(keys))
            .group_by(t.blocking_key.c.identity_pk)
            .order_by(sa.func.count().desc())
            .limit(self.candidate_limit)
            .subquery()
        )
        rows = (
            await conn.execute(
                sa.select(t.identity).join(hits, hits.c.identity_pk == t.identity.c.pk).where(t.identity.c.status == "active")
            )
        ).all()
        rows = [r for r in rows if r.pk != exclude]
        if not person.external_ids:
            # A missing external id is neutral evidence: no need to read the candidates' ids.
            return [(r, person_of(r)) for r in rows]
        external = await self._external_ids(conn, [r.pk for r in rows])
        return [(r, person_of(r, external[r.pk])) for r in rows]

    async def rank(
        self, conn: AsyncConnection, person: Person, limit: int, min_score: float | None = None
    ) -> list[tuple[Any, MatchResult]]:
        return self.matcher.rank(person, await self.candidates(conn, person), limit=limit, min_score=min_score)

    async def match(self, body: MatchIn, actor: str) -> dict[str, Any]:
        person = self.person(body)
        async with self.store.read() as conn:
            ranked = await self.rank(conn, person, body.limit, body.min_score)
        matches = [
            {
                "mpi_id": row.mpi_id,
                "similarity_score": result.score,
                "matched_fields": result.matched_fields,
                "confidence": result.band or "unlikely",
            }
            for row, result in ranked
        ]
        self.store.audit_read(actor, "match", None, returned=[m["mpi_id"] for m in matches])
        return {"matches": matches}

    # -- register ---------------------------------------------------------------------

    @staticmethod
    def person(body: RegisterIn | MatchIn) -> Person:
        return person_of(body, body.external_ids)

    def blocks(self, result: MatchResult) -> bool:
        """Whether a match stops a registration with 409: certain, and no hard conflict (twins...)."""
        return result.score >= self.matcher.thresholds.certain and result.hard_conflict is None

    async def register(self, body: RegisterIn, actor: str) -> dict[str, Any]:
        async with self.store.write(actor) as tx:
            # Matching inside the write lock: two clerks registering the same mother at once
            # cannot both slip past the duplicate check.
            mpi_id, _ = await self.register_in(tx, body)
        return {"mpi_id": mpi_id, "status": "created", "confidence": "new_identity", "created_at": api_time(tx.now)}

    async def register_in(self, tx: Tx, body: RegisterIn) -> tuple[str, tuple[Any, MatchResult] | None]:
        """Register inside ``tx``: (new ID, best match). Raises Duplicate or Conflict before writing anything."""
        person = self.person(body)
        ranked = await self.rank(tx.conn, person, limit=1)
        best = ranked[0] if ranked else None
        blocking = best is not None and self.blocks(best[1])
        if blocking and not body.force_create:
            assert best is not None
            raise Duplicate(
                "A matching beneficiary already exists in the registry.",
                existing_mpi_id=best[0].mpi_id,
                similarity_score=best[1].score,
                matched_fields=best[1].matched_fields,
                action="use_existing_or_review",
            )
        await self._check_external_ids_free(tx.conn, body.external_ids or {}, None)
        (mpi_id,) = await self.insert_new(tx, [(body, person)])
        if blocking and best is not None:
            # A clerk overrode a blocking match: a supervisor must see it.
            await self.open_review(tx, "force_create", [best[0].mpi_id, mpi_id], best[1].score, best[1].matched_fields)
            tx.audit("force_create_override", mpi_id, existing_mpi_id=best[0].mpi_id, score=best[1].score)
        return mpi_id, best

    async def index_identity(self, tx: Tx, pk: int, person: Person) -> None:
        """(Re)write the search tokens and blocking keys of one identity (sync uses it too)."""
        await self._index(tx, pk, person)

    async def unindex_identity(self, tx: Tx, pk: int) -> None:
        await self._unindex(tx, pk)

    async def index_new(self, tx: Tx, people: list[tuple[int, Person]]) -> None:
        """Index identities that have no tokens nor keys yet, in two bulk inserts."""
        tokens = [
            {"token": tok, "identity_pk": pk}
            for pk, person in people
            for tok in search_tokens(person.first_name, person.last_name)
        ]
        keys = [{"key": k, "identity_pk": pk} for pk, person in people for k in set(index_keys(person))]
        await tx.bulk_insert(t.name_token, tokens)
        await tx.bulk_insert(t.blocking_key, keys)

    async def insert_new(self, tx: Tx, items: list[tuple[RegisterIn, Person]]) -> list[str]:
        """Write new identities with their index rows, changes and audit records; no matching here.

        ``register_in`` calls it after the duplicate check; loading a list that is known to
        hold no duplicates (a benchmark population, a migrated legacy registry) calls it
        with many items at once, which costs one statement per table, not per person.
        """
        records: list[dict[str, Any]] = []
        for body, _ in items:
            mpi_id = tx.mint_id(self.store.meta.get("country", body.country_code), body.region_code)
            record: dict[str, Any] = {
                "mpi_id": mpi_id,
                "first_name": body.first_name,
                "last_name": body.last_name,
                "date_of_birth": body.date_of_birth,
                "gender": body.gender,
                "region_code": body.region_code,
                "country_code": body.country_code,
                "phone_number": body.phone_number,
                "status": "active",
                "created_at": tx.now,
                "updated_at": tx.now,
            }
            payload = {**record, "date_of_birth": _iso(body.date_of_birth), "external_ids": body.external_ids or {}}
            hlc = tx.change("identity.create", mpi_id, payload)
            record["clocks"] = json.dumps({f: stamp(hlc, self.store.node_id) for f in _DEMOGRAPHIC})
            records.append(record)
            tx.audit("register", mpi_id, force_create=body.force_create)
        result = await tx.conn.execute(
            sa.insert(t.identity).returning(t.identity.c.pk, sort_by_parameter_order=True), records
        )
        pks = list(result.scalars().all())
        tokens: list[dict[str, Any]] = []
        keys: list[dict[str, Any]] = []
        external: list[dict[str, Any]] = []
        for pk, (body, person) in zip(pks, items, strict=True):
            tokens.extend({"token": tok, "identity_pk": pk} for tok in search_tokens(person.first_name, person.last_name))
            keys.extend({"key": k, "identity_pk": pk} for k in index_keys(person))
            external.extend(
                {"system": system, "value": value, "identity_pk": pk, "linked_at": tx.now}
                for system, value in (body.external_ids or {}).items()
            )
        for table, rows in ((t.name_token, tokens), (t.blocking_key, keys), (t.external_id, external)):
            if rows:
                await tx.conn.execute(sa.insert(table), rows)
        people = [person for _, person in items]

        def _count_names() -> None:
            for person in people:
                self.frequencies.add(person)

        tx.after_commit.append(_count_names)
        return [r["mpi_id"] for r in records]

    async def _index(self, tx: Tx, pk: int, person: Person) -> None:
        """(Re)write the search tokens and blocking keys of one identity."""
        await tx.conn.execute(sa.delete(t.name_token).where(t.name_token.c.identity_pk == pk))
        await tx.conn.execute(sa.delete(t.blocking_key).where(t.blocking_key.c.identity_pk == pk))
        tokens = search_tokens(person.first_name, person.last_name)
        if tokens:
            await tx.conn.execute(sa.insert(t.name_token), [{"token": tok, "identity_pk": pk} for tok in tokens])
        keys = index_keys(person)
        if keys:
            await tx.conn.execute(sa.insert(t.blocking_key), [{"key": k, "identity_pk": pk} for k in keys])

    async def _unindex(self, tx: Tx, pk: int) -> None:
        await tx.conn.execute(sa.delete(t.name_token).where(t.name_token.c.identity_pk == pk))
        await tx.conn.execute(sa.delete(t.blocking_key).where(t.blocking_key.c.identity_pk == pk))

    async def open_review(
        self, tx: Tx, reason: str, mpi_ids: list[str], score: float | None, matched_fields: list[str]
    ) -> bool:
        """Queue a pair for a supervisor (not when it was decided ``not_same`` or is queued already)."""
        first, second = mpi_ids
        return await open_pair_review(tx, reason, first, second, score, matched_fields)

    async def _check_external_ids_free(self, conn: AsyncConnection, external: dict[str, str], owner_pk: int | None) -> None:
        for system, value in external.items():
            holder = (
                await conn.execute(
                    sa.select(t.identity.c.mpi_id, t.identity.c.pk)
                    .join(t.external_id, t.external_id.c.identity_pk == t.identity.c.pk)
                    .where(t.external_id.c.system == system, t.external_id.c.value == value)
                )
            ).first()
            if holder is not None and holder.pk != owner_pk:
                raise Conflict(
                    f"{system} {value} is already linked to another identity",
                    code="external_id_in_use",
                    existing_mpi_id=holder.mpi_id,
                )

    async def _set_external_id(self, tx: Tx, pk: int, mpi_id: str, system: str, value: str, url: str | None = None) -> None:
        """One value per system per identity: a new value replaces the old one."""
        await tx.conn.execute(
            sa.delete(t.external_id).where(t.external_id.c.identity_pk == pk, t.external_id.c.system == system)
        )
        await tx.conn.execute(
            sa.insert(t.external_id).values(system=system, value=value, identity_pk=pk, instance_url=url, linked_at=tx.now)
        )
        tx.change("external_id.add", mpi_id, {"system": system, "value": value, "instance_url": url})

    # -- search -----------------------------------------------------------------------

    def _token_share(self, token: str) -> float:
        """How common a name token is in the registry (0 for unknown: assumed rare)."""
        return max(self.frequencies.first_name_share(token), self.frequencies.last_name_share(token))

    def _name_conditions(self, q: str) -> list[Any]:
        """Search semantics: every word of ``q`` is a whole word of the name, but the last,
        which may be the beginning of one (what a clerk types: ``fatou dia``).

        One word is a prefix range of words. Two or more: the pair (rarest whole word, last
        word) is one prefix range of pair tokens, and each other word one index probe.
        """
        words = list(dict.fromkeys(name_tokens(q)))
        if not words:
            return []
        i, nt = t.identity, t.name_token

        def prefix(value: str) -> tuple[Any, Any]:
            return nt.c.token >= value, nt.c.token < value[:-1] + chr(ord(value[-1]) + 1)

        if len(words) == 1:
            return [i.c.pk.in_(sa.select(nt.c.identity_pk).where(*prefix(words[0][:60])))]
        *whole, last = words
        anchor = min(whole, key=lambda w: (self._token_share(w), -len(w)))
        conditions: list[Any] = [i.c.pk.in_(sa.select(nt.c.identity_pk).where(*prefix(f"{_PAIR}{anchor} {last}"[:60])))]
        for n, word in enumerate(w for w in whole if w != anchor):
            probe = t.name_token.alias(f"nt{n}")
            conditions.append(sa.exists().where(probe.c.identity_pk == i.c.pk, probe.c.token == word[:60]))
        return conditions

    async def search(self, query: SearchQuery, actor: str) -> dict[str, Any]:
        i = t.identity
        conditions: list[Any] = [i.c.status == "active"]
        async with self.store.read() as conn:
            if query.mpi_id:
                try:
                    found = await self.find(conn, query.mpi_id)
                except NotFound:
                    return {"total": 0, "items": []}
                conditions.append(i.c.pk == found.row.pk)
            conditions.extend(self._name_conditions(query.q or ""))
            if query.region_code:
                conditions.append(i.c.region_code == query.region_code)
            if query.date_of_birth:
                conditions.append(i.c.date_of_birth == query.date_of_birth)
            if query.program:
                conditions.append(
                    i.c.pk.in_(sa.select(t.programme.c.identity_pk).where(t.programme.c.programme_type == query.program))
                )
            columns = [i.c.pk, i.c.mpi_id, i.c.first_name, i.c.last_name, i.c.date_of_birth, i.c.gender,
                       i.c.region_code, i.c.created_at]
            rows = (
                await conn.execute(
                    sa.select(*columns, sa.func.count().over().label("total"))
                    .where(*conditions)
                    .order_by(i.c.last_name, i.c.first_name, i.c.pk)
                    .limit(query.limit)
                    .offset(query.offset)
                )
            ).all()
            if rows:
                total = rows[0].total
            else:  # past the last page: the window had no row to count on
                total = (await conn.execute(sa.select(sa.func.count()).select_from(i).where(*conditions))).scalar_one()
            counts: dict[int, int] = {}
            if rows:
                enrolled = await conn.execute(
                    sa.select(t.programme.c.identity_pk, sa.func.count())
                    .where(t.programme.c.identity_pk.in_([r.pk for r in rows]))
                    .group_by(t.programme.c.identity_pk)
                )
                counts = {pk: n for pk, n in enrolled}
            items = [
                {
                    "mpi_id": r.mpi_id,
                    "first_name": r.first_name,
                    "last_name": r.last_name,
                    "date_of_birth": _iso(r.date_of_birth),
                    "gender": r.gender,
                    "region_code": r.region_code,
                    "programme_count": counts.get(r.pk, 0),
                    "created_at": api_time(r.created_at),
                }
                for r in rows
            ]
        self.store.audit_read(actor, "search", None, returned=[item["mpi_id"] for item in items])
        return {"total": total, "items": items}

    # -- patch ------------------------------------------------------------------------

    async def patch(self, mpi_id: str, body: PatchIn, actor: str) -> dict[str, Any]:
        async with self.store.write(actor) as tx:
            found = await self.find(tx.conn, mpi_id)
            row = found.row
            changes = {f: getattr(body, f) for f in _DEMOGRAPHIC if f in body.model_fields_set}
            changes = {f: v for f, v in changes.items() if getattr(row, f) != v}
            external = body.external_ids or {}
            old_external = (await self._external_ids(tx.conn, [row.pk]))[row.pk]
            await self._check_external_ids_free(tx.conn, external, row.pk)
            if changes:
                payload: dict[str, Any] = {f: (_iso(v) if isinstance(v, dt.date) else v) for f, v in changes.items()}
                clocks = json.loads(row.clocks or "{}")
                # The clocks of the values this write replaces: a replica holding another clock
                # knows the two writes were concurrent.
                payload["_base"] = {f: clocks.get(f) for f in changes}
                hlc = tx.change("identity.set", row.mpi_id, payload)
                clocks.update({f: stamp(hlc, self.store.node_id) for f in changes})
                await tx.conn.execute(
                    sa.update(t.identity)
                    .where(t.identity.c.pk == row.pk)
                    .values(**changes, clocks=json.dumps(clocks), updated_at=tx.now)
                )
            for system, value in external.items():
                if old_external.get(system) != value:
                    await self._set_external_id(tx, row.pk, row.mpi_id, system, value)
            if changes or external:
                await tx.conn.execute(sa.update(t.identity).where(t.identity.c.pk == row.pk).values(updated_at=tx.now))
            old_person = person_of(row)
            updated = (await tx.conn.execute(sa.select(t.identity).where(t.identity.c.pk == row.pk))).one()
            new_person = person_of(updated, {**old_external, **external})
            if changes:
                await self._index(tx, row.pk, new_person)
            tx.audit("patch", row.mpi_id, fields=sorted([*changes, *external]), requested=found.requested)
            body_out = await self.view(tx.conn, Found(updated, found.requested))

            def _refresh_frequencies() -> None:
                self.frequencies.remove(old_person)
                self.frequencies.add(new_person)

            if {"first_name", "last_name"} & changes.keys():
                tx.after_commit.append(_refresh_frequencies)
        return body_out

    # -- DHIS2 ------------------------------------------------------------------------

    async def link_dhis2(self, mpi_id: str, body: LinkDhis2In, actor: str) -> dict[str, Any]:
        async with self.store.write(actor) as tx:
            found = await self.find(tx.conn, mpi_id)
            row = found.row
            await self._check_external_ids_free(tx.conn, {"dhis2_uid": body.dhis2_uid}, row.pk)
            current = (
                await tx.conn.execute(
                    sa.select(t.external_id.c.value, t.external_id.c.linked_at).where(
                        t.external_id.c.identity_pk == row.pk, t.external_id.c.system == "dhis2_uid"
                    )
                )
            ).first()
            if current is not None and current.value == body.dhis2_uid:
                linked_at = current.linked_at  # linking again is a no-op
            else:
                await self._set_external_id(tx, row.pk, found.requested, "dhis2_uid", body.dhis2_uid, body.dhis2_instance_url)
                await tx.conn.execute(sa.update(t.identity).where(t.identity.c.pk == row.pk).values(updated_at=tx.now))
                linked_at = tx.now
            tx.audit("link_dhis2", row.mpi_id, dhis2_uid=body.dhis2_uid)
        return {"mpi_id": row.mpi_id, "dhis2_uid": body.dhis2_uid, "linked_at": api_time(linked_at)}

    async def resolve_dhis2(self, uid: str, actor: str) -> dict[str, Any]:
        async with self.store.read() as conn:
            pk = (
                await conn.execute(
                    sa.select(t.external_id.c.identity_pk).where(
                        t.external_id.c.system == "dhis2_uid", t.external_id.c.value == uid
                    )
                )
            ).scalar()
            if pk is None:
                raise NotFound(f"DHIS2 UID {uid} is not linked to an MPI identity")
            mpi_id = (await conn.execute(sa.select(t.identity.c.mpi_id).where(t.identity.c.pk == pk))).scalar_one()
            found = await self.find(conn, mpi_id)
        self.store.audit_read(actor, "resolve_dhis2", found.row.mpi_id, dhis2_uid=uid)
        return {"dhis2_uid": uid, "mpi_id": found.row.mpi_id, "resolved_at": api_time(utc_now())}

    # -- programmes -------------------------------------------------------------------

    async def enrol(self, mpi_id: str, body: ProgrammeIn, actor: str) -> tuple[bool, dict[str, Any]]:
        """Enrol an identity in a programme; (created, answer). Enrolling twice changes nothing."""
        linked_at = (
            body.linked_at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z") if body.linked_at else None
        )
        async with self.store.write(actor) as tx:
            found = await self.find(tx.conn, mpi_id)
            created = await self.add_programme(tx, found.row, body.programme_type, linked_at or tx.now, found.requested)
            count = await self.programme_count(tx.conn, found.row.pk)
            at = (
                await tx.conn.execute(
                    sa.select(t.programme.c.linked_at).where(
                        t.programme.c.identity_pk == found.row.pk, t.programme.c.programme_type == body.programme_type
                    )
                )
            ).scalar_one()
            tx.audit("enrol", found.row.mpi_id, programme_type=body.programme_type, created=created)
        return created, {
            "mpi_id": found.row.mpi_id,
            "programme_type": body.programme_type,
            "linked_at": api_time(at),
            "programme_count": count,
        }

    async def add_programme(self, tx: Tx, row: Any, programme_type: str, linked_at: str, named: str | None = None) -> bool:
        """Enrol ``row``; the change names the ID the caller gave (``named``), so an unmerge knows whose it was."""
        inserted = (
            await tx.conn.execute(
                tx.insert_ignore(t.programme)
                .values(identity_pk=row.pk, programme_type=programme_type, linked_at=linked_at)
                .returning(t.programme.c.programme_type)
            )
        ).first()
        if inserted is None:
            return False
        tx.change("programme.add", named or row.mpi_id, {"programme_type": programme_type, "linked_at": linked_at})
        await tx.conn.execute(sa.update(t.identity).where(t.identity.c.pk == row.pk).values(updated_at=tx.now))
        return True

    async def programme_count(self, conn: AsyncConnection, pk: int) -> int:
        return int(
            (
                await conn.execute(sa.select(sa.func.count()).select_from(t.programme).where(t.programme.c.identity_pk == pk))
            ).scalar_one()
        )

    # -- merge ------------------------------------------------------------------------

    async def merge(self, body: MergeIn, actor: str) -> dict[str, Any]:
        async with self.store.write(actor) as tx:
            source = await self.find(tx.conn, body.source_mpi_id)
            target = await self.find(tx.conn, body.target_mpi_id)
            if source.row.pk == target.row.pk:
                same = "they are already merged" if source.requested != target.requested else "the same ID was given twice"
                raise BadRequest(f"cannot merge an identity into itself: {same}", code="same_identity")
            s, g = source.row, target.row
            s_ext = (await self._external_ids(tx.conn, [s.pk]))[s.pk]
            g_ext = (await self._external_ids(tx.conn, [g.pk]))[g.pk]
            clash = sorted(k for k in s_ext.keys() & g_ext.keys() if s_ext[k] != g_ext[k])
            if clash:
                raise Conflict(
                    f"the two identities have different {', '.join(clash)}: unlink one first",
                    code="conflicting_external_ids",
                )
            migrated = (
                await tx.conn.execute(
                    sa.select(sa.func.count())
                    .select_from(t.programme)
                    .where(
                        t.programme.c.identity_pk == s.pk,
                        t.programme.c.programme_type.not_in(
                            sa.select(t.programme.c.programme_type).where(t.programme.c.identity_pk == g.pk)
                        ),
                    )
                )
            ).scalar_one()
            await move_programmes_and_cards(tx, s.pk, g.pk)
            await tx.conn.execute(sa.update(t.external_id).where(t.external_id.c.identity_pk == s.pk).values(identity_pk=g.pk))
            payload: dict[str, Any] = {
                "source": s.mpi_id, "target": g.mpi_id, "reason": body.reason, "keep_target": body.keep_target,
            }
            copied = {f: getattr(s, f) for f in _DEMOGRAPHIC if getattr(s, f) is not None}
            if not body.keep_target:
                payload["fields"] = {f: (_iso(v) if isinstance(v, dt.date) else v) for f, v in copied.items()}
            hlc = tx.change("identity.merge", s.mpi_id, payload)
            mark = stamp(hlc, self.store.node_id)
            target_values: dict[str, Any] = {"updated_at": tx.now}
            if not body.keep_target:
                # The survivor keeps the target's ID but takes the source's demographics.
                target_values.update(copied)
                target_clocks = json.loads(g.clocks or "{}")
                target_clocks.update({f: mark for f in copied})
                target_values["clocks"] = json.dumps(target_clocks)
            await tx.conn.execute(sa.update(t.identity).where(t.identity.c.pk == g.pk).values(**target_values))
            source_clocks = {**json.loads(s.clocks or "{}"), "_merged": mark}
            await tx.conn.execute(
                sa.update(t.identity)
                .where(t.identity.c.pk == s.pk)
                .values(
                    status="merged", merged_into=g.mpi_id, merged_at=tx.now, updated_at=tx.now,
                    clocks=json.dumps(source_clocks),
                )
            )
            # The merge is a link of the union-find that sync recomputes groups from.
            await tx.conn.execute(
                sa.insert(t.merge_link).values(
                    source=s.mpi_id, target=g.mpi_id, hlc=hlc, node_id=self.store.node_id, keep_target=body.keep_target
                )
            )
            await self._unindex(tx, s.pk)
            updated = (await tx.conn.execute(sa.select(t.identity).where(t.identity.c.pk == g.pk))).one()
            if not body.keep_target:
                await self._index(tx, g.pk, person_of(updated))
            tx.audit("merge", s.mpi_id, target=g.mpi_id, reason=body.reason, programmes_migrated=migrated)
            old_source, old_target, new_target = person_of(s), person_of(g), person_of(updated)

            def _refresh_frequencies() -> None:
                self.frequencies.remove(old_source)
                if not body.keep_target:
                    self.frequencies.remove(old_target)
                    self.frequencies.add(new_target)

            tx.after_commit.append(_refresh_frequencies)
        return {
            "canonical_mpi_id": g.mpi_id,
            "merged_mpi_id": s.mpi_id,
            "merged_at": api_time(tx.now),
            "programmes_migrated": int(migrated),
        }
