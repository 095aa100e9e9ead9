"""`taskyard list` pages and filters; `watch` shows a bar on a terminal, lines in a pipe."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import shlex
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.cli import TASKYARD, taskyard
from tests.helpers import ROOT, Broker, python_env, start_worker
from worker_sdk import Client


def ids(table: str) -> list[str]:
    return [line.split()[0] for line in table.splitlines()[1:]]


async def test_list_pages_by_the_command_it_prints_and_all_fetches_every_page(
    broker: Broker, client: Client
) -> None:
    created = [await client.submit("echo", {"i": i}) for i in range(5)]
    newest_first = [t.id for t in reversed(created)]
    seen: list[str] = []
    args = ["list", "-n", "2"]
    for _ in range(3):
        run = await taskyard(*args, target=broker.target)
        assert run.code == 0, run.err
        seen += ids(run.out)
        if not run.err_lines:
            break
        (more,) = run.err_lines
        assert more.startswith("more: taskyard list -n 2 --page-token "), more
        args = shlex.split(more.removeprefix("more: "))[1:]
    assert seen == newest_first
    run = await taskyard("list", "-n", "2", "--all", target=broker.target)
    assert ids(run.out) == newest_first and run.err == ""
    page = json.loads((await taskyard("list", "-n", "4", "--json", target=broker.target)).out)
    assert [t["id"] for t in page["tasks"]] == newest_first[:4] and page["next_page_token"]


async def test_list_filters_by_creation_time(broker: Broker, client: Client) -> None:
    task = await client.submit("echo")
    t = broker.target
    assert ids((await taskyard("list", "--since", "1h", target=t)).out) == [task.id]
    assert ids((await taskyard("list", "--until", "1h", target=t)).out) == []
    later = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    assert ids((await taskyard("list", "--since", later, target=t)).out) == []
    assert ids((await taskyard("list", "--until", later, target=t)).out) == [task.id]


async def test_an_empty_waiting_state_points_at_the_others(broker: Broker, client: Client) -> None:
    scheduled = await client.submit("echo", delay=3600)
    run = await taskyard("list", "--state", "pending", target=broker.target)
    assert ids(run.out) == []
    assert "`taskyard list --state scheduled`" in run.err, run.err
    run = await taskyard("list", "--state", "scheduled", target=broker.target)
    assert ids(run.out) == [scheduled.id]


async def test_watch_in_a_pipe_prints_lines_then_the_result(
    broker: Broker, client: Client, tmp_path: Path
) -> None:
    # The watch is open before any worker runs the task, so it sees every step
    # however slowly the machine starts the command.
    task = await client.submit("progress", {"steps": 3, "pause": 0.2})
    proc = await asyncio.create_subprocess_exec(
        str(TASKYARD), "watch", task.id, "--target", broker.target,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=python_env(), cwd=ROOT,
    )  # fmt: skip
    assert proc.stdout is not None
    first = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
    worker = await start_worker(broker, tmp_path, name="w")
    rest, _ = await asyncio.wait_for(proc.communicate(), 60)
    await worker.stop()
    out = first + rest.decode()
    lines = out.splitlines()
    assert lines[0].startswith("pending"), lines
    assert proc.returncode == 0 and "\r" not in out
    assert any(line.startswith("running ") and "step 2/3" in line for line in lines), lines
    assert lines[-2:] == ["succeeded", 'result: "done"'], lines


async def test_watch_on_a_terminal_draws_a_progress_bar(
    broker: Broker, client: Client, tmp_path: Path
) -> None:
    task = await client.submit("progress", {"steps": 3, "pause": 0.2})
    primary, secondary = pty.openpty()
    proc = await asyncio.create_subprocess_exec(
        str(TASKYARD), "watch", task.id, "--target", broker.target,
        stdout=secondary, stderr=asyncio.subprocess.PIPE,
        env=python_env({"COLUMNS": "100"}), cwd=ROOT,
    )  # fmt: skip
    os.close(secondary)
    try:
        # The pending line shows the watch is open; only then may the task run.
        screen = await asyncio.wait_for(asyncio.to_thread(_read_until, primary, "pending"), 60)
        worker = await start_worker(broker, tmp_path, name="w")
        await asyncio.wait_for(proc.wait(), 60)
        screen += _drain(primary)
    finally:
        os.close(primary)
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    await worker.stop()
    assert proc.returncode == 0
    assert "\r" in screen and "[" in screen and "#" in screen and "100%" in screen, screen
    assert "running 33%" not in screen, "a terminal gets a bar, not a line per update"
    assert screen.rstrip().splitlines()[-1] == 'result: "done"', screen


def _read_until(fd: int, text: str) -> str:
    """Read the terminal until `text` appears (blocking; run in a thread)."""
    seen = ""
    while text not in seen:
        seen += os.read(fd, 65536).decode(errors="replace")
    return seen


def _drain(fd: int) -> str:
    """What the child wrote to the terminal (it has exited; reads end with EIO)."""
    chunks = []
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks).decode(errors="replace")
