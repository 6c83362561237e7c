"""The README documents every route, setting and command (datasette-style docs test)."""

from __future__ import annotations

import argparse
from pathlib import Path

from hub.app import HUB_ROUTES
from hub.cli import build_parser as hub_parser
from node.app import NODE_ROUTES
from node.cli import build_parser
from shared.routes import REVIEW_ROUTES, ROUTES
from shared.settings import Settings

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_readme_opens_with_the_two_commands() -> None:
    first_block = README.split("```bash", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in first_block.strip().splitlines()]
    assert commands == ["scripts/node", "scripts/test"]


def test_every_route_is_in_the_readme() -> None:
    for route in [*ROUTES, *REVIEW_ROUTES, *HUB_ROUTES, *NODE_ROUTES]:
        shown = f"`{route.method} {route.path}`"  # the whole path, parameters and all
        assert shown in README, shown


def test_every_setting_is_in_the_readme() -> None:
    for variable, _, _ in Settings.describe():
        assert f"`{variable}`" in README, variable


def _commands(parser: argparse.ArgumentParser, prefix: str) -> list[str]:
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out.append(f"{prefix} {name}")
                out.extend(_commands(sub, f"{prefix} {name}"))
    return out


def test_every_node_command_is_in_the_readme() -> None:
    for command in _commands(build_parser(), "mpi-node"):
        assert command in README, command


def test_every_hub_command_is_in_the_readme() -> None:
    for command in _commands(hub_parser(), "mpi-hub"):
        assert command in README, command
