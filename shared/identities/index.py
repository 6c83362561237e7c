"""The search tokens and blocking keys of identities: ONE function decides what an identity is indexed under.

Every path that creates or changes an identity (register, bulk import, sync, merge, unmerge,
patch) indexes it through ``index_rows``, so a person is found the same way whichever
replica wrote them. Name frequencies (the matcher's weights) follow the same changes, after
the transaction commits.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from ..matching import NameFrequencies, Person, index_keys, name_tokens, person_of
from ..storage import schema as t
from ..storage.store import Tx
from .fields import Row

__all__ = ["PAIR", "index", "index_new", "index_rows", "recount", "search_tokens", "unindex"]

PAIR = "~"  # sorts after every letter: pair tokens never fall in the range of a name prefix


def search_tokens(first_name: str, last_name: str) -> set[str]:
    """What the search index holds for a name: each word, and each ordered pair of words.

    A pair token ``~FATOU DIALLO`` lets the usual query, whole words then the beginning
    of the last one, be one range scan however common each word is on its own.
    """
    words = list(dict.fromkeys([*name_tokens(first_name), *name_tokens(last_name)]))
    pairs = {f"{PAIR}{a} {b}" for a in words for b in words if a != b}
    return {w[:60] for w in words} | {p[:60] for p in pairs}


def index_rows(people: Iterable[tuple[int, Person]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(name_token rows, blocking_key rows) of these identities."""
    tokens: list[dict[str, Any]] = []
    keys: list[dict[str, Any]] = []
    for pk, person in people:
        tokens.extend({"token": tok, "identity_pk": pk} for tok in search_tokens(person.first_name, person.last_name))
        keys.extend({"key": k, "identity_pk": pk} for k in set(index_keys(person)))
    return tokens, keys


async def index_new(tx: Tx, people: list[tuple[int, Person]]) -> None:
    """Index identities that have no tokens nor keys yet, in one bulk insert per table."""
    tokens, keys = index_rows(people)
    # In index order: a bulk import's thousands of rows then meet each leaf page once.
    tokens.sort(key=lambda r: (r["token"], r["identity_pk"]))
    keys.sort(key=lambda r: (r["key"], r["identity_pk"]))
    await tx.bulk_insert(t.name_token, tokens)
    await tx.bulk_insert(t.blocking_key, keys)


async def unindex(tx: Tx, pk: int) -> None:
    """An identity that is no longer searchable (merged away, evicted)."""
    await tx.conn.execute(sa.delete(t.name_token).where(t.name_token.c.identity_pk == pk))
    await tx.conn.execute(sa.delete(t.blocking_key).where(t.blocking_key.c.identity_pk == pk))


async def index(tx: Tx, pk: int, person: Person | None = None) -> None:
    """(Re)write the tokens and keys of one identity, from ``person`` or from its stored row."""
    if person is None:
        person = person_of((await tx.conn.execute(sa.select(t.identity).where(t.identity.c.pk == pk))).one())
    await unindex(tx, pk)
    tokens, keys = index_rows([(pk, person)])
    if tokens:
        await tx.conn.execute(sa.insert(t.name_token), tokens)
    if keys:
        await tx.conn.execute(sa.insert(t.blocking_key), keys)


def recount(tx: Tx, frequencies: NameFrequencies, old: Row | Person | None, new: Row | Person | None) -> None:
    """Keep the name frequencies (active identities only) in step with this write, once it commits."""
    before = old if isinstance(old, Person) or old is None else person_of(old)
    after = new if isinstance(new, Person) or new is None else person_of(new)

    def _apply() -> None:
        if before is not None:
            # Counted differently by an older version: the counts stay approximate.
            with contextlib.suppress(KeyError):
                frequencies.remove(before)
        if after is not None:
            frequencies.add(after)

    tx.after_commit.append(_apply)
