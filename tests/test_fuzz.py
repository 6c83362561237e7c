"""Schema-driven fuzzing (schemathesis) of a running node and a running hub.

Each server is a real process (``python -m node serve`` on SQLite, ``python -m hub serve`` on
a fresh PostgreSQL database); the fuzzer reads its ``/openapi.json`` and sends every
operation a bounded number of generated requests, valid and invalid, with an admin token.
Every answer must be below 500 and conform to the document: a declared status, content type,
body schema and headers. ``MPI_FUZZ_EXAMPLES`` sets the examples per operation and mode
(10 by default: the whole file takes under two minutes on a 2-core machine).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import schemathesis
from cluster import Hub, Server, cli, free_port
from conftest import AMINATA
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

EXAMPLES = int(os.environ.get("MPI_FUZZ_EXAMPLES", "10"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance]


def _fuzz(url: str, token: str) -> list[str]:
    """Fuzz every operation of the server at ``url``; returns one line per failure."""
    schema = schemathesis.openapi.from_url(url + "/openapi.json")
    headers = {"Authorization": f"Bearer {token}"}
    failures: list[str] = []
    calls = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                      phases=[Phase.explicit, Phase.generate],
                      suppress_health_check=list(HealthCheck))
            def run(case: Any) -> None:
                nonlocal calls
                calls += 1
                case.call_and_validate(base_url=url, headers=headers, checks=CHECKS, timeout=30)

            try:
                run()
            except Unsatisfiable:  # nothing to make invalid: an operation with no parameters
                continue
            except Exception as exc:  # noqa: BLE001 - every failure is reported, not only the first
                failures.append(f"{operation.method.upper()} {operation.path} ({mode}): {str(exc)[:1500]}")
    assert calls >= 10 * EXAMPLES, calls  # every operation was called, most of them twice over
    return failures


def test_fuzz_a_running_node(tmp_path: Path) -> None:
    data = tmp_path / "node"
    cli("node", "init", "--data-dir", str(data), "--country", "SN", "--region", "DKR")
    token = cli("node", "token", "create", "--data-dir", str(data), "--role", "admin", "--name", "fuzz").stdout.strip()
    server = Server("node", ["--data-dir", str(data)], free_port(), token)
    server.start()
    try:
        assert server.call("POST", "/mpi/register", AMINATA)[0] == 201
        failures = _fuzz(server.url, token)
        assert server.call("GET", "/health", token="")[0] == 200
    finally:
        server.stop()
    assert not failures, "\n\n".join(failures)


def test_fuzz_a_running_hub(hub: Hub) -> None:
    assert hub.call("POST", "/mpi/register", AMINATA)[0] == 201
    failures = _fuzz(hub.url, hub.token)
    assert hub.call("GET", "/health")[0] == 200
    assert not failures, "\n\n".join(failures)
