"""Run the real `taskyard` command (the console script in the virtualenv) as a subprocess."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import NamedTuple

from tests.helpers import ROOT, python_env

TASKYARD = Path(sys.executable).with_name("taskyard")


class Run(NamedTuple):
    """Exit status, stdout and stderr (unpacks as `code, out, err`)."""

    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]


async def taskyard(*args: str, target: str | None = None, env: dict[str, str] | None = None) -> Run:
    """`taskyard ARGS [--target TARGET]`, from the repository root; waits for it to exit."""
    assert TASKYARD.exists(), f"{TASKYARD} missing: `make venv` installs the taskyard command"
    argv = [str(TASKYARD), *args]
    if target is not None:
        argv += ["--target", target]
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=python_env(env),
        cwd=ROOT,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode())
