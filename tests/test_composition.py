"""One composition root: no process assembles its own registry, matcher, sync or dedup.

``shared/compose.py`` is the only module of shared/, node/, hub/ and scripts/ that builds a
``Registry``, a matcher from the settings, name frequencies, the role's sync and dedup; only it
reads the name frequencies (once per process); only ``shared/stores.py`` makes a role's
``Store``. The check reads the code (every call, wherever it sits); the rest of the file
shows what the root hands out: one registry, one set of name counts, one matcher (swappable)
shared by the API, its sync and its dedup runner.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from shared.compose import compose, matcher_for, services
from shared.keys import dedup_runner_key, hub_sync_key, node_sync_key, registry_key, services_key
from shared.matching import NameFrequencies
from shared.schemas import RegisterIn
from shared.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
ROOT_MODULE = "shared/compose.py"
# What a process must get from the composition root, never build itself.
BUILT_BY_ROOT = {"Registry", "matcher_of", "NameFrequencies", "HubSync", "NodeSync", "Dedup", "DedupRunner", "Cards",
                 "registry_of", "load_frequencies"}
# Scripts may build a scratch store and a registry over it (``registry_of``), load its names, and
# time a bare Dedup over it (bench_dedup: the sweep alone, without the hub's feed of its merges).
SCRIPTS_MAY = {"registry_of", "load_frequencies", "Dedup"}


def _called(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, name) of every call of a plain or dotted name: ``Registry(...)``, ``x.load_frequencies()``."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            out.append((node.lineno, name))
    return out


def assembled_outside_root(files: list[Path], root: Path = ROOT) -> list[str]:
    """``path:line name`` for every call that builds a service outside the composition root."""
    found = []
    for path in files:
        rel = path.relative_to(root).as_posix()
        allowed = set(SCRIPTS_MAY) if rel.startswith("scripts/") else set()
        if rel == ROOT_MODULE:
            continue
        for line, name in _called(ast.parse(path.read_text(encoding="utf-8"), rel)):
            if name in BUILT_BY_ROOT - allowed:
                found.append(f"{rel}:{line} {name}")
            if name == "Store" and not rel.startswith("scripts/") and rel != "shared/stores.py":
                found.append(f"{rel}:{line} Store")
    return found


def _code() -> list[Path]:
    return [p for folder in ("shared", "node", "hub", "scripts") for p in sorted((ROOT / folder).rglob("*.py"))]


def test_only_the_composition_root_assembles_services() -> None:
    found = assembled_outside_root(_code())
    assert not found, "build these through shared/compose.py (services, compose, registry_of):\n" + "\n".join(found)


def test_the_check_sees_a_registry_built_by_hand(tmp_path: Path) -> None:
    (tmp_path / "hub").mkdir()
    (tmp_path / "scripts").mkdir()
    (tmp_path / "hub" / "cli.py").write_text(
        "async def f(store, s):\n"
        "    from shared.registry import Registry\n"
        "    r = Registry(store, matcher_of(s.matcher, NameFrequencies()), None)\n"
        "    await r.load_frequencies()\n"
    )
    (tmp_path / "scripts" / "bench.py").write_text("r = registry_of(store, s)\nx = HubSync(store, r)\n")
    found = assembled_outside_root(sorted(tmp_path.rglob("*.py")), tmp_path)
    assert sorted(found) == ["hub/cli.py:3 NameFrequencies", "hub/cli.py:3 Registry", "hub/cli.py:3 matcher_of",
                             "hub/cli.py:4 load_frequencies", "scripts/bench.py:2 HubSync"]


def test_the_hub_app_shares_one_registry_with_its_sync_and_dedup(tmp_path: Path) -> None:
    from hub.app import create_app

    app = create_app(Settings(database_url="postgresql://postgres@127.0.0.1:5432/unused", data_dir=str(tmp_path)))
    built = app[services_key]
    assert built.role == "hub" and built.node_sync is None
    assert app[registry_key] is built.registry
    assert app[hub_sync_key] is built.hub_sync and app[hub_sync_key].registry is built.registry
    assert app[dedup_runner_key] is built.runner and built.runner.dedup.registry is built.registry
    # One table of name counts: what sync applies is what the matcher scores with.
    assert app[hub_sync_key].applier.frequencies is built.frequencies is built.matcher.frequencies


def test_the_node_app_has_its_sync_from_the_root(tmp_path: Path) -> None:
    from node.app import create_app

    app = create_app(Settings(data_dir=str(tmp_path)))
    built = app[services_key]
    assert built.role == "node" and built.hub_sync is None and built.runner is None
    assert app[node_sync_key] is built.node_sync and built.node_sync.registry is app[registry_key]


def test_a_swapped_matcher_scores_from_the_next_call(tmp_path: Path) -> None:
    settings = Settings(data_dir=str(tmp_path))
    built = compose(settings, "node")
    old = built.matcher
    new = matcher_for(Settings(matcher="fellegi_sunter"), built.frequencies)
    built.matcher = new
    assert built.registry.matcher is new and new is not old
    assert type(new).__name__ == "Matcher" and type(old).__name__ == "LearnedMatcher"
    with pytest.raises(ValueError, match="services.frequencies"):
        built.matcher = matcher_for(settings, NameFrequencies())  # counts of its own: refused
    with pytest.raises(ValueError, match="unknown role"):
        compose(settings, "district")


async def test_services_read_the_name_counts_once(tmp_path: Path) -> None:
    settings = Settings(data_dir=str(tmp_path))
    async with services(settings, "node", state=False, frequencies=False) as node:
        await node.store.initialise({"role": "node", "node_id": "node-test", "node_number": "0", "country": "SN",
                                     "region": "DKR", "key_id": "test"})
    async with services(settings, "node", frequencies=False) as node:
        assert node.frequencies.total == 0
        people = [RegisterIn(first_name=f, last_name="Diallo", date_of_birth="1990-01-02", gender="F",
                             region_code="DKR", country_code="SN") for f in ("Awa", "Fatou", "Mariama")]
        async with node.store.write("test") as tx:
            await node.registry.insert_new(tx, [(p, node.registry.person(p)) for p in people])
    async with services(settings, "node") as node:
        assert node.frequencies.total == 3  # read once as the services opened, not once per user of them
