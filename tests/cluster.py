"""Real processes for sync tests: a hub on a fresh PostgreSQL database and nodes on SQLite.

Every process gets PYTHONPATH of this checkout and its own free port; nothing is mocked.
Nodes reach the hub through a ``Proxy`` when a test wants to break the link.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
# Hubs seal their signing key with a key file outside the database: one for the test session.
os.environ.setdefault("MPI_HUB_KEY_FILE", str(Path(tempfile.mkdtemp(prefix="mpi-seal-")) / "hub.key"))
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "MPI_LOG_LEVEL": "WARNING", "MPI_AUDIT_FLUSH_SECONDS": "0.05"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli(module: str, *args: str, env: dict[str, str] | None = None, check: bool = True,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, cwd=ROOT,
        env={**ENV, **(env or {})}, timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{module} {' '.join(args)} failed: {result.stderr.strip()}")
    return result


def wait_http(url: str, proc: subprocess.Popen[bytes], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{url}: the process exited with {proc.returncode}")
        try:
            urllib.request.urlopen(url + "/health", timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"{url} did not answer")


def call(url: str, method: str, path: str, token: str | None = None, body: Any = None,
         timeout: float = 60) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


@dataclass
class Server:
    kind: str  # "hub" or "node"
    args: list[str]
    port: int
    token: str = ""
    proc: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.kind, "serve", *self.args, "--port", str(self.port)],
            cwd=ROOT, env={**ENV, **self.env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        wait_http(self.url, self.proc)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()
        self.proc = None

    def kill9(self) -> None:
        self.stop(signal.SIGKILL)

    def call(self, method: str, path: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
        return call(self.url, method, path, token or self.token, body)


class Hub(Server):
    def __init__(self, database_url: str) -> None:
        # No test depends on when the dedup job happens to run: those that need its effect
        # run one pass with POST /dedup/run and wait for it.
        super().__init__("hub", ["--database-url", database_url], free_port(),
                         env={"MPI_DEDUP_INTERVAL_SECONDS": "0"})
        self.database_url = database_url
        cli("hub", "init", "--database-url", database_url, "--country", "SN")
        self.token = cli("hub", "token", "create", "--database-url", database_url, "--role", "admin",
                         "--name", "admin").stdout.strip()

    def enroll(self, name: str, region: str, out: Path, hub_url: str, subscribe: str = "") -> Path:
        args = ["node", "enroll", "--database-url", self.database_url, "--name", name, "--region", region,
                "--hub-url", hub_url, "--out", str(out)]
        if subscribe:
            args += ["--subscribe", subscribe]
        cli("hub", *args)
        return out

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.database_url) as conn:
            return list(conn.execute(query, params).fetchall())


class Node(Server):
    def __init__(self, data: Path, enrolment: Path, env: dict[str, str] | None = None) -> None:
        super().__init__("node", ["--data-dir", str(data)], free_port(), env={
            "MPI_SYNC_INTERVAL_SECONDS": "3600", **(env or {})})
        self.data = data
        cli("node", "init", "--data-dir", str(data), "--enroll", str(enrolment), env=self.env)
        self.token = cli("node", "token", "create", "--data-dir", str(data), "--role", "supervisor",
                         "--name", "sup").stdout.strip()

    def sync(self, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return cli("node", "sync", "--data-dir", str(self.data), env=self.env, check=check, timeout=timeout)

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        db = sqlite3.connect(self.data / "mpi.sqlite3", timeout=30)
        try:
            return list(db.execute(query, params).fetchall())
        finally:
            db.close()

    def register(self, **fields: Any) -> str:
        body = {"region_code": "DKR", "country_code": "SN", "force_create": True, **fields}
        status, answer = self.call("POST", "/mpi/register", body)
        assert status == 201, answer
        return str(answer["mpi_id"])


IDENTITY_COLUMNS = ("mpi_id, first_name, last_name, date_of_birth, gender, region_code, country_code, "
                    "phone_number, status, merged_into")


def identities(server: Hub | Node, regions: tuple[str, ...] | None = None) -> dict[str, tuple[Any, ...]]:
    """Every identity a replica holds, as comparable tuples (dates as text)."""
    rows = server.sql(f"SELECT {IDENTITY_COLUMNS} FROM identity")
    out = {}
    for r in rows:
        r = tuple(str(v) if v is not None and not isinstance(v, str) else v for v in r)
        if regions is None or r[5] in regions:
            out[r[0]] = r
    return out


def programmes(server: Hub | Node) -> set[tuple[str, str]]:
    return {(r[0], r[1]) for r in server.sql(
        "SELECT i.mpi_id, p.programme_type FROM programme p JOIN identity i ON i.pk = p.identity_pk")}


def post_raw(url: str, path: str, data: bytes, timeout: float = 60) -> tuple[int, bytes]:
    request = urllib.request.Request(url + path, data=data, method="POST",
                                     headers={"Content-Type": "application/octet-stream"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def exported_envelopes(node: Node, tmp: Path) -> list[bytes]:
    """The change sets a node would push now, as signed envelopes (through mpi-node sync export)."""
    from shared.sync.changeset import split_parts

    out = tmp / f"export-{time.monotonic_ns()}.mpib"
    cli("node", "sync", "export", "--data-dir", str(node.data), str(out), env={**node.env, "MPI_SYNC_BATCH_MAX": "10"})
    return [data for kind, data in split_parts(out.read_bytes()) if kind == "E"]


def sync_now(node: Node) -> dict[str, Any]:
    status, answer = node.call("POST", "/sync/now")
    assert status == 200, answer
    return dict(answer)


def people(node: Node, n: int, prefix: str, region: str = "DKR") -> list[str]:
    first = ["Awa", "Fatou", "Aminata", "Mariama", "Khady", "Moussa", "Ibrahima", "Ousmane", "Cheikh", "Abdou"]
    last = ["Ndiaye", "Diop", "Fall", "Sow", "Ba", "Gueye", "Faye", "Sarr", "Diouf", "Cisse"]
    return [
        node.register(first_name=f"{first[i % 10]}{prefix}{i}", last_name=last[(i * 7) % 10], region_code=region,
                      date_of_birth=f"19{50 + i % 50}-0{1 + i % 9}-1{i % 10}", gender="F" if i % 2 else "M")
        for i in range(n)
    ]
