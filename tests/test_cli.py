"""The mpi-node command line, run as real processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def node(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        timeout=60,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_init_token_and_errors(tmp_path: Path) -> None:
    data = tmp_path / "n"
    done = node("init", "--data-dir", str(data), "--country", "SN", "--region", "DKR")
    assert done.returncode == 0, done.stderr
    assert (data / "mpi.sqlite3").exists() and (data / "node.key").stat().st_mode & 0o077 == 0
    token = node("token", "create", "--data-dir", str(data), "--role", "registrar", "--name", "awa")
    assert token.returncode == 0 and token.stdout.strip().startswith("mpi_") and len(token.stdout.strip().split()) == 1
    assert "already" in one_line_error(node("init", "--data-dir", str(data), "--country", "SN", "--region", "DKR"))
    assert "not an initialised node" in one_line_error(node("serve", "--data-dir", str(tmp_path / "nothing")))
    assert "ISO" in one_line_error(node("init", "--data-dir", str(tmp_path / "x"), "--country", "XX", "--region", "DKR"))
    assert "three letters" in one_line_error(node("init", "--data-dir", str(tmp_path / "y"), "--country", "SN", "--region", "D"))
    one_line_error(node("token", "create", "--data-dir", str(data), "--role", "king", "--name", "x"))
    one_line_error(node("bogus"))
    one_line_error(node("serve", "--data-dir", str(data), "--port", "notaport"))
    assert "MPI_PORT" in one_line_error(node("serve", "--data-dir", str(data), env={"MPI_PORT": "abc"}))


def test_environment_variables_are_read(tmp_path: Path) -> None:
    data = tmp_path / "env"
    done = node("init", "--country", "SN", "--region", "THI", env={"MPI_DATA_DIR": str(data)})
    assert done.returncode == 0 and (data / "mpi.sqlite3").exists()


def test_serve_answers_and_stops_cleanly(tmp_path: Path) -> None:
    data = tmp_path / "s"
    assert node("init", "--data-dir", str(data), "--country", "SN", "--region", "DKR").returncode == 0
    token = node("token", "create", "--data-dir", str(data), "--role", "admin", "--name", "a").stdout.strip()
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "node", "serve", "--data-dir", str(data), "--port", str(port)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                    assert json.load(r)["status"] == "ok"
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("node did not start")
                time.sleep(0.1)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/mpi/qr-config", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(request, timeout=5) as r:
            assert json.load(r)["token_type"] == "opaque_sha256"
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
    assert "Traceback" not in proc.stderr.read()  # type: ignore[union-attr]


def test_import_csv_reports_and_resumes(tmp_path: Path) -> None:
    data = tmp_path / "i"
    assert node("init", "--data-dir", str(data), "--country", "SN", "--region", "DKR").returncode == 0
    rows = [
        "first_name,last_name,date_of_birth,gender,region_code,country_code,phone_number,external_ids.dhis2_uid",
        "Aminata,Diallo,1995-03-15,F,DKR,SN,+221771234567,abcDEF123gh",
        "Moussa,Traore,1980-01-02,M,THI,SN,,",
        "Aminata,Diallo,1995-03-15,F,DKR,SN,+221771234567,",
        "Fatou,Sow,2999-01-01,F,DKR,SN,,",
        "Ibrahima,Ndiaye,1990-07-01,M,ZIG,SN,,",
    ]
    csv_file = tmp_path / "list.csv"
    csv_file.write_text("\n".join(rows) + "\n")
    result = node("import", "--data-dir", str(data), str(csv_file))
    assert result.returncode == 1, result.stderr  # one bad row
    assert "3 created" in result.stdout and "1 blocked" in result.stdout and "1 errors" in result.stdout
    assert f"{csv_file}:5: date_of_birth" in result.stderr
    report = (tmp_path / "list.csv.report.csv").read_text().splitlines()
    assert report[0].startswith("line,action")
    assert any(line.startswith("4,blocked,") for line in report)
    again = node("import", "--data-dir", str(data), str(csv_file))
    assert "5 already imported" in again.stdout and "0 created" in again.stdout


def test_import_of_a_file_with_unknown_columns_is_one_line(tmp_path: Path) -> None:
    data = tmp_path / "j"
    assert node("init", "--data-dir", str(data), "--country", "SN", "--region", "DKR").returncode == 0
    bad = tmp_path / "bad.csv"
    bad.write_text("name,surname\nA,B\n")
    assert "unknown column" in one_line_error(node("import", "--data-dir", str(data), str(bad)))
    assert "no such file" in one_line_error(node("import", "--data-dir", str(data), str(tmp_path / "none.csv")))


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_the_data_folder_is_the_users_alone(tmp_path: Path) -> None:
    data = tmp_path / "private"
    assert node("init", "--data-dir", str(data), "--country", "SN", "--region", "DKR").returncode == 0
    token = node("token", "create", "--data-dir", str(data), "--role", "registrar", "--name", "w").stdout.strip()
    assert token
    assert _mode(data) == 0o700
    files = [p for p in data.iterdir() if p.is_file()]
    assert any(p.name == "mpi.sqlite3" for p in files)
    assert {p.name: _mode(p) for p in files} == {p.name: 0o600 for p in files}
    # A folder an older version (or a hand) left open is closed by the next command.
    data.chmod(0o755)
    (data / "mpi.sqlite3").chmod(0o644)
    listing = node("token", "list", "--data-dir", str(data))
    assert listing.returncode == 0, listing.stderr
    assert _mode(data) == 0o700 and _mode(data / "mpi.sqlite3") == 0o600
