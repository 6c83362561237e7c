"""The one door from the FHIR face into the identity layer.

Every call FHIR makes into the registry goes through ``FhirService``: the identity
operations (``Registry.register``, ``patch``, ``person`` and ``rank``, what
``Registry.match`` does in a read that goes on to load the matched Patients), and the
identity layer's reads: ``lookup`` (an identity by ID, an external id's holder),
``views`` (the native view of one identity or a page of them, the IDs merged into each)
and ``search.people`` (the Patient search). FHIR reads no table itself, so an identity
field added to the native view appears in the Patient at once (``resources.patient``).

Nothing here writes: every write is a native operation, with its own change log and audit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from ..errors import NotFound
from ..identities import Found, check_id, row_of, view
from ..identities.lookup import holder_of
from ..identities.search import people
from ..identities.views import replaces_of, views_of, whole
from ..registry import Registry
from ..schemas import MatchIn, PatchIn, RegisterIn
from .resources import Systems
from .search import Criteria

__all__ = ["FhirService", "Match", "Record", "normalise_id"]


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
            return Record(view(await whole(conn, self.store.dialect, created["mpi_id"])))

    async def update(self, mpi_id: str, body: PatchIn, actor: str) -> Record:
        """PUT /fhir/Patient/{id}: the native PATCH (a merged-away ID writes to its canonical)."""
        view = await self.registry.patch(mpi_id, body, actor)
        view.pop("merged_from", None)
        async with self.store.read() as conn:
            replaces = await replaces_of(conn, [view["mpi_id"]])
        return Record(view, tuple(replaces.get(view["mpi_id"], [])))

    # -- reads ----------------------------------------------------------------------------

    async def read(self, mpi_id: str, actor: str) -> Record:
        """GET /fhir/Patient/{id}: a merged-away ID answers its own (inactive) Patient."""
        async with self.store.read() as conn:
            found = await whole(conn, self.store.dialect, mpi_id)
            if found.merged_from:
                # A merged-away identity's programmes and ids went to the canonical one: it has none left.
                row = await row_of(conn, found.requested)
                if row is None:  # find_whole reached it through this very row
                    raise NotFound(f"no Patient {found.requested}")
                body = view(Found(row, row.mpi_id))
                replaced_by: str | None = found.row.mpi_id
            else:
                body = view(found)
                replaced_by = None
            replaces = await replaces_of(conn, [body["mpi_id"]])
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
            total, rows = await people(conn, self.registry.frequencies, criteria)
            records = await self._records(conn, rows)
        self.store.audit_read(actor, "search", None, returned=[r.view["mpi_id"] for r in records], api="fhir")
        return total, records

    async def resolve(self, system: str, value: str, actor: str) -> Record:
        """GET /fhir/Patient/$ihe-pix: the identity holding an identifier, following merges."""
        async with self.store.read() as conn:
            if system == self.systems.mpi_id:
                found = await whole(conn, self.store.dialect, value)
            else:
                native = self.systems.native(system)
                holder = await holder_of(conn, native, value) if native else None
                if holder is None:
                    raise NotFound(f"no Patient has the identifier {system}|{value}")
                found = await whole(conn, self.store.dialect, holder)
        self.store.audit_read(actor, "pix_query", found.row.mpi_id, system=system, api="fhir")
        return Record(view(found))

    async def _records(self, conn: AsyncConnection, rows: list[Any]) -> list[Record]:
        views, replaces = await views_of(conn, rows)
        return [Record(v, tuple(replaces.get(v["mpi_id"], []))) for v in views]
