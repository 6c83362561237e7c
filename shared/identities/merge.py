"""Merging identities: the local merge, and the merge groups every replica recomputes from its links.

Merges are links of a union-find (``merge_link``). A group's canonical identity is
recomputed from all its links taken in clock order (a link whose source already belongs to
the target's group changes nothing), so merges commute and never form a cycle. What hangs
off a merged identity (programmes, cards, external ids) moves to the canonical one, and
writes made to the merged ID after its merge belong to the canonical identity too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from ..errors import ConflictingExternalIds, SameIdentity
from ..matching import NameFrequencies
from ..storage import schema as t
from ..storage.store import Tx
from .edit import claim_external_id, write_fields
from .family import relink, union
from .fields import DEMOGRAPHIC, Found, Row, clock_of, clocks_of, stamp, wire_value
from .index import index, recount, unindex
from .lookup import external_ids_of, row_by_pk, row_of

__all__ = ["Settled", "add_link", "link_was_undone", "merge", "move_belongings", "settle_group"]


async def move_belongings(tx: Tx, from_pk: int, to_pk: int) -> None:
    """What hangs off a merged identity goes to the canonical one (programmes kept once)."""
    p = t.programme
    await tx.conn.execute(
        tx.insert_ignore(p).from_select(
            ["identity_pk", "programme_type", "linked_at"],
            sa.select(sa.literal(to_pk), p.c.programme_type, p.c.linked_at).where(p.c.identity_pk == from_pk),
        )
    )
    await tx.conn.execute(sa.delete(p).where(p.c.identity_pk == from_pk))
    await tx.conn.execute(sa.update(t.card).where(t.card.c.identity_pk == from_pk).values(identity_pk=to_pk))


async def merge(
    tx: Tx, frequencies: NameFrequencies, node_id: str, source: Found, target: Found, reason: str | None, keep_target: bool
) -> int:
    """A local merge of ``source`` into ``target``; returns how many programmes moved over.

    Refused when both are one identity already, or when they hold different values of one
    external id. With ``keep_target`` false, the survivor keeps the target's ID but takes
    the source's demographics.
    """
    if source.row.pk == target.row.pk:
        same = "they are already merged" if source.requested != target.requested else "the same ID was given twice"
        raise SameIdentity(f"cannot merge an identity into itself: {same}")
    s, g = source.row, target.row
    external = await external_ids_of(tx.conn, [s.pk, g.pk])
    s_ext, g_ext = external[s.pk], external[g.pk]
    clash = sorted(k for k in s_ext.keys() & g_ext.keys() if s_ext[k] != g_ext[k])
    if clash:
        raise ConflictingExternalIds(f"the two identities have different {', '.join(clash)}: unlink one first")
    p = t.programme
    migrated = int(
        (
            await tx.conn.execute(
                sa.select(sa.func.count())
                .select_from(p)
                .where(
                    p.c.identity_pk == s.pk,
                    p.c.programme_type.not_in(sa.select(p.c.programme_type).where(p.c.identity_pk == g.pk)),
                )
            )
        ).scalar_one()
    )
    await move_belongings(tx, s.pk, g.pk)
    await tx.conn.execute(sa.update(t.external_id).where(t.external_id.c.identity_pk == s.pk).values(identity_pk=g.pk))
    payload: dict[str, Any] = {"source": s.mpi_id, "target": g.mpi_id, "reason": reason, "keep_target": keep_target}
    copied = {f: getattr(s, f) for f in DEMOGRAPHIC if getattr(s, f) is not None}
    if "related_persons" in copied:
        # The canonical identity keeps every caregiver either record had.
        copied["related_persons"] = union(g.related_persons, s.related_persons)
    if not keep_target:
        payload["fields"] = {f: wire_value(v) for f, v in copied.items()}
    hlc = tx.change("identity.merge", s.mpi_id, payload)
    mark = stamp(hlc, node_id)
    target_values: dict[str, Any] = {"updated_at": tx.now}
    if not keep_target:
        target_clocks = clocks_of(g)
        target_clocks.update({f: mark for f in copied})
        target_values.update(copied, clocks=json.dumps(target_clocks))
    await tx.conn.execute(sa.update(t.identity).where(t.identity.c.pk == g.pk).values(**target_values))
    if "related_persons" in target_values:
        await relink(tx, g.pk, target_values["related_persons"])
    await tx.conn.execute(
        sa.update(t.identity)
        .where(t.identity.c.pk == s.pk)
        .values(
            status="merged", merged_into=g.mpi_id, merged_at=tx.now, updated_at=tx.now,
            clocks=json.dumps({**clocks_of(s), "_merged": mark}),
        )
    )
    # The merge is a link of the union-find that sync recomputes groups from.
    await add_link(tx, s.mpi_id, g.mpi_id, hlc, node_id, keep_target)
    await unindex(tx, s.pk)
    recount(tx, frequencies, s, None)
    if not keep_target:
        await index(tx, g.pk)
        recount(tx, frequencies, g, await row_by_pk(tx.conn, g.pk))
    return migrated


async def add_link(tx: Tx, source: str, target: str, hlc: int, node_id: str, keep_target: bool) -> None:
    """One merge link (idempotent)."""
    await tx.conn.execute(
        tx.insert_ignore(t.merge_link).values(source=source, target=target, hlc=hlc, node_id=node_id, keep_target=keep_target)
    )


async def link_was_undone(tx: Tx, source: str, target: str, hlc: int, node_id: str) -> bool:
    """Whether an unmerge removed this link already (it arrived before the merge did)."""
    u = t.merge_unlink.c
    found = await tx.conn.execute(
        sa.select(u.source).where(u.source == source, u.target == target, u.hlc == hlc, u.node_id == node_id)
    )
    return found.first() is not None


@dataclass
class Settled:
    """What recomputing a group did: its canonical ID, and identities whose region a carried-over write changed."""

    canonical: str | None
    moved: list[tuple[Row, str]] = field(default_factory=list)


async def settle_group(tx: Tx, frequencies: NameFrequencies, mpi_id: str) -> Settled:
    """Recompute the canonical identity of the group ``mpi_id`` belongs to, and bring every member in line."""
    links: dict[tuple[str, str, int, str], bool] = {}
    seen: set[str] = set()
    todo = [mpi_id]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        m = t.merge_link.c
        for r in await tx.conn.execute(sa.select(t.merge_link).where(sa.or_(m.source == current, m.target == current))):
            links[(r.source, r.target, r.hlc, r.node_id)] = r.keep_target
            todo.extend([r.source, r.target])
    parent: dict[str, str] = {m: m for m in seen}
    merged_by: dict[str, list[Any]] = {}

    def find(x: str) -> str:
        while parent[x] != x:
            x = parent[x]
        return x

    for source, target, hlc, node_id in sorted(links, key=lambda k: (k[2], k[3], k[0], k[1])):
        rs, rt = find(source), find(target)
        if rs == rt:
            continue
        parent[rs] = rt
        for member in seen:
            if find(member) == rt and member not in merged_by and member != rt:
                merged_by[member] = [hlc, node_id]
    rows = {r.mpi_id: r for r in await tx.conn.execute(sa.select(t.identity).where(t.identity.c.mpi_id.in_(sorted(seen))))}
    settled = Settled(None)
    if not rows:
        return settled
    canonical = find(mpi_id)
    for member, row in rows.items():
        root = find(member)
        if member == root:
            if row.merged_into is not None or row.status != "active":
                await tx.conn.execute(
                    sa.update(t.identity)
                    .where(t.identity.c.pk == row.pk)
                    .values(status="active", merged_into=None, merged_at=None, updated_at=tx.now)
                )
                await index(tx, row.pk)
                recount(tx, frequencies, None, row)
            continue
        clocks = clocks_of(row)
        clocks["_merged"] = merged_by.get(member, clocks.get("_merged"))
        if row.merged_into != root or row.status != "merged":
            await tx.conn.execute(
                sa.update(t.identity)
                .where(t.identity.c.pk == row.pk)
                .values(status="merged", merged_into=root, merged_at=row.merged_at or tx.now,
                        clocks=json.dumps(clocks), updated_at=tx.now)
            )
            await unindex(tx, row.pk)
            if row.status == "active":
                recount(tx, frequencies, row, None)
        root_row = rows.get(root)
        if root_row is None:
            continue
        await move_belongings(tx, row.pk, root_row.pk)
        x = t.external_id
        for system, value in (await tx.conn.execute(sa.select(x.c.system, x.c.value).where(x.c.identity_pk == row.pk))).all():
            await tx.conn.execute(sa.delete(x).where(x.c.system == system, x.c.value == value))
            await claim_external_id(tx, root_row.pk, system, value, None, clock_of(clocks, f"ext:{system}"))
        # Writes to the merged ID made after the merge belong to the canonical identity.
        merged_clock = clock_of(clocks, "_merged")
        later = {f: wire_value(getattr(row, f)) for f in DEMOGRAPHIC if clock_of(clocks, f) > merged_clock}
        for name, value in later.items():
            fresh_root = await row_of(tx.conn, root)
            assert fresh_root is not None
            won = await write_fields(tx, frequencies, fresh_root, {name: value}, clock_of(clocks, name))
            new_region = won.get("region_code")
            if new_region and new_region != fresh_root.region_code:
                settled.moved.append((fresh_root, str(new_region)))
    settled.canonical = canonical if canonical in rows else None
    return settled
