"""What the node and hub command lines share: one-line errors, token and settings commands.

Every failure a user can cause ends as one line on stderr and a non-zero exit (2 for a
bad command line or configuration, 1 for anything else); never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

import pycountry
import sqlalchemy as sa

from .auth import ROLES, Auth, expiry
from .compose import registry_of, services
from .redact import exception_text
from .settings import Settings, SettingsError
from .storage.store import NotInitialised
from .sync.errors import LinkDown, SyncError, one_line

__all__ = [
    "CliError",
    "OneLineParser",
    "add_token_commands",
    "country_code",
    "region_code",
    "registry_for",
    "run",
    "settings_table",
]


class CliError(Exception):
    """A failure to report as one line; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def country_code(text: str, flag: str = "--country") -> str:
    """A command-line country: an ISO 3166-1 alpha-2 code, upper-cased, or exit 2."""
    code = text.upper()
    if pycountry.countries.get(alpha_2=code) is None:
        raise CliError(f"{flag} {text!r} is not an ISO 3166-1 alpha-2 code", 2)
    return code


def region_code(text: str, flag: str = "--region") -> str:
    """A command-line region: three letters, upper-cased, or exit 2."""
    if not re.fullmatch(r"[A-Z]{3}", text.upper()):
        raise CliError(f"{flag} {text!r} must be three letters, e.g. DKR", 2)
    return text.upper()


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1 (argparse names the flag in its one-line error)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is less than 1")
    return value


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad command line in one line, not a usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def run(main: Callable[[argparse.Namespace], Awaitable[int] | int], args: argparse.Namespace) -> int:
    """Run a command, turning every expected failure into one line and an exit status."""
    try:
        result = main(args)
        if isinstance(result, int):
            return result
        return int(asyncio.run(_await(result)) or 0)
    except SettingsError as exc:
        print(f"error: bad setting: {exc}", file=sys.stderr)
        return 2
    except (SyncError, LinkDown) as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 1
    except (CliError, NotInitialised, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return getattr(exc, "code", 1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except sa.exc.SQLAlchemyError as exc:  # the database's own line, never the statement's values
        print(f"error: {exception_text(exc)}", file=sys.stderr)
        return 1
    except Exception as exc:  # anything else is a bug, but the user still gets one line
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


async def _await(result: Awaitable[int]) -> int:
    return await result


def add_token_commands(sub: Any, store_args: Callable[[argparse.ArgumentParser], None]) -> None:
    token = sub.add_parser("token", help="API tokens")
    token_sub = token.add_subparsers(dest="token_command", required=True, parser_class=OneLineParser)
    create = token_sub.add_parser("create", help="create a token and print it (only the token, on stdout)")
    store_args(create)
    create.add_argument("--role", required=True, choices=sorted(ROLES, key=ROLES.__getitem__))
    create.add_argument("--name", required=True)
    create.add_argument(
        "--expires", default=None, metavar="DURATION|DATE",
        help="when the token stops working: 90d, 12h, 30m, 45s, 2w, or 2027-01-31 (default: never)",
    )
    listing = token_sub.add_parser("list", help="every token: name, role, state, created, last used, expiry (never the token)")
    store_args(listing)
    listing.add_argument("--json", action="store_true", help="one JSON object a line")
    revoke = token_sub.add_parser("revoke", help="revoke every token of a name")
    store_args(revoke)
    revoke.add_argument("--name", required=True)


async def token_command(settings: Settings, role: str, args: argparse.Namespace) -> int:
    async with services(settings, role, migrate=False, frequencies=False, sign=False) as opened:
        auth = Auth(opened.store)
        if args.token_command == "create":
            expires_at = expiry(args.expires) if args.expires else None
            print(await auth.create_token(args.role, args.name, expires_at))
        elif args.token_command == "list":
            _print_tokens(await auth.list_tokens(), as_json=args.json)
        else:
            count = await auth.revoke_token(args.name)
            print(f"revoked {count} token(s) named {args.name}")
    return 0


def _print_tokens(tokens: list[dict[str, Any]], *, as_json: bool) -> None:
    if as_json:
        for token in tokens:
            print(json.dumps(token))
        return
    columns = ["name", "role", "state", "created_at", "last_used_at", "expires_at"]
    rows = [[str(token[c] or "-") for c in columns] for token in tokens]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
    for row in [columns, *rows]:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


# A registry over a store built by hand (tests): the composition root's, under its older name.
registry_for = registry_of


def settings_table() -> str:
    return "\n".join(f"  {var:<28} {default!r:<22} {text}" for var, default, text in Settings.describe())
