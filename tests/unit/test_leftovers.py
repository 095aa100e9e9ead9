"""A test that fails with its processes still running cannot spoil the next one.

Runs a two-test session in a child pytest, with this suite's settings and fixtures:
the first test starts a process and fails before stopping it; the second must
pass — no process left, and no "subprocess … is still running" ResourceWarning
or "Event loop is closed" error surfacing there (as one did in a fresh clone's
`make test` on a busy machine, issue 14).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT, python_env

SESSION = """
import sys

from tests.helpers import LoggedProcess, _started, python_env


async def test_fails_with_its_process_running(tmp_path):
    await LoggedProcess.start(
        [sys.executable, "-c", "import time; time.sleep(120)", "{marker}"],
        tmp_path / "sleeper.log",
        python_env(),
    )
    assert False, "fails on purpose, leaving its process running"


def test_the_next_test_starts_clean():
    import gc

    gc.collect()  # a transport or Popen left behind would warn now, in this test
    assert _started == []
"""


def test_a_failed_tests_process_is_reaped_before_the_next_test(tmp_path: Path) -> None:
    marker = f"leftover-{secrets.token_hex(4)}"
    session = tmp_path / "test_session.py"
    session.write_text(SESSION.replace("{marker}", marker))
    result = subprocess.run(
        [
            sys.executable, "-m", "pytest", str(session), "-p", "tests.conftest",
            "-c", str(ROOT / "pyproject.toml"), "--rootdir", str(ROOT),
            "-p", "no:cacheprovider", "-q", "-W", "error",
        ],
        cwd=ROOT, env=python_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    out = result.stdout + result.stderr
    assert "1 failed, 1 passed" in out, out
    assert "ResourceWarning" not in out and "Event loop is closed" not in out, out
    assert "Unraisable" not in out, out
    alive = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True)
    assert alive.stdout.strip() == "", f"left running: {alive.stdout} (pid {os.getpid()})"
