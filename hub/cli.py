"""mpi-hub: initialise, serve, tokens, node enrolment, import, file sync, dedup workers and matcher models of the hub.

Every command takes ``--database-url`` (or ``MPI_DATABASE_URL``); each is a short function
over the library, and every failure is one stderr line and a non-zero exit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa
from aiohttp import web
from nacl.signing import SigningKey

from shared.bulk import append_report, file_sha256, write_map
from shared.cli import (
    CliError,
    OneLineParser,
    add_token_commands,
    country_code,
    positive_int,
    region_code,
    run,
    settings_table,
    token_command,
)
from shared.compose import Services, services
from shared.crypto import PLAIN_META, SEALED_META, key_id, seal_signing_key, sealing_key
from shared.dedup import Dedup
from shared.files import write_private
from shared.ids import MAX_NODE_NUMBER
from shared.logs import configure_logging
from shared.seed import BATCH, seed_rows
from shared.settings import Settings
from shared.storage import schema as t
from shared.storage.store import NotInitialised, utc_now
from shared.stores import hub_signing_key, hub_store
from shared.sync.hub import HubSync

from .model_cli import add_model_commands

__all__ = ["main"]

_SHOWN_ERRORS = 20  # invalid rows printed; the report has them all


def _db(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--database-url", default=None, help="PostgreSQL URL (MPI_DATABASE_URL)")


def _settings(args: argparse.Namespace, **overrides: object) -> Settings:
    return Settings.from_env(None, database_url=args.database_url, **overrides)


def _create_database(url: str) -> bool:
    """Create the database the URL names if the server does not have it; True when created."""
    plain = re.sub(r"^postgresql\+psycopg://|^postgres://", "postgresql://", url)
    try:
        psycopg.connect(plain, connect_timeout=5).close()
        return False
    except psycopg.OperationalError as exc:
        if "does not exist" not in str(exc):
            raise CliError(f"cannot reach PostgreSQL: {str(exc).strip().splitlines()[0]}") from None
    base, _, name = plain.rpartition("/")
    name = name.split("?")[0]
    with psycopg.connect(base + "/postgres", autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return True


async def _init(args: argparse.Namespace) -> int:
    settings = _settings(args)
    country = country_code(args.country)
    hub_store(settings)  # a missing or wrong URL is one line before anything is created
    created = _create_database(settings.database_url)
    key = SigningKey.generate()
    sealing, source = sealing_key(settings.hub_key_secret, settings.hub_key_file, create=True)
    async with services(settings, "hub", state=False, frequencies=False, sign=False) as hub:
        await hub.store.initialise(
            {
                "role": "hub",
                "node_id": f"hub-{uuid.uuid4().hex[:16]}",
                "node_number": str(MAX_NODE_NUMBER),
                "country": country,
                "region": "HUB",
                "key_id": key_id(key.verify_key),
                "public_key": bytes(key.verify_key).hex(),
                SEALED_META: seal_signing_key(key, sealing),
                "created_at": utc_now(),
            }
        )
    print(f"initialised hub for {country}{' (database created)' if created else ''}; hub key {key_id(key.verify_key)}, "
          f"sealed with {source}")
    return 0


async def _migrate(args: argparse.Namespace) -> int:
    async with services(_settings(args), "hub", state=False, frequencies=False, sign=False) as hub:
        done = hub.migrated
    print("applied: " + ", ".join(done) if done else "schema is up to date")
    return 0


async def _check_key(settings: Settings) -> None:
    """Open the hub's signing key once before serving: a missing or wrong sealing key is one line."""
    async with services(settings, "hub", migrate=False, frequencies=False):
        pass


def _serve(args: argparse.Namespace) -> int:
    settings = _settings(args, host=args.host, port=args.port)
    # The web stack is imported for serve alone: every other command starts faster without it.
    from .app import create_app

    configure_logging(settings)
    hub_store(settings)  # a missing URL is one line, before the server starts
    asyncio.run(_check_key(settings))
    web.run_app(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        print=lambda _: print(f"hub listening on http://{settings.host}:{settings.port}", flush=True),
        access_log=None,
    )
    return 0


async def _token(args: argparse.Namespace) -> int:
    return await token_command(_settings(args), "hub", args)


@contextlib.asynccontextmanager
async def _hub(args: argparse.Namespace) -> AsyncIterator[HubSync]:
    """The hub's sync (enrolment, bundles) over its services, its signing key open."""
    async with services(_settings(args), "hub", migrate=False) as hub:
        assert hub.hub_sync is not None
        yield hub.hub_sync


def _dedup_of(hub: Services) -> Dedup:
    assert hub.dedup is not None
    return hub.dedup


async def _dedup_sweep(args: argparse.Namespace) -> int:
    async with services(_settings(args), "hub") as hub:
        dedup = _dedup_of(hub)
        started = time.monotonic()

        def progress(stats: Any, last_pk: int) -> None:
            rate = stats.checked / max(0.001, time.monotonic() - started)
            print(
                f"\r{stats.checked:,} checked ({rate:,.0f}/s), {stats.merged:,} merged, {stats.queued:,} queued",
                end="", file=sys.stderr, flush=True,
            )

        stats = await dedup.sweep(batch=args.batch, restart=args.restart, progress=progress, stop_after=args.stop_after)
    print(file=sys.stderr)
    done = "" if stats.finished else " so far (stopped by --stop-after: run again to resume)"
    print(
        f"swept {stats.checked:,} identities{done} in {stats.seconds:.0f} s: "
        f"{stats.merged:,} merged, {stats.queued:,} queued for review"
    )
    return 0


async def _dedup_run(args: argparse.Namespace) -> int:
    async with services(_settings(args), "hub") as hub:
        stats = await _dedup_of(hub).drain()
    print(f"checked {stats.checked:,} queued identities: {stats.merged:,} merged, {stats.queued:,} queued for review")
    return 0


async def _dedup_plan(args: argparse.Namespace) -> int:
    from shared.dedup import plan_sweep

    async with services(_settings(args), "hub", frequencies=False, sign=False) as hub:
        made = await plan_sweep(hub.store, "sweep", size=args.batch, restart=args.restart)
    if made:
        print(f"cut the sweep into {made:,} slices of about {args.batch:,} identities for mpi-hub dedup worker")
    else:
        print("a sweep is still in progress (slices not done): left as it is (--restart to cut a new one)")
    return 0


async def _dedup_worker(args: argparse.Namespace) -> int:
    from .workers import process_name, run_worker

    if args.lease < 3:
        raise CliError("--lease must be at least 3 seconds", 2)
    name = args.name or process_name()
    async with services(_settings(args), "hub", migrate=False, dedup_actor=f"dedup:{name}") as hub:
        dedup = _dedup_of(hub)

        def on_slice(lo: int, hi: int, stats: Any) -> None:
            print(f"slice ({lo}, {hi}]: {stats.checked:,} checked, {stats.merged:,} merged, {stats.queued:,} queued",
                  file=sys.stderr, flush=True)

        out = await run_worker(dedup, worker=name, lease_seconds=args.lease, poll_seconds=args.poll, batch=args.batch,
                               until_idle=args.until_idle, on_slice=on_slice)
    assert out.dedup is not None
    print(f"worker {name}: {out.slices:,} slices and {out.pending_batches:,} pending batches, "
          f"{out.dedup.checked:,} checked, {out.dedup.merged:,} merged, {out.dedup.queued:,} queued for review")
    return 0


async def _import(args: argparse.Namespace) -> int:
    """Seed the registry from a file: bulk, resumable, every row mapped (``shared/seed.py``)."""
    path = Path(args.file)
    sha = file_sha256(path)  # a missing file is one line before the database is opened
    # No name frequencies (nothing is matched here) and no signing key: the hub's sync, composed
    # with the rest, only feeds the nodes (its change hook) what the import creates.
    async with services(_settings(args), "hub", frequencies=False, sign=False) as hub:
        stats = await seed_rows(hub.registry, path, actor=args.actor, batch=args.batch, progress=sys.stderr.isatty())
        mapped = await write_map(hub.store, sha, Path(args.map)) if args.map else 0
    report = Path(args.report) if args.report else path.with_name(path.name + ".report.csv")
    append_report(stats.report, report)
    invalid = [e for e in stats.report if e["action"] == "error"]
    for entry in invalid[:_SHOWN_ERRORS]:
        print(f"{path}:{entry['line']}: {entry['error']}", file=sys.stderr)
    if len(invalid) > _SHOWN_ERRORS:
        print(f"{path}: {len(invalid) - _SHOWN_ERRORS} more invalid rows in {report}", file=sys.stderr)
    rate = stats.rows / stats.seconds if stats.seconds else 0.0
    print(
        f"imported {stats.rows} rows in {stats.seconds:.1f} s ({rate:.0f}/s): {stats.created} created "
        f"(queued for the dedup check), {stats.blocked} blocked (external id linked already), {stats.invalid} invalid"
        + (f", {stats.skipped} already imported" if stats.skipped else "")
        + f"; report: {report}"
        + (f"; map of {mapped} rows: {args.map}" if args.map else "")
    )
    return 1 if stats.invalid else 0


def _enrolment_file(args: argparse.Namespace) -> Path:
    """Where an enrolment (``node enroll``, ``node replace``) goes, checked before anything is written."""
    if not re.match(r"^https?://", args.hub_url):
        raise CliError("--hub-url must be an http:// or https:// URL", 2)
    out = Path(args.out)
    if out.exists():
        raise CliError(f"{out} exists already: choose another --out")
    return out


async def _node_enroll(args: argparse.Namespace) -> int:
    region = region_code(args.region)
    subscribe = [region_code(r, "--subscribe region") for r in args.subscribe.split(",") if r.strip()] if args.subscribe else []
    out = _enrolment_file(args)
    async with _hub(args) as hub:
        enrolment = await hub.enrol(args.name, region, args.hub_url, subscribe, again=args.again)
    write_private(out, json.dumps(enrolment.to_json(), indent=2).encode(), exclusive=True)
    print(f"enrolled node {args.name} as number {enrolment.node_number} ({', '.join(enrolment.regions)}): {out}")
    return 0


async def _node_replace(args: argparse.Namespace) -> int:
    out = _enrolment_file(args)
    async with _hub(args) as hub:
        enrolment = await hub.replace(args.name, args.hub_url, args.new_name)
    write_private(out, json.dumps(enrolment.to_json(), indent=2).encode(), exclusive=True)
    print(f"revoked node {args.name}; its replacement {enrolment.name} is number {enrolment.node_number} "
          f"({', '.join(enrolment.regions)}, with its holdings): mpi-node init --enroll {out}")
    return 0


async def _node_revoke(args: argparse.Namespace) -> int:
    async with _hub(args) as hub:
        count = await hub.revoke(args.name)
    print(f"revoked node {args.name} ({count} key(s))")
    return 0


async def _node_list(args: argparse.Namespace) -> int:
    async with _hub(args) as hub:
        for node in await hub.nodes():
            print(json.dumps(node))
    return 0


async def _key_reseal(args: argparse.Namespace) -> int:
    """Seal the hub's signing key under a new sealing key (or, for an older hub, seal a key kept in clear)."""
    settings = _settings(args)
    async with services(settings, "hub", frequencies=False, sign=False) as hub:
        store = hub.store
        meta = store.meta
        if SEALED_META in meta:
            key = hub_signing_key(meta, settings)
        elif PLAIN_META in meta:
            key = SigningKey(bytes.fromhex(meta[PLAIN_META]))
        else:
            raise CliError("this database is not a hub's: run mpi-hub init")
        new_secret = os.environ.get("MPI_HUB_KEY_NEW_SECRET", "")
        if args.new_key_file:
            if Path(args.new_key_file).exists():
                raise CliError(f"{args.new_key_file} exists already: --new-key-file names a file to create")
            sealing, source = sealing_key("", args.new_key_file, create=True)
        elif new_secret:
            if len(new_secret) < 32:
                raise CliError("MPI_HUB_KEY_NEW_SECRET must be at least 32 characters", 2)
            sealing, source = sealing_key(new_secret, "")
        elif SEALED_META not in meta:
            sealing, source = sealing_key(settings.hub_key_secret, settings.hub_key_file, create=True)
        else:
            raise CliError("give the new sealing key: --new-key-file FILE or MPI_HUB_KEY_NEW_SECRET", 2)
        async with store.write("cli:key-reseal") as tx:
            await tx.conn.execute(sa.delete(t.node_meta).where(t.node_meta.c.key.in_([SEALED_META, PLAIN_META])))
            await tx.conn.execute(sa.insert(t.node_meta).values(key=SEALED_META, value=seal_signing_key(key, sealing)))
            tx.audit("hub_key_reseal", None, sealed_with=source.split("/")[-1], key_id=key_id(key.verify_key))
    print(f"sealed the hub's signing key {key_id(key.verify_key)} with {source}")
    if args.new_key_file or new_secret:
        print("serve the hub with " + (f"MPI_HUB_KEY_FILE={source}" if args.new_key_file else
                                       "MPI_HUB_KEY_SECRET set to the new secret") + " from now on")
    return 0


async def _sync_import(args: argparse.Namespace) -> int:
    data = Path(args.file).read_bytes()
    async with _hub(args) as hub:
        sets, changes = await hub.import_bundle(data)
    print(f"imported {sets} change set(s), {changes} change(s) (already held ones are skipped)")
    return 0


async def _sync_export(args: argparse.Namespace) -> int:
    async with _hub(args) as hub:
        data = await hub.export_for(args.node)
    write_private(args.file, data)
    print(f"wrote {len(data)} bytes for node {args.node} to {args.file}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="mpi-hub",
        description="The ministry hub of the Master Patient Index (PostgreSQL).",
        epilog="settings (environment variables):\n" + settings_table(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    init = sub.add_parser("init", help="create the schema (and the database) and the hub's signing key")
    _db(init)
    init.add_argument("--country", required=True, help="ISO alpha-2 country code, e.g. SN")
    init.set_defaults(func=_init)

    serve = sub.add_parser("serve", help="serve the API, sync and enrolment")
    _db(serve)
    serve.add_argument("--host", default=None, help="MPI_HOST; default 127.0.0.1")
    serve.add_argument("--port", type=int, default=None, help="MPI_PORT; default 8080")
    serve.set_defaults(func=_serve)

    migrate = sub.add_parser("migrate", help="bring the database schema up to date")
    _db(migrate)
    migrate.set_defaults(func=_migrate)

    imp = sub.add_parser("import", help="seed the registry from a CSV or JSON-lines file, in bulk (no matching: "
                         "the dedup checks the rows)")
    _db(imp)
    imp.add_argument("file", help="CSV with a header row (external_ids.<system> columns), or .jsonl")
    imp.add_argument("--map", default=None, metavar="MAP.csv",
                     help="write line,mpi_id,status for every data row (created, blocked, invalid)")
    imp.add_argument("--report", default=None, metavar="OUT.csv",
                     help="CSV report of the rows not created (default FILE.report.csv; appended to)")
    imp.add_argument("--batch", type=positive_int, default=BATCH, help="rows per transaction")
    imp.add_argument("--actor", default="import", help="name recorded in the audit log")
    imp.set_defaults(func=_import)

    add_token_commands(sub, _db)
    sub.choices["token"].set_defaults(func=_token)

    node = sub.add_parser("node", help="enrol, revoke and list nodes")
    node_sub = node.add_subparsers(dest="node_command", required=True, parser_class=OneLineParser)
    enroll = node_sub.add_parser("enroll", help="reserve a node number and write the node's enrolment file")
    _db(enroll)
    enroll.add_argument("--name", required=True)
    enroll.add_argument("--region", required=True, help="the node's region, e.g. DKR")
    enroll.add_argument("--hub-url", required=True, help="the URL nodes reach this hub at")
    enroll.add_argument("--out", required=True, help="enrolment file to write (holds a one-time secret)")
    enroll.add_argument("--subscribe", default=None, help="more regions the node receives, e.g. THI,ZIG")
    enroll.add_argument("--again", action="store_true",
                        help="a new file for a node enrolled but not registered yet (the old file stops working)")
    enroll.set_defaults(func=_node_enroll)
    revoke = node_sub.add_parser("revoke", help="revoke a node's keys")
    _db(revoke)
    revoke.add_argument("name")
    revoke.set_defaults(func=_node_revoke)
    replace = node_sub.add_parser("replace", help="revoke a lost node and write the enrolment file of its replacement")
    _db(replace)
    replace.add_argument("name", help="the lost node")
    replace.add_argument("--hub-url", required=True, help="the URL nodes reach this hub at")
    replace.add_argument("--out", required=True, help="enrolment file to write (holds a one-time secret)")
    replace.add_argument("--new-name", default=None, help="the replacement's name (default: NAME-2, NAME-3...)")
    replace.set_defaults(func=_node_replace)
    listing = node_sub.add_parser("list", help="nodes, cursors and state, one JSON object a line")
    _db(listing)
    listing.set_defaults(func=_node_list)

    key = sub.add_parser("key", help="the hub's signing key, sealed at rest")
    key_sub = key.add_subparsers(dest="key_command", required=True, parser_class=OneLineParser)
    reseal = key_sub.add_parser("reseal", help="seal the signing key under a new sealing key (or seal a key in clear)")
    _db(reseal)
    reseal.add_argument("--new-key-file", default=None, help="create this sealing-key file (0600) and seal with it; "
                        "or set MPI_HUB_KEY_NEW_SECRET")
    reseal.set_defaults(func=_key_reseal)

    sync = sub.add_parser("sync", help="sync with no network: bundle files")
    sync_sub = sync.add_subparsers(dest="sync_command", required=True, parser_class=OneLineParser)
    imp = sync_sub.add_parser("import", help="apply a node's bundle (mpi-node sync export)")
    _db(imp)
    imp.add_argument("file")
    imp.set_defaults(func=_sync_import)
    exp = sync_sub.add_parser("export", help="write a node's bundle: acknowledgement and what it must pull")
    _db(exp)
    exp.add_argument("--node", required=True, help="the node's name")
    exp.add_argument("file")
    exp.set_defaults(func=_sync_export)

    dedup = sub.add_parser("dedup", help="cross-region duplicate detection")
    dedup_sub = dedup.add_subparsers(dest="dedup_command", required=True, parser_class=OneLineParser)
    sweep = dedup_sub.add_parser("sweep", help="re-check the whole registry; resumes an interrupted sweep")
    _db(sweep)
    sweep.add_argument("--batch", type=positive_int, default=1000, help="identities checked per batch (bounds memory)")
    sweep.add_argument("--restart", action="store_true", help="start again from the first identity")
    sweep.add_argument(
        "--stop-after", type=positive_int, default=None, metavar="N",
        help="stop once about N identities are checked (a whole batch at least); the next sweep resumes",
    )
    sweep.set_defaults(func=_dedup_sweep)
    once = dedup_sub.add_parser("run", help="check now what nodes registered since the last pass (one drain pass)")
    _db(once)
    once.set_defaults(func=_dedup_run)
    plan = dedup_sub.add_parser("plan", help="cut a sweep into slices for mpi-hub dedup worker processes")
    _db(plan)
    plan.add_argument("--batch", type=positive_int, default=1000, help="identities per slice")
    plan.add_argument("--restart", action="store_true", help="cut a new sweep even if one is in progress")
    plan.set_defaults(func=_dedup_plan)
    worker = dedup_sub.add_parser(
        "worker", help="claim and check dedup work (new registrations, sweep slices) until stopped; run any number"
    )
    _db(worker)
    worker.add_argument("--name", default=None, help="this worker's name in dedup_slice (default host:pid)")
    worker.add_argument("--batch", type=positive_int, default=1000, help="identities checked per batch")
    worker.add_argument("--lease", type=float, default=60.0,
                        help="seconds a claim holds without a heartbeat (a killed worker's slice is taken again after)")
    worker.add_argument("--poll", type=float, default=5.0, help="seconds between two looks when there is no work")
    worker.add_argument("--until-idle", action="store_true",
                        help="exit once no slice is left to anyone and nothing is pending (a cron job, a test)")
    worker.set_defaults(func=_dedup_worker)
    add_model_commands(sub, _db)
    return parser


def main(argv: list[str] | None = None) -> int:
    # Whatever this process creates (key files, bundles) is its user's alone.
    os.umask(0o077)
    args = build_parser().parse_args(argv)
    try:
        code = run(args.func, args)
    except NotInitialised as exc:  # pragma: no cover - run() reports it already
        print(f"error: {exc}", file=sys.stderr)
        code = 1
    sys.stdout.flush()
    return code
