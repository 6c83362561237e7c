"""Schema migrations: one ordered list, each applied in the same transaction as its record.

A migration is a function of a synchronous Connection (run through ``run_sync``) so the same
code serves SQLite and PostgreSQL. Migration 1 creates the tables of version 1 of
``schema.py``; every later change to ``schema.py`` gets its own numbered migration here,
written as explicit DDL, never by editing an applied one.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine
from tqdm import tqdm

from ..matching import index_keys, person_of
from . import schema

__all__ = ["MIGRATIONS", "applied", "migrate", "rekey"]

_migrations_table = sa.Table(
    "schema_migrations",
    sa.MetaData(),
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("name", sa.String(100), nullable=False),
)

_V1_TABLES = [  # as they were in version 1: later columns come from later migrations
    schema.identity,
    schema.name_token,
    schema.blocking_key,
    schema.external_id,
    schema.programme,
    schema.card,
    schema.api_token,
    schema.audit_log,
    schema.change_log,
    schema.node_meta,
    schema.review_item,
    schema.import_progress,
]


# review_item as version 1 made it; migration 10 adds its decision columns.
_review_item_v1 = sa.Table(
    "review_item",
    sa.MetaData(),
    sa.Column("pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("reason", sa.String(40), nullable=False),
    sa.Column("mpi_ids", sa.Text, nullable=False),
    sa.Column("similarity_score", sa.Float, nullable=True),
    sa.Column("matched_fields", sa.Text, nullable=False, server_default="[]"),
    sa.Column("status", sa.String(12), nullable=False, server_default="open"),
    sa.Column("actor", sa.String(100), nullable=False),
    sa.Column("created_at", sa.String(24), nullable=False),
    sa.Column("detail", sa.Text, nullable=False, server_default="{}"),
)


_name_token_v1 = sa.Table(
    "name_token",
    sa.MetaData(),
    sa.Column("token", sa.String(60), primary_key=True),
    sa.Column("identity_pk", sa.BigInteger, sa.ForeignKey(schema.identity.c.pk, ondelete="CASCADE"), primary_key=True),
    sa.Index("ix_name_token_identity", "identity_pk"),
    sqlite_with_rowid=False,
)


# api_token and audit_log as version 1 made them; migration 20 adds expiry, last use, an index.
_api_token_v1 = sa.Table(
    "api_token",
    sa.MetaData(),
    sa.Column("pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("role", sa.String(20), nullable=False),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", sa.String(24), nullable=False),
    sa.Column("revoked_at", sa.String(24), nullable=True),
)

_audit_log_v1 = sa.Table(
    "audit_log",
    sa.MetaData(),
    sa.Column("pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("at", sa.String(24), nullable=False),
    sa.Column("actor", sa.String(100), nullable=False),
    sa.Column("action", sa.String(40), nullable=False),
    sa.Column("mpi_id", sa.String(18), nullable=True),
    sa.Column("detail", sa.Text, nullable=False, server_default="{}"),
    sa.Index("ix_audit_mpi_id", "mpi_id"),
)


# external_id as version 1 made it; migration 51 adds the index on value.
_external_id_v1 = sa.Table(
    "external_id",
    sa.MetaData(),
    sa.Column("system", sa.String(40), primary_key=True),
    sa.Column("value", sa.String(200), primary_key=True),
    sa.Column("identity_pk", sa.BigInteger, sa.ForeignKey(schema.identity.c.pk, ondelete="CASCADE"), nullable=False),
    sa.Column("instance_url", sa.String(300), nullable=True),
    sa.Column("linked_at", sa.String(24), nullable=False),
    sa.Index("ix_external_id_identity", "identity_pk"),
)


# identity as version 1 made it; migration 90 adds the estimated flag and the caregivers.
_identity_v1 = sa.Table(
    "identity",
    sa.MetaData(),
    *[c._copy() for c in schema.identity.columns if c.name not in ("date_of_birth_estimated", "related_persons")],
    sa.Index("ix_identity_region_dob", "region_code", "date_of_birth"),
    sa.Index("ix_identity_dob", "date_of_birth"),
    sa.Index("ix_identity_merged_into", "merged_into"),
)


def _v1_initial(conn: Connection) -> None:
    _identity_v1.create(conn)
    frozen = {
        schema.identity.name: _identity_v1,
        schema.review_item.name: _review_item_v1,
        schema.external_id.name: _external_id_v1,
        schema.name_token.name: _name_token_v1,
        schema.api_token.name: _api_token_v1,
        schema.audit_log.name: _audit_log_v1,
    }
    schema.metadata.create_all(conn, tables=[t for t in _V1_TABLES if t.name not in frozen])
    for table in frozen.values():
        if table is not _identity_v1:
            table.create(conn)


# sync_node as migration 2 made it; migration 61 replaces its secret_hash with enrol_key.
_sync_node_v2 = sa.Table(
    "sync_node",
    sa.MetaData(),
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("node_id", sa.String(64), nullable=True, unique=True),
    sa.Column("node_number", sa.Integer, nullable=False, unique=True),
    sa.Column("region", sa.String(3), nullable=False),
    sa.Column("regions", sa.Text, nullable=False),
    sa.Column("status", sa.String(12), nullable=False),
    sa.Column("secret_hash", sa.String(64), nullable=True),
    sa.Column("acked_seq", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("acked_hash", sa.String(64), nullable=False, server_default="0" * 64),
    sa.Column("pull_pos", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("created_at", sa.String(24), nullable=False),
    sa.Column("seen_at", sa.String(24), nullable=True),
    sa.Column("note", sa.Text, nullable=True),
)

_V2_TABLES = [
    schema.card_status,
    schema.merge_link,
    schema.sync_key,
    schema.sync_batch,
    schema.sync_fork,
    schema.sync_feed,
    schema.sync_refusal,
]


def _v2_sync(conn: Connection) -> None:
    schema.metadata.create_all(conn, tables=_V2_TABLES)
    _sync_node_v2.create(conn)


def _v10_dedup(conn: Connection) -> None:
    schema.metadata.create_all(conn, tables=[schema.not_same, schema.dedup_progress, schema.dedup_pending])
    for column, kind in (
        ("pair_key", "VARCHAR(40)"),
        ("regions", "VARCHAR(40)"),
        ("decision", "VARCHAR(12)"),
        ("decided_by", "VARCHAR(100)"),
        ("decided_at", "VARCHAR(24)"),
    ):
        conn.exec_driver_sql(f"ALTER TABLE review_item ADD COLUMN {column} {kind}")
    conn.exec_driver_sql("CREATE INDEX ix_review_item_pair_key ON review_item (pair_key)")
    # Search probes tokens per identity: (identity_pk, token) replaces (identity_pk).
    conn.exec_driver_sql("CREATE INDEX ix_name_token_identity_token ON name_token (identity_pk, token)")
    conn.exec_driver_sql("DROP INDEX ix_name_token_identity")


def _v11_unmerge(conn: Connection) -> None:
    schema.metadata.create_all(conn, tables=[schema.merge_unlink])


def _v20_tokens_and_audit(conn: Connection) -> None:
    conn.exec_driver_sql("ALTER TABLE api_token ADD COLUMN expires_at VARCHAR(24)")
    conn.exec_driver_sql("ALTER TABLE api_token ADD COLUMN last_used_at VARCHAR(24)")
    conn.exec_driver_sql("CREATE INDEX ix_audit_at ON audit_log (at)")


def _v40_sync_holdings(conn: Connection) -> None:
    """The hub's holdings of out-of-scope identities, and the pushed changes it set aside."""
    schema.metadata.create_all(conn, tables=[schema.sync_holding, schema.sync_setaside])


def _v50_blocking_keys_v2(conn: Connection) -> None:
    """Re-key every active identity with the recipes of ``blocking.KEYS_VERSION`` 2.

    A later change of recipes gets a migration of its own that calls ``rekey`` again.
    """
    rekey(conn)


def _v51_external_id_value(conn: Connection) -> None:
    """An index on external ids by value alone: FHIR's ``identifier=|value`` (any system)."""
    conn.exec_driver_sql("CREATE INDEX ix_external_id_value ON external_id (value)")


def _v90_campaign(conn: Connection) -> None:
    """Estimated birth dates and caregiver links (issue 22)."""
    conn.exec_driver_sql("ALTER TABLE identity ADD COLUMN date_of_birth_estimated BOOLEAN NOT NULL DEFAULT FALSE")
    conn.exec_driver_sql("ALTER TABLE identity ADD COLUMN related_persons TEXT")
    schema.metadata.create_all(conn, tables=[schema.related_person])


def rekey(conn: Connection, page: int = 5000) -> int:
    """Rewrite the blocking keys of every active identity, a page at a time, with a progress bar."""
    identity, keys = schema.identity, schema.blocking_key
    active = identity.c.status == "active"
    total = conn.execute(sa.select(sa.func.count()).select_from(identity).where(active)).scalar_one()
    conn.execute(sa.delete(keys))
    done = last = 0
    with tqdm(total=total, desc="re-keying identities", unit=" id", file=sys.stderr, disable=None) as bar:
        while True:
            rows = conn.execute(
                sa.select(*[identity.c[c.name] for c in _identity_v1.c])
                .where(active, identity.c.pk > last)
                .order_by(identity.c.pk)
                .limit(page)
            ).all()
            if not rows:
                return done
            batch = [{"key": k, "identity_pk": row.pk} for row in rows for k in set(index_keys(person_of(row)))]
            conn.execute(sa.insert(keys), batch)
            last, done = rows[-1].pk, done + len(rows)
            bar.update(len(rows))


def _v60_console_sessions(conn: Connection) -> None:
    """Console sessions kept on the server; the cookie signing key kept in node_meta goes."""
    schema.metadata.create_all(conn, tables=[schema.console_session])
    conn.execute(sa.delete(schema.node_meta).where(schema.node_meta.c.key == "console_secret"))


def _v61_enrolment_keys(conn: Connection) -> None:
    """Enrolment verified by a public key: the stored MAC keys, each a credential, are dropped.

    A node enrolled (at the hub) before this migration but not yet registered needs a new
    enrolment file: ``mpi-hub node enroll`` again for its name. On a node, the MAC key kept
    until registration goes too.
    """
    conn.exec_driver_sql("ALTER TABLE sync_node ADD COLUMN enrol_key VARCHAR(64)")
    conn.exec_driver_sql("ALTER TABLE sync_node DROP COLUMN secret_hash")
    conn.execute(sa.delete(schema.node_meta).where(schema.node_meta.c.key.in_(["sync_enrol_key", "sync_secret"])))


def _v70_import_lines(conn: Connection) -> None:
    """What each imported row became, for the map of ``mpi-node import`` and ``mpi-hub import``."""
    schema.metadata.create_all(conn, tables=[schema.import_line])


def _v80_node_replacement(conn: Connection) -> None:
    """The hub records which lost node a replacement node took over (``mpi-hub node replace``)."""
    conn.exec_driver_sql("ALTER TABLE sync_node ADD COLUMN replaces VARCHAR(100)")


def _v91_dedup_workers(conn: Connection) -> None:
    """Sweep slices claimed by dedup workers, and the record of periodic jobs' runs."""
    schema.metadata.create_all(conn, tables=[schema.dedup_slice, schema.job_run])


def _v100_match_labels(conn: Connection) -> None:
    """Review decisions with the two identities as they stood: labelled pairs (issue 20)."""
    schema.metadata.create_all(conn, tables=[schema.match_label])


def _v101_matcher_models(conn: Connection) -> None:
    """Matcher models trained at the hub or received by sync, stored with their hash (issue 20)."""
    schema.metadata.create_all(conn, tables=[schema.matcher_model])


def _v120_dedup_pairs(conn: Connection) -> None:
    """The pairs of a sweep scored by its slices, decided once all are scored (two phases)."""
    schema.metadata.create_all(conn, tables=[schema.dedup_pair])


# Numbers leave room: a gap is fine, the order is what counts.
MIGRATIONS: list[tuple[int, str, Callable[[Connection], None]]] = [
    (1, "initial", _v1_initial),
    (2, "sync", _v2_sync),
    (10, "dedup", _v10_dedup),
    (11, "unmerge", _v11_unmerge),
    (20, "token_expiry", _v20_tokens_and_audit),
    # 40-49: sync security and holdings (branch syncsec).
    (40, "sync_holdings", _v40_sync_holdings),
    (50, "blocking_keys_v2", _v50_blocking_keys_v2),
    (51, "external_id_value", _v51_external_id_value),
    # 60-69: console sessions and enrolment keys (branch console).
    (60, "console_sessions", _v60_console_sessions),
    (61, "enrolment_keys", _v61_enrolment_keys),
    # 70-79: bulk import (branch hubimport).
    (70, "import_lines", _v70_import_lines),
    # 80-89: restore and replacement of nodes (branch restore).
    (80, "node_replacement", _v80_node_replacement),
    # 90: the campaign data model (branch campaign; 80 went to restore).
    (90, "campaign", _v90_campaign),
    # 91: dedup workers and several hub processes (branch workers; 90 went to campaign).
    (91, "dedup_workers", _v91_dedup_workers),
    # 100-101: learning from reviewers, the model reaching nodes (branch modelsync).
    (100, "match_labels", _v100_match_labels),
    (101, "matcher_models", _v101_matcher_models),
    # 120: the sweep in two phases, scored pairs then decisions (branch sweep).
    (120, "dedup_pairs", _v120_dedup_pairs),
]


def _applied(conn: Connection) -> set[int]:
    _migrations_table.create(conn, checkfirst=True)
    return {row[0] for row in conn.execute(sa.select(_migrations_table.c.version))}


async def applied(engine: AsyncEngine) -> set[int]:
    """Versions already applied to this database."""
    async with engine.begin() as conn:
        return await conn.run_sync(_applied)


async def migrate(engine: AsyncEngine) -> list[str]:
    """Apply what is missing, each migration in its own transaction; returns what was applied."""
    done: list[str] = []
    for version, name, step in MIGRATIONS:
        async with engine.begin() as conn:
            if version in await conn.run_sync(_applied):
                continue
            await conn.run_sync(step)
            await conn.execute(sa.insert(_migrations_table).values(version=version, name=name))
            done.append(f"{version:04d}_{name}")
    return done
