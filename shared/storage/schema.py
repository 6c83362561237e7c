"""The one schema of node and hub: SQLAlchemy Core tables on one MetaData, for both dialects.

Timestamps are ISO-8601 UTC strings with millisecond precision and a ``Z`` (they sort as
text and read the same on SQLite and PostgreSQL); birth dates are real ``DATE`` columns.
Index-only tables (tokens, blocking keys) are WITHOUT ROWID on SQLite: half the size.
"""

from __future__ import annotations

import sqlalchemy as sa

__all__ = [
    "api_token",
    "audit_log",
    "blocking_key",
    "card",
    "card_status",
    "change_log",
    "console_session",
    "external_id",
    "identity",
    "import_line",
    "import_progress",
    "dedup_pending",
    "merge_unlink",
    "dedup_progress",
    "match_label",
    "matcher_model",
    "merge_link",
    "metadata",
    "name_token",
    "not_same",
    "node_meta",
    "programme",
    "related_person",
    "review_item",
    "sync_batch",
    "sync_feed",
    "sync_fork",
    "sync_holding",
    "sync_key",
    "sync_node",
    "sync_refusal",
    "sync_setaside",
]

metadata = sa.MetaData()

# An INTEGER PRIMARY KEY is the rowid on SQLite; BIGINT elsewhere.
_Pk = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

identity = sa.Table(
    "identity",
    metadata,
    sa.Column("pk", _Pk, primary_key=True, autoincrement=True),
    sa.Column("mpi_id", sa.String(18), nullable=False, unique=True),
    sa.Column("first_name", sa.String(100), nullable=False),
    sa.Column("last_name", sa.String(100), nullable=False),
    sa.Column("date_of_birth", sa.Date, nullable=True),
    sa.Column("gender", sa.String(1), nullable=True),
    sa.Column("region_code", sa.String(3), nullable=False),
    sa.Column("country_code", sa.String(2), nullable=False),
    sa.Column("phone_number", sa.String(20), nullable=True),
    sa.Column("status", sa.String(10), nullable=False, server_default="active"),
    sa.Column("merged_into", sa.String(18), nullable=True),
    sa.Column("merged_at", sa.String(24), nullable=True),
    sa.Column("created_at", sa.String(24), nullable=False),
    sa.Column("updated_at", sa.String(24), nullable=False),
    # Per-field hybrid logical clocks, JSON: what last-writer-wins sync compares.
    sa.Column("clocks", sa.Text, nullable=False, server_default="{}"),
    # Migration 90: the birth date is an estimate (from an age, or said so); the caregivers,
    # JSON ``[{"mpi_id", "relationship"}]`` sorted (one register for sync, like every field).
    sa.Column("date_of_birth_estimated", sa.Boolean, nullable=False, server_default=sa.text("FALSE")),
    sa.Column("related_persons", sa.Text, nullable=True),
    sa.Index("ix_identity_region_dob", "region_code", "date_of_birth"),
    sa.Index("ix_identity_dob", "date_of_birth"),
    sa.Index("ix_identity_merged_into", "merged_into"),
)

# Migration 90: who links to whom (``identity.related_persons`` of every replica's row, merged
# or not), for ``GET /mpi/search?related_to=``; written with the field, by ``identities.family``.
related_person = sa.Table(
    "related_person",
    metadata,
    sa.Column("identity_pk", sa.BigInteger, sa.ForeignKey("identity.pk", ondelete="CASCADE"), primary_key=True),
    sa.Column("related_mpi_id", sa.String(18), primary_key=True),
    sa.Column("relationship", sa.String(12), primary_key=True),
    sa.Index("ix_related_person_related", "related_mpi_id"),
)

name_token = sa.Table(
    "name_token",
    metadata,
    sa.Column("token", sa.String(60), primary_key=True),
    sa.Column("identity_pk", sa.BigInteger, sa.ForeignKey("identity.pk", ondelete="CASCADE"), primary_key=True),
    sa.Index("ix_name_token_identity_token", "identity_pk", "token"),
    sqlite_with_rowid=False,
)

blocking_key = sa.Table(
    "blocking_key",
    metadata,
    sa.Column("key", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("identity_pk", sa.BigInteger, sa.ForeignKey("identity.pk", ondelete="CASCADE"), primary_key=True),
    sa.Index("ix_blocking_key_identity", "identity_pk"),
    sqlite_with_rowid=False,
)

external_id = sa.Table(
    "external_id",
    metadata,
    sa.Column("system", sa.String(40), primary_key=True),
    sa.Column("value", sa.String(200), primary_key=True),
    sa.Column("identity_pk", sa.BigInteger, sa.ForeignKey("identity.pk", ondelete="CASCADE"), nullable=False),
    sa.Column("instance_url", sa.String(300), nullable=True),
    sa.Column("linked_at", sa.String(24), nullable=False),
    sa.Index("ix_external_id_identity", "identity_pk"),
    # An identifier of any system (FHIR ``identifier=|value``): the key is (system, value).
    sa.Index("ix_external_id_value", "value"),
)

programme = sa.Table(
    "programme",
    metadata,
    sa.Column("identity_pk", sa.BigInteger, sa.ForeignKey("identity.pk", ondelete="CASCADE"), primary_key=True),
    sa.Column("programme_type", sa.String(40), primary_key=True),
    sa.Column("linked_at", sa.String(24), nullable=False),
    sa.Index("ix_programme_type", "programme_type", "identity_pk"),
)

card = sa.Table(
    "card",
    metadata,
    sa.Column("pk", _Pk, primary_key=True, autoincrement=True),
    sa.Column("card_code", sa.String(20), nullable=False),
    sa.Column("identity_pk", sa.BigInteger, sa.ForeignKey("identity.pk", ondelete="CASCADE"), nullable=False),
    sa.Column("campaign_id", sa.String(80), nullable=False),
    sa.Column("programme_type", sa.String(40), nullable=False),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("status", sa.String(10), nullable=False),
    sa.Column("issued_at", sa.String(24), nullable=False),
    sa.Column("revoked_at", sa.String(24), nullable=True),
    sa.Index("ix_card_identity", "identity_pk", "issued_at"),
)

api_token = sa.Table(
    "api_token",
    metadata,
    sa.Column("pk", _Pk, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("role", sa.String(20), nullable=False),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", sa.String(24), nullable=False),
    sa.Column("revoked_at", sa.String(24), nullable=True),
    sa.Column("expires_at", sa.String(24), nullable=True),  # None: never
    sa.Column("last_used_at", sa.String(24), nullable=True),
)

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("pk", _Pk, primary_key=True, autoincrement=True),
    sa.Column("at", sa.String(24), nullable=False),
    sa.Column("actor", sa.String(100), nullable=False),
    sa.Column("action", sa.String(40), nullable=False),
    sa.Column("mpi_id", sa.String(18), nullable=True),
    sa.Column("detail", sa.Text, nullable=False, server_default="{}"),
    sa.Index("ix_audit_mpi_id", "mpi_id"),
    sa.Index("ix_audit_at", "at"),
)

change_log = sa.Table(
    "change_log",
    metadata,
    sa.Column("node_id", sa.String(64), primary_key=True),
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("hlc", sa.BigInteger, nullable=False),
    sa.Column("key_id", sa.String(64), nullable=False),
    sa.Column("kind", sa.String(40), nullable=False),
    sa.Column("mpi_id", sa.String(18), nullable=True),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
)

node_meta = sa.Table(
    "node_meta",
    metadata,
    sa.Column("key", sa.String(60), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

review_item = sa.Table(
    "review_item",
    metadata,
    sa.Column("pk", _Pk, primary_key=True, autoincrement=True),
    sa.Column("reason", sa.String(40), nullable=False),
    sa.Column("mpi_ids", sa.Text, nullable=False),
    sa.Column("similarity_score", sa.Float, nullable=True),
    sa.Column("matched_fields", sa.Text, nullable=False, server_default="[]"),
    sa.Column("status", sa.String(12), nullable=False, server_default="open"),
    sa.Column("actor", sa.String(100), nullable=False),
    sa.Column("created_at", sa.String(24), nullable=False),
    sa.Column("detail", sa.Text, nullable=False, server_default="{}"),
    # Added by migration 10: the sorted pair, the regions it touches, and the decision.
    sa.Column("pair_key", sa.String(40), nullable=True, index=True),
    sa.Column("regions", sa.String(40), nullable=True),
    sa.Column("decision", sa.String(12), nullable=True),
    sa.Column("decided_by", sa.String(100), nullable=True),
    sa.Column("decided_at", sa.String(24), nullable=True),
)

import_progress = sa.Table(
    "import_progress",
    metadata,
    sa.Column("file_sha256", sa.String(64), primary_key=True),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("last_line", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.String(24), nullable=False),
)

# What each data row of an imported file became (migration 70): written in the batch's
# transaction, so the map of a killed and resumed import still has every line exactly once.
import_line = sa.Table(
    "import_line",
    metadata,
    sa.Column("file_sha256", sa.String(64), primary_key=True),
    sa.Column("line", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("mpi_id", sa.String(18), nullable=True),  # the ID it became, or was blocked against
    sa.Column("status", sa.String(8), nullable=False),  # created, queued, blocked, invalid
)


# -- sync (migration 2) ----------------------------------------------------------------

# Cards issued anywhere in the country, without the person: what verify answers for a card
# whose identity this replica does not hold.
card_status = sa.Table(
    "card_status",
    metadata,
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column("status", sa.String(10), nullable=False),
    sa.Column("programme_count", sa.Integer, nullable=False),
    sa.Column("updated_at", sa.String(24), nullable=False),
)

# Every merge ever applied, as a link of a union-find: the canonical ID of a group of merged
# identities is recomputed from all its links, so merges commute.
merge_link = sa.Table(
    "merge_link",
    metadata,
    sa.Column("source", sa.String(18), primary_key=True),
    sa.Column("target", sa.String(18), primary_key=True),
    sa.Column("hlc", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("node_id", sa.String(64), primary_key=True),
    sa.Column("keep_target", sa.Boolean, nullable=False),
    sa.Index("ix_merge_link_target", "target"),
)

# Hub: the nodes it enrolled, their cursors and state.
sync_node = sa.Table(
    "sync_node",
    metadata,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("node_id", sa.String(64), nullable=True, unique=True),
    sa.Column("node_number", sa.Integer, nullable=False, unique=True),
    sa.Column("region", sa.String(3), nullable=False),
    sa.Column("regions", sa.Text, nullable=False),
    sa.Column("status", sa.String(12), nullable=False),
    sa.Column("acked_seq", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("acked_hash", sa.String(64), nullable=False, server_default="0" * 64),
    sa.Column("pull_pos", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("created_at", sa.String(24), nullable=False),
    sa.Column("seen_at", sa.String(24), nullable=True),
    sa.Column("note", sa.Text, nullable=True),
    # The public half of the key pair the enrolment secret seeds (migration 61): it verifies an
    # enrolment and cannot make one, so a copy of the database completes no enrolment.
    sa.Column("enrol_key", sa.String(64), nullable=True),
    # The lost node this one replaces (``mpi-hub node replace``, migration 80): it took its regions and holdings.
    sa.Column("replaces", sa.String(100), nullable=True),
)

# Hub: every node key, with the part of the node's chain it may sign.
sync_key = sa.Table(
    "sync_key",
    metadata,
    sa.Column("key_id", sa.String(64), primary_key=True),
    sa.Column("node_name", sa.String(100), nullable=False),
    sa.Column("public_key", sa.String(64), nullable=False),
    sa.Column("status", sa.String(10), nullable=False),
    sa.Column("first_seq", sa.BigInteger, nullable=False),
    sa.Column("last_seq", sa.BigInteger, nullable=True),
    sa.Column("created_at", sa.String(24), nullable=False),
)

# Hub: every accepted change set, as signed, with the acknowledgement it got (replays get it again).
sync_batch = sa.Table(
    "sync_batch",
    metadata,
    sa.Column("node_id", sa.String(64), primary_key=True),
    sa.Column("last_seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("first_seq", sa.BigInteger, nullable=False),
    sa.Column("last_hash", sa.String(64), nullable=False),
    sa.Column("envelope", sa.LargeBinary, nullable=False),
    sa.Column("ack", sa.LargeBinary, nullable=False),
    sa.Column("received_at", sa.String(24), nullable=False),
)

# Hub: proof of a fork: the signed set that contradicted what the hub holds.
sync_fork = sa.Table(
    "sync_fork",
    metadata,
    sa.Column("pk", _Pk, primary_key=True, autoincrement=True),
    sa.Column("node_id", sa.String(64), nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("held_hash", sa.String(64), nullable=False),
    sa.Column("envelope", sa.LargeBinary, nullable=False),
    sa.Column("at", sa.String(24), nullable=False),
)

# Hub: the one ordered log of what nodes must receive, hash-chained; rows point into change_log.
sync_feed = sa.Table(
    "sync_feed",
    metadata,
    sa.Column("pos", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("node_id", sa.String(64), nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("kind", sa.String(40), nullable=False),
    sa.Column("mpi_id", sa.String(18), nullable=True),
    sa.Column("region_a", sa.String(3), nullable=True),
    sa.Column("region_b", sa.String(3), nullable=True),
    sa.Column("exclude_region", sa.String(3), nullable=True),
    sa.Column("hash", sa.String(64), nullable=False),
)

# Node: change sets the hub refused, with its reason; shown by GET /sync/status.
sync_refusal = sa.Table(
    "sync_refusal",
    metadata,
    sa.Column("pk", _Pk, primary_key=True, autoincrement=True),
    sa.Column("at", sa.String(24), nullable=False),
    sa.Column("first_seq", sa.BigInteger, nullable=False),
    sa.Column("last_seq", sa.BigInteger, nullable=False),
    sa.Column("code", sa.String(40), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
)


# -- dedup (migration 10) ------------------------------------------------------------------

# Pairs a supervisor decided are two different people: no sweep and no node raises them again.
not_same = sa.Table(
    "not_same",
    metadata,
    sa.Column("mpi_a", sa.String(18), primary_key=True),  # the smaller ID of the pair
    sa.Column("mpi_b", sa.String(18), primary_key=True),
    sa.Column("decided_at", sa.String(24), nullable=False),
    sa.Column("actor", sa.String(100), nullable=False),
)

# How far a full dedup sweep got, so that a crash resumes it instead of starting again.
dedup_progress = sa.Table(
    "dedup_progress",
    metadata,
    sa.Column("job", sa.String(40), primary_key=True),
    sa.Column("last_pk", sa.BigInteger, nullable=False),
    sa.Column("checked", sa.BigInteger, nullable=False),
    sa.Column("merged", sa.BigInteger, nullable=False),
    sa.Column("queued", sa.BigInteger, nullable=False),
    sa.Column("started_at", sa.String(24), nullable=False),
    sa.Column("updated_at", sa.String(24), nullable=False),
    sa.Column("finished_at", sa.String(24), nullable=True),
)

# Identities the hub must check against the country: written in the transaction that applied
# them, drained by the dedup worker, so a crash between the two loses nothing.
dedup_pending = sa.Table(
    "dedup_pending",
    metadata,
    sa.Column("identity_pk", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("queued_at", sa.String(24), nullable=False),
)

# -- unmerge (migration 11) ---------------------------------------------------------------------

# Merge links an unmerge removed: a link arriving later (an old change set) stays removed.
merge_unlink = sa.Table(
    "merge_unlink",
    metadata,
    sa.Column("source", sa.String(18), primary_key=True),
    sa.Column("target", sa.String(18), primary_key=True),
    sa.Column("hlc", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("node_id", sa.String(64), primary_key=True),
    sa.Column("unmerged_at", sa.String(24), nullable=False),
)

# -- sync holdings and set-aside changes (migration 40) -----------------------------------------

# Hub: identities outside a node's regions that the node holds (it registered, edited, merged or
# carded them): the feed sends that node every later change to them.
sync_holding = sa.Table(
    "sync_holding",
    metadata,
    sa.Column("node_name", sa.String(100), primary_key=True),
    sa.Column("mpi_id", sa.String(18), primary_key=True),
    sa.Column("since", sa.String(24), nullable=False),
    sa.Index("ix_sync_holding_mpi_id", "mpi_id"),
)

# Hub: pushed changes the hub could not apply (kept in change_log, acknowledged, not applied), with why.
sync_setaside = sa.Table(
    "sync_setaside",
    metadata,
    sa.Column("pk", _Pk, primary_key=True, autoincrement=True),
    sa.Column("node_id", sa.String(64), nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("kind", sa.String(40), nullable=False),
    sa.Column("mpi_id", sa.String(18), nullable=True),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("at", sa.String(24), nullable=False),
    sa.Index("ix_sync_setaside_node", "node_id", "seq"),
)

# -- console sessions (migration 60) -------------------------------------------------------------

# A signed-in console session. The browser's cookie holds a random session id; only its SHA-256
# is kept, so a copy of the database opens no session. A session ends when signed out (its row
# is deleted), idle past MPI_CONSOLE_IDLE_MINUTES, past ``expires_at`` (its maximum lifetime),
# or as soon as its token is revoked or expires (each request reads the token with it).
console_session = sa.Table(
    "console_session",
    metadata,
    sa.Column("sid_hash", sa.String(64), primary_key=True),
    sa.Column("token_hash", sa.String(64), nullable=False),
    sa.Column("created_at", sa.String(24), nullable=False),
    sa.Column("seen_at", sa.String(24), nullable=False),
    sa.Column("expires_at", sa.String(24), nullable=False),
    sa.Index("ix_console_session_token", "token_hash"),
)

# -- dedup workers and periodic jobs (migration 91) ----------------------------------------------

# A sweep cut into slices of primary keys (lo_pk, hi_pk], claimed by ``mpi-hub dedup worker``
# processes with SELECT ... FOR UPDATE SKIP LOCKED. A claim holds until ``lease_until``, which
# the worker's heartbeat pushes on: a killed worker's slice is taken again once it lapses.
dedup_slice = sa.Table(
    "dedup_slice",
    metadata,
    sa.Column("job", sa.String(40), primary_key=True),
    sa.Column("lo_pk", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("hi_pk", sa.BigInteger, nullable=False),
    sa.Column("status", sa.String(12), nullable=False),  # todo, claimed, done
    sa.Column("worker", sa.String(100), nullable=True),
    sa.Column("lease_until", sa.String(24), nullable=True),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("checked", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("merged", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("queued", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("done_at", sa.String(24), nullable=True),
    sa.Index("ix_dedup_slice_status", "job", "status"),
)

# The pairs a sweep scored (two phases: every slice scored against one state of the
# registry, then all the pairs decided in one order, best first): those at or above
# ``probable``, with what a decision writes (score, evidence).  Kept until the next sweep.
dedup_pair = sa.Table(
    "dedup_pair",
    metadata,
    sa.Column("job", sa.String(40), primary_key=True),
    sa.Column("a_pk", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("b_pk", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("score", sa.Float, nullable=False),
    sa.Column("hard_conflict", sa.String(40), nullable=True),
    sa.Column("band", sa.String(12), nullable=True),
    sa.Column("matched_fields", sa.Text, nullable=False),  # JSON list
    sa.Column("features", sa.Text, nullable=False),  # JSON [[feature, log odds], ...]
)

# One row per run of a periodic job of ``mpi-hub serve`` (taken under its advisory lock): which
# process ran it and when. Rows older than a day are pruned as new ones come.
job_run = sa.Table(
    "job_run",
    metadata,
    sa.Column("pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("job", sa.String(40), nullable=False),
    sa.Column("process", sa.String(100), nullable=False),
    sa.Column("started_at", sa.String(24), nullable=False),
    sa.Column("finished_at", sa.String(24), nullable=True),
    sa.Index("ix_job_run_job", "job", "started_at"),
)

# -- learning from reviewers (migrations 100 and 101) ------------------------------------------

# Migration 100: every review decision (``merge``, ``not_same``) with the two identities as
# they stood when it was made (JSON of the matcher's fields): the labelled pairs that
# ``mpi-hub model train`` adds to the generator's.
match_label = sa.Table(
    "match_label",
    metadata,
    sa.Column("pk", _Pk, primary_key=True, autoincrement=True),
    sa.Column("item_id", sa.BigInteger, nullable=False),
    sa.Column("decision", sa.String(12), nullable=False),  # merge, not_same
    sa.Column("person_a", sa.Text, nullable=False),
    sa.Column("person_b", sa.Text, nullable=False),
    sa.Column("actor", sa.String(100), nullable=False),
    sa.Column("decided_at", sa.String(24), nullable=False),
    sa.Index("ix_match_label_item", "item_id"),
)

# Migration 101: the matcher models this database holds (the hub: the ones it trained; a node:
# the ones sync brought), the file itself and its SHA-256. Which one scores is
# ``node_meta['matcher_model']`` (a version; none: the model shipped in the package).
matcher_model = sa.Table(
    "matcher_model",
    metadata,
    sa.Column("version", sa.String(100), primary_key=True),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("data", sa.LargeBinary, nullable=False),
    sa.Column("meta", sa.Text, nullable=False, server_default="{}"),
    sa.Column("created_at", sa.String(24), nullable=False),
    sa.Column("created_by", sa.String(100), nullable=False),
)
