"""The dedup's decisions: scored pairs merged or queued for review, in one order, in bulk.

A sweep's pairs are decided identity by identity in pk order, each identity's pairs best
first, whatever slice or worker scored them, so the same pairs always give the same
merges; a pair one of whose identities was merged away earlier in the pass is left alone
(``decide``).  A check's pairs are decided best first.  A pair at or above the auto-merge threshold with
no hard conflict is merged, the older registration being the target (then the smaller
ID); one a supervisor declared ``not_same`` is left alone; one the identity layer refuses
to merge (two values of one external id, merged meanwhile) is queued; two that are one
identity already (merged earlier in this pass, through another pair) are skipped.  The
others, between ``probable`` and auto-merge or with a hard conflict, are queued, unless
decided ``not_same`` or queued already.

Written in bulk: the ``not_same`` decisions of all the pairs read once, the merges in
transactions of ``DECISIONS_PER_TX`` (a merge refused raises before it writes anything), and
the review items of a transaction in one insert (``review.items.open_pair_reviews``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from ..errors import ApiError, SameIdentity
from ..identities.lookup import text_in
from ..matching import evidence_detail
from ..registry import Registry
from ..review.items import PairReview, open_pair_reviews
from ..schemas import MergeIn
from ..storage import schema as t
from .pairs import Found, Identity

__all__ = ["DECISIONS_PER_TX", "Decided", "decide"]

log = logging.getLogger("mpi.dedup")

DECISIONS_PER_TX = 500  # merges and queued pairs per write transaction (the write lock is held meanwhile)


@dataclass
class Decided:
    merged: int = 0
    queued: int = 0


def _older_first(a: Identity, b: Identity) -> tuple[Identity, Identity]:
    """(target, source): the older registration survives, then the smaller ID."""
    return (a, b) if (a.created_at, a.mpi_id) <= (b.created_at, b.mpi_id) else (b, a)


async def decide(
    registry: Registry,
    actor: str,
    auto_merge: float,
    found: Sequence[Found],
    who: Mapping[int, Identity],
    *,
    sweep: bool = False,
) -> Decided:
    """Merge or queue ``found``; pairs whose identity is gone are skipped.

    A check (``sweep`` False) decides its pairs best first.  A sweep decides them identity
    by identity in pk order, each identity's pairs best first, and leaves alone a pair one
    of whose identities was merged away earlier in the pass: what the sweep did when it
    decided slice by slice, where an identity merged by an earlier slice was no longer
    active, so its pairs were not looked at (its group's survivor is, through its own
    pairs).  Without that rule a chain of look-alikes (A = B, B looks like C) would merge C
    into A on B's evidence alone.
    """
    out = Decided()
    found = [f for f in found if f.a in who and f.b in who]
    if sweep:
        found = sorted(found, key=lambda f: (f.a, -f.result.score, f.b))
    gone: set[int] = set()  # merged away in this pass
    if not found:
        return out
    ids = sorted({who[pk].mpi_id for f in found for pk in (f.a, f.b)})
    async with registry.store.read() as conn:
        decided = {
            (a, b)
            for a, b in await conn.execute(
                sa.select(t.not_same.c.mpi_a, t.not_same.c.mpi_b).where(text_in(conn, t.not_same.c.mpi_a, ids))
            )
        }
    for start in range(0, len(found), DECISIONS_PER_TX):
        async with registry.store.write(actor) as tx:
            reviews: list[PairReview] = []
            for f in found[start : start + DECISIONS_PER_TX]:
                if sweep and (f.a in gone or f.b in gone):
                    continue
                target, source = _older_first(who[f.a], who[f.b])
                result = f.result
                if tuple(sorted((target.mpi_id, source.mpi_id))) in decided:
                    continue  # two people, a supervisor said: never merged nor raised again
                if result.score >= auto_merge and result.hard_conflict is None:
                    body = MergeIn(
                        source_mpi_id=source.mpi_id,
                        target_mpi_id=target.mpi_id,
                        reason=f"automatic merge by the hub's dedup (score {result.score}: "
                        f"{', '.join(result.matched_fields)})",
                        keep_target=True,
                    )
                    try:
                        await registry.merge_in(tx, body)
                    except SameIdentity:
                        continue  # one identity already (merged earlier in this pass): nothing to decide
                    except ApiError as exc:
                        # Merged meanwhile, or a conflict the matcher could not see (external ids): a person decides.
                        log.info("auto-merge of %s into %s not done: %s", source.mpi_id, target.mpi_id, exc.message)
                    else:
                        out.merged += 1
                        gone.add(f.a if source.mpi_id == who[f.a].mpi_id else f.b)
                        continue
                reviews.append(PairReview(
                    reason="hard_conflict" if result.hard_conflict else "probable",
                    first=target.mpi_id,
                    second=source.mpi_id,
                    score=result.score,
                    matched_fields=result.matched_fields,
                    detail=({"hard_conflict": result.hard_conflict} if result.hard_conflict else {})
                    | evidence_detail(result),
                    regions=(target.region_code, source.region_code),
                ))
            out.queued += await open_pair_reviews(tx, reviews)
    return out
