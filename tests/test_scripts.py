"""scripts/test itself: what it does on a machine without Chromium (a real bash, a PATH without it)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# What scripts/test and scripts/_venv.sh call, and nothing else: no chromium, apt-get or sudo.
_TOOLS = ["bash", "sha256sum", "cut", "dirname", "find", "id", "head", "ls", "sleep", "env"]


def _bare_path(tmp_path: Path) -> str:
    folder = tmp_path / "bin"
    folder.mkdir()
    for tool in _TOOLS:
        found = shutil.which(tool)
        assert found, tool
        (folder / tool).symlink_to(found)
    (folder / "python3").symlink_to(sys.executable)
    return str(folder)


def _scripts_test(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MPI_TEST_CHROMIUM", "PYTEST_", "PYTHON"))}
    env.update(PATH=_bare_path(tmp_path), MPI_TEST_WORKERS="0", PYTHON="python3")
    return subprocess.run(["bash", str(ROOT / "scripts" / "test"), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_without_chromium_the_browser_tests_are_refused_in_one_line(tmp_path: Path) -> None:
    for i, args in enumerate((["tests/test_console_browser.py"], ["tests"], ["-k", "nothing_at_all"])):
        folder = tmp_path / str(i)
        folder.mkdir()
        done = _scripts_test(folder, *args)
        assert done.returncode == 1, (args, done.stdout, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert lines == ["scripts/test: the browser tests need Chromium: install it (sudo apt-get install chromium) "
                         "or set MPI_TEST_CHROMIUM to a Chromium binary"], done.stderr
        assert "passed" not in done.stdout and "failed" not in done.stdout  # no test ran


def test_without_chromium_other_tests_run(tmp_path: Path) -> None:
    done = _scripts_test(tmp_path, "tests/test_docs.py", "-k", "two_commands", "-p", "no:cacheprovider")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout
