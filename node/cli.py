"""mpi-node: initialise, serve, tokens and bulk import of a district node.

Each subcommand is a short function over the library; failures become one stderr line.
"""

from __future__ import annotations

import argparse
import re
import sys
import uuid
from pathlib import Path

import pycountry
from aiohttp import web

from shared.app import configure_logging
from shared.cli import CliError, OneLineParser, add_token_commands, run, settings_table, token_command
from shared.crypto import generate_key_file, key_id
from shared.ids import MAX_NODE_NUMBER
from shared.settings import Settings
from shared.storage.store import utc_now

from .app import create_app
from .storage import DB_NAME, KEY_NAME, node_store

__all__ = ["main"]


def _data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", default=None, help="node data folder (MPI_DATA_DIR; default ./mpi-data)")


def _settings(args: argparse.Namespace, **overrides: object) -> Settings:
    return Settings.from_env(None, data_dir=args.data_dir, **overrides)


def _require_initialised(settings: Settings) -> None:
    if not (Path(settings.data_dir) / DB_NAME).exists():
        raise CliError(f"{settings.data_dir} is not an initialised node: run mpi-node init --data-dir {settings.data_dir}")


async def _init(args: argparse.Namespace) -> int:
    settings = _settings(args)
    country, region = args.country.upper(), args.region.upper()
    if pycountry.countries.get(alpha_2=country) is None:
        raise CliError(f"--country {args.country!r} is not an ISO 3166-1 alpha-2 code", 2)
    if not re.fullmatch(r"[A-Z]{3}", region):
        raise CliError(f"--region {args.region!r} must be three letters, e.g. DKR", 2)
    if not 0 <= args.node_number <= MAX_NODE_NUMBER:
        raise CliError(f"--node-number must be 0..{MAX_NODE_NUMBER}", 2)
    folder = Path(settings.data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    if (folder / DB_NAME).exists() or (folder / KEY_NAME).exists():
        raise CliError(f"{folder} holds a node already")
    signing_key = generate_key_file(folder / KEY_NAME)
    store = node_store(settings)
    await store.connect()
    try:
        await store.migrate()
        await store.initialise(
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
    finally:
        await store.close()
    print(f"initialised node {country}-{region} (node number {args.node_number}) in {folder}")
    return 0


async def _migrate(args: argparse.Namespace) -> int:
    settings = _settings(args)
    _require_initialised(settings)
    store = node_store(settings)
    await store.connect()
    try:
        done = await store.migrate()
    finally:
        await store.close()
    print("applied: " + ", ".join(done) if done else "schema is up to date")
    return 0


def _serve(args: argparse.Namespace) -> int:
    settings = _settings(args, host=args.host, port=args.port)
    _require_initialised(settings)
    configure_logging(settings)
    web.run_app(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        print=lambda _: print(f"node listening on http://{settings.host}:{settings.port}", flush=True),
        access_log=None,
    )
    return 0


async def _token(args: argparse.Namespace) -> int:
    settings = _settings(args)
    _require_initialised(settings)
    return await token_command(node_store(settings), args)


async def _import(args: argparse.Namespace) -> int:
    from shared.bulk import import_file

    settings = _settings(args)
    _require_initialised(settings)
    return await import_file(node_store(settings), settings, Path(args.file), report=args.report, actor=args.actor)


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
    init.add_argument("--country", required=True, help="ISO alpha-2 country code, e.g. SN")
    init.add_argument("--region", required=True, help="three-letter region code, e.g. DKR")
    init.add_argument("--node-number", type=int, default=0, help="from the hub's enrolment; 0 for a standalone node")
    init.set_defaults(func=_init)

    serve = sub.add_parser("serve", help="serve the API")
    _data_dir(serve)
    serve.add_argument("--host", default=None, help="MPI_HOST; default 127.0.0.1")
    serve.add_argument("--port", type=int, default=None, help="MPI_PORT; default 8080")
    serve.set_defaults(func=_serve)

    migrate = sub.add_parser("migrate", help="bring the database schema up to date")
    _data_dir(migrate)
    migrate.set_defaults(func=_migrate)

    add_token_commands(sub, _data_dir)
    sub.choices["token"].set_defaults(func=_token)

    imp = sub.add_parser("import", help="register a CSV or JSON-lines file of beneficiaries through the matcher")
    _data_dir(imp)
    imp.add_argument("file", help="CSV with a header row, or .jsonl")
    imp.add_argument("--report", default=None, help="CSV report of duplicates (default FILE.report.csv)")
    imp.add_argument("--actor", default="import", help="name recorded in the audit log")
    imp.set_defaults(func=_import)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code = run(args.func, args)
    sys.stdout.flush()
    return code
