"""mpi-node: initialise, serve, tokens and bulk import of a district node.

Each subcommand is a short function over the library; failures become one stderr line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web
from nacl.signing import SigningKey

from shared.cli import (
    CliError,
    OneLineParser,
    add_token_commands,
    country_code,
    region_code,
    run,
    settings_table,
    token_command,
)
from shared.compose import services
from shared.crypto import generate_key_file, key_id
from shared.files import write_private
from shared.ids import MAX_NODE_NUMBER
from shared.logs import configure_logging
from shared.settings import Settings
from shared.storage.store import utc_now
from shared.sync.enrolment import Enrolment, enrol
from shared.sync.errors import LinkDown, SyncError, status_of
from shared.sync.node import NodeSync

from .storage import DB_NAME, KEY_NAME
from .sync_client import HttpLink

__all__ = ["main"]


def _data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", default=None, help="node data folder (MPI_DATA_DIR; default ./mpi-data)")


def _settings(args: argparse.Namespace, **overrides: object) -> Settings:
    return Settings.from_env(None, data_dir=args.data_dir, **overrides)


def _require_initialised(settings: Settings) -> None:
    if not (Path(settings.data_dir) / DB_NAME).exists():
        raise CliError(f"{settings.data_dir} is not an initialised node: run mpi-node init --data-dir {settings.data_dir}")


def _read_enrolment(path: str) -> Enrolment:
    try:
        return Enrolment.from_json(json.loads(Path(path).read_text()))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CliError(f"{path} is not an enrolment file (not JSON)") from None


@contextlib.asynccontextmanager
async def _node_sync(settings: Settings) -> AsyncIterator[NodeSync]:
    _require_initialised(settings)
    async with services(settings, "node") as node:
        assert node.node_sync is not None
        yield node.node_sync


async def _register(sync: NodeSync, settings: Settings) -> str:
    """Register the node's key with the hub now, or say it will be done at the first sync."""
    try:
        await HttpLink(sync.meta["hub_url"], settings.sync_timeout_seconds).register(sync.registration_request())
    except LinkDown as exc:
        return f"the hub is out of reach ({exc}): the key will be registered at the first sync"
    except SyncError as exc:
        raise CliError(f"the hub refused the enrolment ({status_of(exc)[1]}): {exc.message}") from None
    await sync.registered_by_hub()
    return "key registered with the hub"


async def _enroll_into(settings: Settings, enrolment: Enrolment) -> str:
    async with _node_sync(settings) as sync:
        await enrol(sync.store, enrolment, bytes(sync.key.verify_key).hex())
        return await _register(sync, settings)


async def _enroll(args: argparse.Namespace) -> int:
    settings = _settings(args)
    enrolment = _read_enrolment(args.file)
    said = await _enroll_into(settings, enrolment)
    print(f"enrolled as node {enrolment.name} (number {enrolment.node_number}); {said}")
    return 0


async def _init(args: argparse.Namespace) -> int:
    settings = _settings(args)
    enrolment = _read_enrolment(args.enroll) if args.enroll else None
    if enrolment is not None:
        args.country = args.country or enrolment.country
        args.region = args.region or enrolment.region
    if not args.country or not args.region:
        raise CliError("init needs --country and --region (or --enroll FILE)", 2)
    country, region = country_code(args.country), region_code(args.region)
    if not 0 <= args.node_number <= MAX_NODE_NUMBER:
        raise CliError(f"--node-number must be 0..{MAX_NODE_NUMBER}", 2)
    folder = Path(settings.data_dir)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    if (folder / DB_NAME).exists() or (folder / KEY_NAME).exists():
        raise CliError(f"{folder} holds a node already")
    signing_key = generate_key_file(folder / KEY_NAME)
    async with services(settings, "node", state=False, frequencies=False) as node:
        await node.store.initialise(
            {
                "role": "node",
                "node_id": f"node-{uuid.uuid4().hex[:16]}",
                "node_number": str(args.node_number),
                "country": country,
                "region": region,
                "key_id": key_id(signing_key.verify_key),
                "public_key": bytes(signing_key.verify_key).hex(),
                "created_at": utc_now(),
            }
        )
    if enrolment is None:
        print(f"initialised node {country}-{region} (node number {args.node_number}) in {folder}")
        return 0
    said = await _enroll_into(settings, enrolment)
    print(f"initialised node {country}-{region} in {folder}, enrolled as {enrolment.name} "
          f"(number {enrolment.node_number}); {said}")
    return 0


async def _key_rotate(args: argparse.Namespace) -> int:
    settings = _settings(args)
    folder = Path(settings.data_dir)
    async with _node_sync(settings) as sync:
        old = sync.store.key_id
        new = SigningKey.generate()
        kid = key_id(new.verify_key)
        pending = folder / f"{KEY_NAME}.{kid}"
        generate_key_file(pending, new)
        try:
            await sync.rotate_key(new)
        except SyncError as exc:
            pending.unlink()
            raise CliError(exc.message) from None
    # The old key stays: it signs the changes written before the rotation until the hub has them.
    (folder / KEY_NAME).rename(folder / f"{KEY_NAME}.{old}")
    pending.rename(folder / KEY_NAME)
    print(f"rotated the node key: {old} -> {kid} (the hub learns it at the next sync)")
    return 0


async def _sync(args: argparse.Namespace) -> int:
    """One round over HTTP, or the same round into a bundle file (export), or the hub's bundle (import).

    Refusals and cut links are one line and exit 1 (``shared.cli.run``, ``shared.sync.errors.one_line``).
    """
    settings = _settings(args)
    async with _node_sync(settings) as sync:
        if args.sync_command == "export":
            data, count = await sync.export_bundle()
            write_private(args.file, data)
            print(f"wrote {count} change(s), {len(data)} bytes, to {args.file}")
            return 0
        if args.sync_command == "import":
            moved = await sync.import_bundle(Path(args.file).read_bytes())
            print(f"imported: pulled {moved.pulled} change(s); acknowledged up to {moved.acked_seq}")
            return 0
        if not sync.enrolled:
            raise CliError("this node is not enrolled with a hub: run mpi-node enroll")
        moved = await sync.round(HttpLink(sync.meta["hub_url"], settings.sync_timeout_seconds))
    for note in moved.notes:
        print(note)
    print(moved.line())
    return 0


async def _migrate(args: argparse.Namespace) -> int:
    settings = _settings(args)
    _require_initialised(settings)
    async with services(settings, "node", state=False, frequencies=False) as node:
        done = node.migrated
    print("applied: " + ", ".join(done) if done else "schema is up to date")
    return 0


def _serve(args: argparse.Namespace) -> int:
    settings = _settings(args, host=args.host, port=args.port)
    _require_initialised(settings)
    # The web stack is imported for serve alone: every other command starts faster without it.
    from .app import create_app

    configure_logging(settings)
    web.run_app(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        print=lambda _: print(f"node listening on http://{settings.host}:{settings.port}", flush=True),
        access_log=None,
    )
    return 0


def _passphrase(args: argparse.Namespace, *, new: bool) -> bytes | None:
    from shared.sealed import read_passphrase

    return read_passphrase(args.passphrase_file, new=new) if args.passphrase_file else None


def _backup(args: argparse.Namespace) -> int:
    from .backup import BackupError, backup

    settings = _settings(args)
    _require_initialised(settings)
    passphrase = _passphrase(args, new=True)
    try:
        made = backup(Path(settings.data_dir), Path(args.file), passphrase)
    except BackupError as exc:
        raise CliError(str(exc)) from None
    sealed = "encrypted" if passphrase else "NOT encrypted (it holds personal data and the node's key: --passphrase-file)"
    print(f"wrote {args.file}: {made['identities']} identities, changes up to {made['last_seq']} "
          f"(the hub had acknowledged {made['acked_seq']}), {sealed}")
    return 0


def _margin(text: str) -> int:
    if not text.isdigit() or int(text) > 1_000_000:
        raise argparse.ArgumentTypeError("--id-margin is a whole number from 0 to 1000000")
    return int(text)


def _restore(args: argparse.Namespace) -> int:
    from .backup import BackupError, restore

    settings = _settings(args)
    try:
        made = restore(Path(settings.data_dir), Path(args.file), _passphrase(args, new=False), args.id_margin)
    except BackupError as exc:
        raise CliError(str(exc)) from None
    print(f"restored node {made['country']}-{made['region']} ({made['node_id']}) into {settings.data_dir} "
          f"from the backup of {made['created_at']}: {made['identities']} identities, changes up to {made['last_seq']}")
    if made.get("settings"):
        print("settings in force when the backup was taken (set them where this node runs): "
              + " ".join(f"{k}={v}" for k, v in made["settings"].items()))
    print(f"the ID counter moved on by {made['id_margin']} (IDs the lost node may have minted after the backup)")
    if made.get("enrolled"):
        print("note: what this node wrote after the backup is not in it; its first sync (mpi-node sync, or the "
              "service's own) brings back from the hub what reached it and says how far behind this copy was; "
              "what never reached the hub is lost")
    return 0


async def _token(args: argparse.Namespace) -> int:
    settings = _settings(args)
    _require_initialised(settings)
    return await token_command(settings, "node", args)


async def _import(args: argparse.Namespace) -> int:
    from shared.bulk import import_file

    settings = _settings(args)
    _require_initialised(settings)
    return await import_file(settings, Path(args.file), report=args.report, actor=args.actor, map_path=args.map)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="mpi-node",
        description="A district node of the Master Patient Index.",
        epilog="settings (environment variables):\n" + settings_table(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    init = sub.add_parser("init", help="create the database and the node's key pair")
    _data_dir(init)
    init.add_argument("--country", default=None, help="ISO alpha-2 country code, e.g. SN")
    init.add_argument("--region", default=None, help="three-letter region code, e.g. DKR")
    init.add_argument("--node-number", type=int, default=0, help="0 for a standalone node (--enroll sets it)")
    init.add_argument("--enroll", default=None, metavar="FILE", help="enrolment file from mpi-hub node enroll")
    init.set_defaults(func=_init)

    enroll = sub.add_parser("enroll", help="enrol an existing node with a hub (an empty node, or one enrolled before)")
    _data_dir(enroll)
    enroll.add_argument("file", help="enrolment file from mpi-hub node enroll")
    enroll.set_defaults(func=_enroll)

    key = sub.add_parser("key", help="the node's signing key")
    key_sub = key.add_subparsers(dest="key_command", required=True, parser_class=OneLineParser)
    rotate = key_sub.add_parser("rotate", help="make a new key, named to the hub in a change signed by the old one")
    _data_dir(rotate)
    rotate.set_defaults(func=_key_rotate)

    sync = sub.add_parser("sync", help="one sync round now (push then pull); or export/import a bundle file")
    _data_dir(sync)
    sync.set_defaults(func=_sync, sync_command=None)
    sync_sub = sync.add_subparsers(dest="sync_command", required=False, parser_class=OneLineParser)
    exp = sync_sub.add_parser("export", help="write the changes the hub lacks to a bundle file")
    _data_dir(exp)
    exp.add_argument("file")
    imp = sync_sub.add_parser("import", help="apply a bundle from the hub (mpi-hub sync export)")
    _data_dir(imp)
    imp.add_argument("file")

    serve = sub.add_parser("serve", help="serve the API")
    _data_dir(serve)
    serve.add_argument("--host", default=None, help="MPI_HOST; default 127.0.0.1")
    serve.add_argument("--port", type=int, default=None, help="MPI_PORT; default 8080")
    serve.set_defaults(func=_serve)

    migrate = sub.add_parser("migrate", help="bring the database schema up to date")
    _data_dir(migrate)
    migrate.set_defaults(func=_migrate)

    backup = sub.add_parser("backup", help="write a consistent copy of the node (database and keys) while it serves")
    _data_dir(backup)
    backup.add_argument("file", help="the backup file to write (atomically, mode 0600)")
    backup.add_argument("--passphrase-file", default=None, metavar="FILE",
                        help="encrypt with the passphrase on this file's first line (Argon2id, SecretBox); recommended")
    backup.set_defaults(func=_backup)

    restore = sub.add_parser("restore", help="restore a backup into an empty or new data folder")
    _data_dir(restore)
    restore.add_argument("file", help="a file from mpi-node backup")
    restore.add_argument("--passphrase-file", default=None, metavar="FILE", help="the passphrase it was encrypted with")
    restore.add_argument("--id-margin", type=_margin, default=100_000, metavar="N",
                         help="move the ID counter on by N, past IDs minted after the backup (default 100000)")
    restore.set_defaults(func=_restore)

    add_token_commands(sub, _data_dir)
    sub.choices["token"].set_defaults(func=_token)

    imp = sub.add_parser("import", help="register a CSV or JSON-lines file of beneficiaries through the matcher")
    _data_dir(imp)
    imp.add_argument("file", help="CSV with a header row, or .jsonl")
    imp.add_argument("--report", default=None, help="CSV report of duplicates (default FILE.report.csv)")
    imp.add_argument("--map", default=None, metavar="MAP.csv",
                     help="write line,mpi_id,status for every data row (created, queued, blocked, invalid)")
    imp.add_argument("--actor", default="import", help="name recorded in the audit log")
    imp.set_defaults(func=_import)
    return parser


def main(argv: list[str] | None = None) -> int:
    # Whatever this process creates (database, journals, keys, bundles, reports) is its user's alone.
    os.umask(0o077)
    args = build_parser().parse_args(argv)
    code = run(args.func, args)
    sys.stdout.flush()
    return code
