"""The registry: what the API does with identities, as domain operations over a Store.

Handlers parse a request, call one of these and serialize the answer. Each write is one
``store.write`` transaction that also appends its changes and its audit record; the writes
themselves are the identity layer's operations (``shared.identities``), the same ones bulk
import, the hub's dedup and sync call. IDs given by callers are checked (check character)
and followed through merges to the canonical identity before anything is read or written.
Reads go through the store's reader, never the writer.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from . import modelstore
from .errors import BadRequest, Duplicate, NotFound
from .identities import candidates, edit, family, register, search, views
from .identities import merge as merging
from .identities import unmerge as unmerging
from .identities.fields import DEMOGRAPHIC, Row, api_time, check_id, related_list
from .identities.lookup import external_ids_of, find, programme_count
from .matching import Matcher, MatchResult, NameFrequencies, Person, evidence_detail, person_of
from .review.items import open_pair_review
from .schemas import (
    LinkDhis2In,
    MatchIn,
    MergeIn,
    PatchIn,
    ProgrammeIn,
    RegisterIn,
    RelatedIn,
    SearchQuery,
    UnmergeIn,
)
from .storage import schema as t
from .storage.store import Store, Tx, utc_now

__all__ = ["Registry"]

B = TypeVar("B", RegisterIn, MatchIn)


class Registry:
    """The identity operations of the API, on one store, with the matcher and its name counts."""

    def __init__(self, store: Store, matcher: Matcher, frequencies: NameFrequencies, candidate_limit: int = 30) -> None:
        self.store = store
        self.matcher = matcher
        self.frequencies = frequencies
        self.candidate_limit = candidate_limit

    async def load_frequencies(self) -> None:
        """Name frequencies come from the registry itself: read them once at start-up.

        Every process that scores calls this first: the matcher model this replica was given
        (``shared.modelstore``: trained at the hub, brought by sync) replaces the shipped one here.
        """
        await modelstore.refresh(self.store, self.matcher)
        async with self.store.read() as conn:
            # The same fields as every later add and remove: the counts must agree with them.
            i = t.identity
            rows = await conn.stream(
                sa.select(i.c.first_name, i.c.last_name, i.c.date_of_birth, i.c.gender, i.c.region_code, i.c.phone_number)
                .where(i.c.status == "active")
            )
            async for row in rows:
                self.frequencies.add(person_of(row))

    # -- reads ------------------------------------------------------------------------

    async def get(self, mpi_id: str, actor: str) -> dict[str, Any]:
        """GET /mpi/{mpi_id}: one statement, on the reader."""
        async with self.store.read() as conn:
            found = await views.whole(conn, self.store.dialect, mpi_id)
        self.store.audit_read(actor, "read", found.row.mpi_id, requested=found.requested)
        return views.view(found)

    async def search(self, query: SearchQuery, actor: str) -> dict[str, Any]:
        async with self.store.read() as conn:
            answer = await search.search(conn, self.frequencies, query)
        self.store.audit_read(actor, "search", None, returned=[item["mpi_id"] for item in answer["items"]])
        return answer

    # -- matching ---------------------------------------------------------------------

    async def candidates(self, conn: AsyncConnection, person: Person, exclude: int | None = None) -> list[tuple[Row, Person]]:
        """Active identities to score against ``person``, most promising first (``identities.candidates``)."""
        (found,) = await candidates.candidates(conn, [person], self.candidate_limit)
        return [(row, p) for row, p in found if row.pk != exclude]

    async def rank(
        self, conn: AsyncConnection, person: Person, limit: int, min_score: float | None = None
    ) -> list[tuple[Row, MatchResult]]:
        return self.matcher.rank(person, await self.candidates(conn, person), limit=limit, min_score=min_score)

    async def match(self, body: MatchIn, actor: str) -> dict[str, Any]:
        async with self.store.read() as conn:
            body = await self._canonical_links(conn, body, None)
            person = self.person(body)
            ranked = await self.rank(conn, person, body.limit, body.min_score)
        matches = [
            {
                "mpi_id": row.mpi_id,
                "similarity_score": result.score,
                "matched_fields": result.matched_fields,
                "confidence": result.band or "unlikely",
                "date_of_birth_estimated": bool(row.date_of_birth_estimated),
            }
            for row, result in ranked
        ]
        self.store.audit_read(actor, "match", None, returned=[m["mpi_id"] for m in matches])
        return {"matches": matches}

    # -- register ---------------------------------------------------------------------

    @staticmethod
    def person(body: RegisterIn | MatchIn) -> Person:
        return person_of(body, body.external_ids)

    @staticmethod
    async def _canonical_links(conn: AsyncConnection, body: B, own: Row | None) -> B:
        """The body with its caregiver links checked and pointing at canonical identities (``family.check_links``)."""
        if not body.related_persons:
            return body
        stored = await family.check_links(conn, body.related_persons, own)
        links = [RelatedIn.model_validate(x) for x in related_list(stored)]
        return body.model_copy(update={"related_persons": links})

    def blocks(self, result: MatchResult) -> bool:
        """Whether a match stops a registration with 409: certain, and no hard conflict (twins...)."""
        return result.score >= self.matcher.thresholds.certain and result.hard_conflict is None

    async def register(self, body: RegisterIn, actor: str) -> dict[str, Any]:
        async with self.store.write(actor) as tx:
            # Matching inside the write lock: two clerks registering the same mother at once
            # cannot both slip past the duplicate check.
            mpi_id, best = await self.register_in(tx, body)
        return {"mpi_id": mpi_id, "status": "created", "confidence": self.confidence(best), "created_at": api_time(tx.now)}

    def confidence(self, best: tuple[Row, MatchResult] | None) -> str:
        """The 201's ``confidence``: ``new_identity`` when nobody in the registry scored
        ``probable`` or better; ``probable`` when someone did (a supervisor sees the pair in the
        review queue); ``certain`` when the clerk registered over a blocking match (``force_create``).
        """
        if best is None or best[1].score < self.matcher.thresholds.probable:
            return "new_identity"
        return "certain" if self.blocks(best[1]) else "probable"

    async def register_in(self, tx: Tx, body: RegisterIn) -> tuple[str, tuple[Row, MatchResult] | None]:
        """Register inside ``tx``: (new ID, best match). Raises Duplicate or Conflict before writing anything."""
        body = await self._canonical_links(tx.conn, body, None)
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
        await edit.check_external_ids_free(tx.conn, body.external_ids or {}, None)
        (mpi_id,) = await self.insert_new(tx, [(body, person)])
        if blocking and best is not None:
            # A clerk overrode a blocking match: a supervisor must see it.
            await self.open_review(
                tx, "force_create", [best[0].mpi_id, mpi_id], best[1].score, best[1].matched_fields, evidence_detail(best[1])
            )
            tx.audit("force_create_override", mpi_id, existing_mpi_id=best[0].mpi_id, score=best[1].score)
        elif best is not None and best[1].score >= self.matcher.thresholds.probable:
            # Evidence too thin to refuse, too strong to ignore: registered, and a supervisor decides.
            await self.open_review(
                tx, "register_probable", [best[0].mpi_id, mpi_id], best[1].score, best[1].matched_fields, evidence_detail(best[1])
            )
        return mpi_id, best

    async def insert_new(self, tx: Tx, items: list[tuple[RegisterIn, Person]]) -> list[str]:
        """Write new identities with their index rows, changes and audit records; no matching here.

        ``register_in`` calls it after the duplicate check; loading a list that is known to
        hold no duplicates (a benchmark population, a migrated legacy registry) calls it
        with many items at once, which costs one statement per table, not per person.
        """
        return await register.create(tx, self.frequencies, self.store.node_id, self.store.meta.get("country"), items)

    async def open_review(
        self,
        tx: Tx,
        reason: str,
        mpi_ids: list[str],
        score: float | None,
        matched_fields: list[str],
        detail: dict[str, Any] | None = None,
    ) -> bool:
        """Queue a pair for a supervisor (not when it was decided ``not_same`` or is queued already).

        ``detail``: e.g. ``evidence_detail(result)``, the features that carried the score.
        """
        first, second = mpi_ids
        return await open_pair_review(tx, reason, first, second, score, matched_fields, detail)

    # -- patch ------------------------------------------------------------------------

    async def patch(self, mpi_id: str, body: PatchIn, actor: str) -> dict[str, Any]:
        async with self.store.write(actor) as tx:
            found = await find(tx.conn, mpi_id)
            row = found.row
            changes = {f: getattr(body, f) for f in DEMOGRAPHIC if f in body.model_fields_set}
            if "related_persons" in changes:
                given = body.related_persons or []
                changes["related_persons"] = await family.check_links(tx.conn, given, row) if given else None
            if changes.get("date_of_birth_estimated") and row.date_of_birth is None and changes.get("date_of_birth") is None:
                raise BadRequest("date_of_birth_estimated needs a date of birth", code="validation_error")
            changes = {f: v for f, v in changes.items() if getattr(row, f) != v}
            external = body.external_ids or {}
            old_external = (await external_ids_of(tx.conn, [row.pk]))[row.pk]
            await edit.check_external_ids_free(tx.conn, external, row.pk)
            await edit.set_fields(tx, self.frequencies, self.store.node_id, row, changes)
            for system, value in external.items():
                if old_external.get(system) != value:
                    await edit.set_external_id(tx, row.pk, row.mpi_id, system, value)
            if changes or external:
                await edit.touch(tx, row.pk)
            tx.audit("patch", row.mpi_id, fields=sorted([*changes, *external]), requested=found.requested)
            body_out = views.view(await views.whole(tx.conn, self.store.dialect, found.requested))
        return body_out

    # -- DHIS2 ------------------------------------------------------------------------

    async def link_dhis2(self, mpi_id: str, body: LinkDhis2In, actor: str) -> dict[str, Any]:
        async with self.store.write(actor) as tx:
            found = await find(tx.conn, mpi_id)
            row = found.row
            await edit.check_external_ids_free(tx.conn, {"dhis2_uid": body.dhis2_uid}, row.pk)
            x = t.external_id.c
            current = (
                await tx.conn.execute(
                    sa.select(x.value, x.linked_at).where(x.identity_pk == row.pk, x.system == "dhis2_uid")
                )
            ).first()
            if current is not None and current.value == body.dhis2_uid:
                linked_at = current.linked_at  # linking again is a no-op
            else:
                await edit.set_external_id(tx, row.pk, found.requested, "dhis2_uid", body.dhis2_uid, body.dhis2_instance_url)
                await edit.touch(tx, row.pk)
                linked_at = tx.now
            tx.audit("link_dhis2", row.mpi_id, dhis2_uid=body.dhis2_uid)
        return {"mpi_id": row.mpi_id, "dhis2_uid": body.dhis2_uid, "linked_at": api_time(linked_at)}

    async def resolve_dhis2(self, uid: str, actor: str) -> dict[str, Any]:
        async with self.store.read() as conn:
            x = t.external_id.c
            mpi_id = (
                await conn.execute(
                    sa.select(t.identity.c.mpi_id)
                    .join(t.external_id, x.identity_pk == t.identity.c.pk)
                    .where(x.system == "dhis2_uid", x.value == uid)
                )
            ).scalar()
            if mpi_id is None:
                raise NotFound(f"DHIS2 UID {uid} is not linked to an MPI identity")
            found = await find(conn, mpi_id)
        self.store.audit_read(actor, "resolve_dhis2", found.row.mpi_id, dhis2_uid=uid)
        return {"dhis2_uid": uid, "mpi_id": found.row.mpi_id, "resolved_at": api_time(utc_now())}

    # -- programmes -------------------------------------------------------------------

    async def enrol(self, mpi_id: str, body: ProgrammeIn, actor: str) -> tuple[bool, dict[str, Any]]:
        """Enrol an identity in a programme; (created, answer). Enrolling twice changes nothing."""
        linked_at = (
            body.linked_at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z") if body.linked_at else None
        )
        async with self.store.write(actor) as tx:
            found = await find(tx.conn, mpi_id)
            created = await edit.add_programme(tx, found.row, body.programme_type, linked_at or tx.now, found.requested)
            count = await programme_count(tx.conn, found.row.pk)
            p = t.programme.c
            at = (
                await tx.conn.execute(
                    sa.select(p.linked_at).where(p.identity_pk == found.row.pk, p.programme_type == body.programme_type)
                )
            ).scalar_one()
            tx.audit("enrol", found.row.mpi_id, programme_type=body.programme_type, created=created)
        return created, {
            "mpi_id": found.row.mpi_id,
            "programme_type": body.programme_type,
            "linked_at": api_time(at),
            "programme_count": count,
        }

    # -- merge ------------------------------------------------------------------------

    async def merge(self, body: MergeIn, actor: str) -> dict[str, Any]:
        async with self.store.write(actor) as tx:
            return await self.merge_in(tx, body)

    async def merge_in(self, tx: Tx, body: MergeIn) -> dict[str, Any]:
        """``merge`` inside the caller's transaction; an ``ApiError`` is raised before anything is written."""
        source = await find(tx.conn, body.source_mpi_id)
        target = await find(tx.conn, body.target_mpi_id)
        migrated = await merging.merge(tx, self.frequencies, self.store.node_id, source, target, body.reason, body.keep_target)
        tx.audit("merge", source.row.mpi_id, target=target.row.mpi_id, reason=body.reason, programmes_migrated=migrated)
        return {
            "canonical_mpi_id": target.row.mpi_id,
            "merged_mpi_id": source.row.mpi_id,
            "merged_at": api_time(tx.now),
            "programmes_migrated": migrated,
        }

    async def unmerge(self, body: UnmergeIn, actor: str) -> dict[str, Any]:
        """POST /mpi/unmerge: the merged-away identity is active again, with what is its own."""
        async with self.store.write(actor) as tx:
            canonical, _, _ = await unmerging.unmerge(tx, self.frequencies, body.mpi_id, body.reason)
        return {
            "mpi_id": check_id(body.mpi_id),
            "previous_canonical_mpi_id": canonical,
            "status": "active",
            "unmerged_at": api_time(tx.now),
        }
