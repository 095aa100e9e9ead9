"""Every command of the README's curl walkthrough, run with bash against a real broker and worker.

The first fenced `sh` block between the walkthrough markers defines the
helpers; every later command runs after it, in order, with `127.0.0.1:50080`
replaced by the test broker's HTTP address and `$TASK` set to the task the
latest CreateTask created. Each answer is checked for what the prose promises.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.api.test_grpcurl_walkthrough import SH_BLOCK
from tests.helpers import ROOT, Broker, start_worker
from worker_sdk import Client, TaskState

README = ROOT / "README.md"
SECTION = re.compile(
    r"<!-- curl-walkthrough:start -->(.*?)<!-- curl-walkthrough:end -->", re.DOTALL
)
README_HTTP = "127.0.0.1:50080"
SLEEP = re.compile(r'"seconds": (\d+)')
MAX_TIME = re.compile(r"--max-time \d+")
REQUIRED = {
    "TaskService/CreateTask",
    "TaskService/GetTask",
    "TaskService/WatchTask",
    "TaskService/CancelTask",
    "TaskService/ListTasks",
    "StatsService/GetQueueStats",
    "EventService/WatchEvents",
}


@pytest.fixture
def broker_args() -> list[str]:
    return ["--http-listen", "127.0.0.1:0"]


def walkthrough() -> tuple[str, list[str]]:
    """The helpers' definitions, and the commands (continuation lines joined)."""
    section = SECTION.search(README.read_text())
    assert section is not None, "README.md lost its curl walkthrough markers"
    blocks = SH_BLOCK.findall(section.group(1))
    commands = []
    for block in blocks[1:]:
        joined = block.replace("\\\n", " ")
        commands += [line.strip() for line in joined.splitlines() if line.strip()]
    return blocks[0], commands


def method_of(command: str) -> str:
    match = re.search(r"/taskyard\.v1\.(\w+/\w+)", command)
    assert match, command
    return match.group(1)


def test_the_walkthrough_covers_create_get_watch_cancel_list_stats_and_events() -> None:
    _, commands = walkthrough()
    assert {method_of(c) for c in commands} >= REQUIRED
    assert all("curl " in c for c in commands)


async def bash(script: str, task_id: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        "bash", "-c", script,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={"PATH": str(Path(ROOT / ".venv/bin")) + ":/usr/bin:/bin", "TASK": task_id},
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, f"{script} failed: {err.decode()}"
    return out.decode()


async def test_every_curl_command_works_against_a_real_broker(
    broker: Broker, client: Client, tmp_path: Path
) -> None:
    helpers, commands = walkthrough()
    worker = await start_worker(broker, tmp_path, name="demo", app="examples.demo_worker:worker")
    task_id = ""
    address = f"127.0.0.1:{broker.http_port}"
    for command in commands:
        if SLEEP.search(command) and int(SLEEP.search(command).group(1)) < 60:  # type: ignore[union-attr]
            command = SLEEP.sub('"seconds": 3', command)  # nobody copies ids here
        command = MAX_TIME.sub("--max-time 3", command)
        output = await bash(helpers + "\n" + command.replace(README_HTTP, address), task_id)
        method = method_of(command)
        if method == "TaskService/CreateTask":
            task_id = json.loads(output)["task"]["id"]
        await check(method, output, task_id, client)
    await worker.stop()


async def check(method: str, output: str, task_id: str, client: Client) -> None:
    lines = [json.loads(line) for line in output.splitlines() if line.strip()]
    body: dict[str, Any] = lines[0]
    if method == "TaskService/CreateTask":
        assert body["task"]["type"] == "sleep"
    elif method == "TaskService/GetTask":
        assert body["task"]["id"] == task_id and "payload" in body["task"]
    elif method == "TaskService/WatchTask":
        *messages, end = lines
        assert end == {}, end  # the end of the stream, no error
        states = [m["task"]["state"] for m in messages]
        assert states[-1] == "TASK_STATE_SUCCEEDED", states
        assert messages[-1]["task"]["result"] == {"json": {"slept": 3}}
    elif method == "TaskService/CancelTask":
        task = body["task"]
        assert task["state"] == "TASK_STATE_CANCELLED" or task.get("cancelRequested"), task
        async for update in client.watch(task_id):
            if update.state.is_terminal:
                assert update.state is TaskState.CANCELLED
    elif method == "TaskService/ListTasks":
        assert task_id in [t["id"] for t in body["tasks"]]
    elif method == "StatsService/GetQueueStats":
        assert "default" in [q["queue"] for q in body["queues"]], body
    elif method == "EventService/WatchEvents":
        assert body["streamId"], body
    else:
        pytest.fail(f"the walkthrough calls {method}, which this test does not check")
