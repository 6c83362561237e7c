"""Limits a serving node enforces: rates per client address, body size and time, and what
its headers say (Server, Allow). Real processes and raw sockets.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster import Server, cli, free_port


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    data = tmp_path / "node"
    cli("node", "init", "--data-dir", str(data), "--country", "SN", "--region", "DKR")
    token = cli("node", "token", "create", "--data-dir", str(data), "--role", "admin", "--name", "a").stdout.strip()
    node = Server("node", ["--data-dir", str(data)], free_port(), token, env={
        "MPI_VERIFY_RATE_PER_MINUTE": "5", "MPI_AUTH_FAILURES_PER_MINUTE": "3", "MPI_BODY_TIMEOUT_SECONDS": "1",
    })
    node.start()
    yield node
    node.stop()


def _request(url: str, method: str = "GET", token: str | None = None, data: bytes | None = None) -> tuple[int, Any, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, method=method, headers=headers, data=data)
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, r.headers, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, e.headers, json.loads(e.read())


def _raw(port: int, head: bytes, body: bytes = b"", wait: float = 10) -> tuple[bytes, float]:
    """Send ``head`` (and ``body``), return what came back and how long the answer took."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        started = time.monotonic()
        sock.sendall(head + body)
        received = b""
        while b"\r\n\r\n" not in received or len(received.split(b"\r\n\r\n", 1)[1]) < _length(received):
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
        return received, time.monotonic() - started


def _length(received: bytes) -> int:
    for line in received.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 0


def test_verify_is_rate_limited_per_address(server: Server) -> None:
    for _ in range(5):
        status, _, body = _request(server.url + "/mpi/verify/unknownTokenUnknownToken0123")
        assert status == 404 and body["status"] == "not_found"
    status, headers, body = _request(server.url + "/mpi/verify/unknownTokenUnknownToken0123")
    assert status == 429, body
    assert body["status"] == "rate_limited" and isinstance(body["error"], str)
    assert 1 <= int(headers["Retry-After"]) <= 60
    # Other routes are not counted against verify.
    assert _request(server.url + "/mpi/qr-config", token=server.token)[0] == 200


def test_failed_authentication_is_rate_limited_per_address(server: Server) -> None:
    assert _request(server.url + "/mpi/qr-config", token=server.token)[0] == 200
    for token in ("mpi_wrong1", "mpi_wrong2", None):
        status, _, body = _request(server.url + "/mpi/qr-config", token=token)
        assert status == 401, body
    status, headers, body = _request(server.url + "/mpi/qr-config", token="mpi_wrong4")
    assert status == 429 and body["status"] == "rate_limited" and int(headers["Retry-After"]) >= 1, body
    # Once over the limit, even a good token is refused: a lucky guess would stand out otherwise.
    status, headers, body = _request(server.url + "/mpi/qr-config", token=server.token)
    assert status == 429 and "Retry-After" in headers, body
    # Public routes still answer.
    assert _request(server.url + "/health")[0] == 200


def test_a_huge_announced_body_is_refused_before_it_is_read(server: Server) -> None:
    head = (f"POST /mpi/register HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {server.token}\r\n"
            "Content-Type: application/json\r\nContent-Length: 10737418240\r\n\r\n").encode()
    received, took = _raw(server.port, head)
    assert received.startswith(b"HTTP/1.1 413"), received[:200]
    assert took < 3
    assert json.loads(received.split(b"\r\n\r\n", 1)[1])["status"] == "payload_too_large"


def test_a_slow_body_times_out_with_408(server: Server) -> None:
    head = (f"POST /mpi/register HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {server.token}\r\n"
            "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n").encode()
    received, took = _raw(server.port, head, b'{"first_')
    assert received.startswith(b"HTTP/1.1 408"), received[:200]
    assert 0.9 < took < 5
    assert json.loads(received.split(b"\r\n\r\n", 1)[1])["status"] == "request_timeout"


def test_the_server_header_names_no_version(server: Server) -> None:
    for path, token in (("/health", None), ("/mpi/qr-config", server.token), ("/nowhere", None),
                        ("/mpi/qr-config", None), ("/openapi.json", None)):
        _, headers, _ = _request(server.url + path, token=token)
        assert headers["Server"] == "mpi", (path, headers["Server"])


def test_405_names_the_allowed_methods(server: Server) -> None:
    status, headers, body = _request(server.url + "/audit", method="DELETE", token=server.token)
    assert status == 405 and body["status"] == "method_not_allowed"
    assert headers["Allow"] == "GET"
    # /mpi/register is also the shape of /mpi/{mpi_id}: both routes' methods are allowed there.
    status, headers, _ = _request(server.url + "/mpi/register", method="DELETE", token=server.token)
    assert status == 405 and set(headers["Allow"].split(", ")) == {"GET", "PATCH", "POST"}
    status, headers, _ = _request(server.url + "/mpi/SN-DKR-26-AAAAAAAA", method="PUT", token=server.token)
    assert status == 405 and set(headers["Allow"].split(", ")) == {"GET", "PATCH"}
