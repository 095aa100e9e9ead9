"""The SQLite fast path's self-check: it passes on the locked versions and fails safe elsewhere.

Broken environments are made for real in a child process (tests/broken_sqlite.py
changes the installed libraries there, as another release could), not mocked.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from broker.errors import ConfigError
from broker.store.sqlite_driver import ENV, requested_mode, self_check
from tests.helpers import ROOT, python_env

pytestmark = pytest.mark.sqlite_only


def test_the_self_check_passes_on_the_locked_versions() -> None:
    # The venv is built from requirements.lock: the fast path must be chosen there.
    assert self_check() is None


def _check_under(breakage: str, timeout: float) -> subprocess.CompletedProcess[str]:
    code = (
        "from tests.broken_sqlite import BREAKAGES\n"
        f"BREAKAGES[{breakage!r}]()\n"
        "from broker.store.sqlite_driver import self_check\n"
        f"print(self_check(timeout={timeout}))\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        env=python_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


@pytest.mark.parametrize(
    ("breakage", "failure"),
    [
        # A private name gone: the fast path's module does not import.
        ("no-await_", "import: ImportError: cannot import name 'await_'"),
        # Every name present, but write-behind statements vanish.
        ("drops-deferred", "deferred writes, then a read: rows after deferred inserts"),
        # The database thread dies on write-behind (aiosqlite 0.22.0): the
        # probe hangs; the check gives up at its timeout and the process still exits.
        ("dies-on-deferred", "deferred writes, then a read: no answer within 2 s"),
    ],
)
def test_the_self_check_names_what_failed(breakage: str, failure: str) -> None:
    result = _check_under(breakage, timeout=2)
    assert result.stdout.startswith(failure), result.stdout + result.stderr


def test_an_unknown_switch_value_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "quick")
    with pytest.raises(ConfigError, match=ENV):
        requested_mode()


def test_fast_mode_refuses_to_start_when_the_fast_path_fails(tmp_path: Path) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path / 'taskyard.db'}"
    args = ["no-await_", "broker", "--listen", "127.0.0.1:0", "--db", db]
    result = subprocess.run(
        [sys.executable, "-m", "tests.broken_sqlite", *args],
        env=python_env({ENV: "fast"}),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr
    assert "the SQLite fast path failed its self-check: import: ImportError" in result.stderr
    assert not (tmp_path / "taskyard.db").exists()
