"""The systemd units and environment files under deploy/: what they run exists, what they set is a setting."""

from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hub.cli import build_parser as hub_parser
from node.cli import build_parser as node_parser
from shared.settings import Settings

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
SERVICES = {"mpi-node.service": ("mpi-node", "node.env"), "mpi-hub.service": ("mpi-hub", "hub.env")}
PARSERS = {"mpi-node": node_parser, "mpi-hub": hub_parser}


def _unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=True, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((DEPLOY / name).read_text())
    return parser


def _environment(name: str) -> dict[str, str]:
    pairs = [line.split("=", 1) for line in (DEPLOY / name).read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    return {k: v for k, v in pairs}


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_services_restart_run_as_their_user_and_read_their_environment(name: str) -> None:
    command, env_file = SERVICES[name]
    service = _unit(name)["Service"]
    assert service["Restart"] == "on-failure"
    assert service["User"] == service["Group"] == "mpi"
    assert service["EnvironmentFile"] == f"/etc/mpi/{env_file}"
    assert service["UMask"] == "0077" and service["StateDirectory"] == "mpi"
    assert "/var/lib/mpi" in service["ReadWritePaths"].split()
    argv = shlex.split(service["ExecStart"])
    assert argv[0] == f"/opt/mpi/venv/bin/{command}"
    PARSERS[command]().parse_args(argv[1:])  # a command the program has (exits 2 otherwise)
    assert _unit(name)["Install"]["WantedBy"] == "multi-user.target"


@pytest.mark.parametrize("env_file", ["node.env", "hub.env"])
def test_environment_files_set_only_real_settings(env_file: str) -> None:
    known = {variable for variable, _, _ in Settings.describe()}
    values = _environment(env_file)
    assert values and set(values) <= known, set(values) - known
    Settings.from_env(values)  # every value is valid
    if env_file == "node.env":
        assert values["MPI_DATA_DIR"].startswith("/var/lib/mpi/")  # under the StateDirectory
    else:
        assert values["MPI_HUB_KEY_FILE"] and values["MPI_DATABASE_URL"].startswith("postgresql://")


def test_the_backup_timer_runs_a_sealed_backup() -> None:
    service = _unit("mpi-node-backup.service")["Service"]
    assert service["Type"] == "oneshot" and service["User"] == "mpi"
    script = shlex.split(service["ExecStart"])[-1].replace("%%", "%")
    argv = shlex.split(script.removeprefix("exec "))
    assert argv[:2] == ["/opt/mpi/venv/bin/mpi-node", "backup"] and "--passphrase-file" in argv
    node_parser().parse_args(argv[1:])
    assert "/var/backups/mpi" in service["ReadWritePaths"].split()
    assert _unit("mpi-node-backup.timer")["Timer"]["Persistent"] == "true"


def test_systemd_accepts_the_units(tmp_path: Path) -> None:
    """systemd-analyze verify, with the install paths pointed at this checkout's programs."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (the structure tests above still ran)")
    programs = Path(sys.executable).parent
    for f in DEPLOY.glob("mpi-*"):
        text = f.read_text().replace("/opt/mpi/venv/bin", str(programs)).replace("/etc/mpi/", f"{tmp_path}/")
        (tmp_path / f.name).write_text(text)
    for env in ("node.env", "hub.env"):
        (tmp_path / env).write_text((DEPLOY / env).read_text())
    units = sorted(str(p) for p in tmp_path.glob("mpi-*"))
    done = subprocess.run([analyze, "verify", *units], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stderr.strip() == "", done.stderr
