"""`taskyard dev` (what `make run` runs): broker, then worker, a banner, and a clean Ctrl-C."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import re
import signal
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cli import TASKYARD, taskyard
from tests.helpers import ROOT, python_env
from tests.http_client import Http

DEMO = "examples.demo_worker:worker"
BANNER_END = "taskyard submit echo"


def children_of(pid: int) -> list[int]:
    """Direct children of `pid`, from /proc (Linux)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@dataclass
class Dev:
    proc: asyncio.subprocess.Process
    banner: list[str]

    @property
    def target(self) -> str:
        match = re.search(r"gRPC\s+(127\.0\.0\.1:\d+)", "\n".join(self.banner))
        assert match, self.banner
        return match.group(1)


@contextlib.asynccontextmanager
async def dev(*args: str) -> AsyncIterator[asyncio.subprocess.Process]:
    proc = await asyncio.create_subprocess_exec(
        str(TASKYARD), "dev", "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL, env=python_env(), cwd=ROOT, start_new_session=True,
    )  # fmt: skip
    kids: list[int] = []
    try:
        yield proc
    finally:
        kids = children_of(proc.pid)
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        for pid in kids:  # they run in their own process groups
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


async def read_banner(proc: asyncio.subprocess.Process) -> list[str]:
    assert proc.stdout is not None
    lines: list[str] = []
    async with asyncio.timeout(90):
        while BANNER_END not in (lines[-1] if lines else ""):
            line = (await proc.stdout.readline()).decode()
            assert line, f"the launcher ended before its banner: {lines}"
            lines.append(line.rstrip("\n"))
    return lines


async def test_dev_serves_a_task_and_ctrl_c_stops_everything_with_exit_0(
    db_url: str, tmp_path: Path
) -> None:
    async with dev("--db", db_url, "--worker", DEMO) as proc:
        banner = await read_banner(proc)
        text = "\n".join(banner)
        assert "source .venv/bin/activate" in text  # how to get taskyard on PATH
        assert f"worker     {DEMO}  (task types: echo, fail, sleep)" in text
        assert "database" in text and "export TASKYARD_TARGET=" in text
        target = Dev(proc, banner).target
        http = re.search(r"HTTP\s+http://127\.0\.0\.1:(\d+)/", text)
        assert http, text  # the HTTP/JSON API
        assert re.search(rf"dashboard\s+http://127\.0\.0\.1:{http.group(1)}/\n", text + "\n")
        reply = await Http(int(http.group(1))).call("SystemService/GetSystemInfo")
        assert reply.status == 200 and "events.watch" in reply.body["capabilities"]
        kids = children_of(proc.pid)
        assert len(kids) == 2, kids  # the broker and the worker
        run = await taskyard("submit", "echo", "--payload", '{"hello": "world"}', "--wait",
                             target=target)  # fmt: skip
        assert (run.code, run.out.strip()) == (0, '{"hello": "world"}')
        proc.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(proc.communicate(), 90)
        assert proc.returncode == 0, err
        assert not [pid for pid in kids if alive(pid)], "the launcher left processes behind"
    stderr = err.decode()
    for noise in ("Traceback", "Connection refused", "UNAVAILABLE", "alembic", "Running upgrade"):
        assert noise not in stderr, stderr
    assert stderr.rstrip().endswith("stopped"), stderr


async def test_a_broker_that_cannot_listen_is_one_error_and_no_worker(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = await asyncio.create_subprocess_exec(
            str(TASKYARD), "dev", "--listen", f"127.0.0.1:{port}", "--db",
            str(tmp_path / "t.db"), "--worker", DEMO,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env=python_env(), cwd=ROOT,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode == 1
    assert out.decode().strip() == "", "no banner when nothing runs"
    stderr = err.decode()
    assert "Traceback" not in stderr
    assert stderr.rstrip().splitlines()[-1] == (
        "error: the broker exited with status 1 before it listened"
    ), stderr
    assert f"cannot listen on 127.0.0.1:{port}" in stderr


@pytest.mark.parametrize("app", ["no_such_module:worker", "examples.demo_worker:nothing"])
async def test_a_worker_that_cannot_start_stops_the_broker_too(app: str, tmp_path: Path) -> None:
    async with dev("--db", str(tmp_path / "t.db"), "--worker", app) as proc:
        _, err = await asyncio.wait_for(proc.communicate(), 90)
        assert proc.returncode == 1
    stderr = err.decode()
    assert "Traceback" not in stderr, stderr
    assert stderr.rstrip().splitlines()[-1] == (
        "error: the worker exited with status 1 before it connected"
    ), stderr
    # The broker was stopped and waited for: its SQLite lock file is free again.
    fd = os.open(tmp_path / "t.db.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)


async def test_a_broker_that_dies_while_running_stops_the_worker_and_exits_1(
    tmp_path: Path,
) -> None:
    async with dev("--db", str(tmp_path / "t.db"), "--worker", DEMO) as proc:
        await read_banner(proc)
        kids = children_of(proc.pid)
        broker_pid = next(pid for pid in kids if " broker " in _cmdline(pid))
        os.kill(broker_pid, signal.SIGKILL)
        _, err = await asyncio.wait_for(proc.communicate(), 90)
        assert proc.returncode == 1
        assert not [pid for pid in kids if alive(pid)], "the worker outlived the broker"
    assert err.decode().rstrip().splitlines()[-1] == (
        "error: the broker exited with status -9 while running"
    ), err.decode()


def _cmdline(pid: int) -> str:
    return " " + (Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
