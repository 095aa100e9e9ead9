"""Templates from files and schedules that start them; the `taskyard workflow` commands."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.cli import taskyard
from tests.helpers import Broker, WorkerProcess, start_worker
from worker_sdk import (
    Client,
    ScheduleFire,
    TaskState,
    TemplateParam,
    TemplateStart,
    Workflow,
    WorkflowState,
)

APP = "tests.workflow_workers:worker"

TEMPLATES = """
templates:
  - name: nightly
    description: Two steps for a day
    failure_policy: fail_fast
    params:
      day: {type: string, required: true}
      seconds: {type: number, default: 0}
    nodes:
      - name: first
        task: {type: wf.collect, payload: {day: "{{ params.day }}"}}
      - name: second
        task: {type: wf.noop, payload: {seconds: "{{ params.seconds }}"}}
        depends_on: [first]
"""

SCHEDULES = """
schedules:
  - name: from-file
    every: 1h
    workflow: {template: nightly, params: {day: sun}}
"""

WORKFLOW = """
name: from-cli
nodes:
  - name: a
    task: {type: wf.collect, payload: {n: 1}, retry: {max_attempts: 2}}
  - name: b
    task: {type: wf.collect}
    depends_on: [a]
    trigger_rule: all_finished
"""


@pytest.fixture
def broker_args(tmp_path: Path) -> list[str]:
    templates = tmp_path / "templates.yaml"
    templates.write_text(TEMPLATES)
    schedules = tmp_path / "schedules.yaml"
    schedules.write_text(SCHEDULES)
    return ["--templates", str(templates), "--schedules", str(schedules)]


@pytest.fixture
async def worker(broker: Broker, tmp_path: Path) -> AsyncIterator[WorkerProcess]:
    process = await start_worker(broker, tmp_path, name="wf", app=APP, concurrency=8)
    yield process
    await process.stop()


async def files_read(broker: Broker, after: int = 0) -> None:
    """The ticker reconciles both files once the broker serves: wait for its word."""
    assert broker.process is not None
    await broker.process.wait_for_line("schedules file:", after=after)


async def test_the_templates_file_registers_at_start_and_again_changes_nothing(
    broker: Broker, client: Client
) -> None:
    await files_read(broker)
    template = await client.get_template("nightly")
    assert (template.version, template.nodes) == (1, ("first", "second"))
    assert [p.name for p in template.params] == ["day", "seconds"]
    schedule = await client.get_schedule("from-file")
    assert schedule.workflow == TemplateStart("nightly", {"day": "sun"}, 1)
    await broker.stop()
    await broker.start()
    assert broker.process is not None
    await broker.process.wait_for_line("templates file: 0 registered, 1 unchanged")
    async with Client(broker.target) as again:
        assert [t.version async for t in again.list_templates(name="nightly")] == [1]


async def test_a_bad_templates_file_stops_the_start(tmp_path: Path, db_url: str) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(TEMPLATES.replace('"{{ params.day }}"', '"{{ params.week }}"'))
    workdir = tmp_path / "b"
    workdir.mkdir()
    broker = Broker(db_url=db_url, workdir=workdir, extra_args=["--templates", str(bad)])
    with pytest.raises(RuntimeError, match="exited"):
        await broker.start()
    assert "templates[0] (nightly)" in (workdir / "broker.log").read_text()


async def test_a_schedule_starts_the_template_and_overlaps_with_its_unfinished_workflow(
    broker: Broker, client: Client, worker: WorkerProcess
) -> None:
    await files_read(broker)
    manual = await client.run_workflow_schedule("from-file")
    first = await client.wait_workflow(manual, timeout=60)
    assert first.state is WorkflowState.SUCCEEDED and first.template_name == "nightly"
    assert first.labels["taskyard.schedule"] == "from-file"
    assert (await client.get(first.node("first").task_id)).result["payload"] == {"day": "sun"}

    # A slow run of a second schedule, firing every second: later fires overlap it (skip).
    await client.create_schedule(
        "often", TemplateStart("nightly", {"day": "mon", "seconds": 30}), every=1, overlap="skip"
    )
    started = await _fire(client, "often", "started")
    skipped = await _fire(client, "often", "skipped")
    assert started.workflow_id and not started.task_id and skipped.fire_time
    running = await client.get_workflow(started.workflow_id)
    assert running.state is WorkflowState.RUNNING and running.template_name == "nightly"
    await client.cancel_workflow(started.workflow_id)
    await client.pause_schedule("often")


async def _fire(client: Client, name: str, result: str, timeout: float = 30) -> ScheduleFire:
    """The schedule's newest fire with this result (fires come with real time: poll)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fires = [f async for f in client.schedule_fires(name) if f.result == result]
        if fires:
            return fires[0]
        await asyncio.sleep(0.2)  # fires are due by the clock; nothing to await
    raise AssertionError(f"no {result} fire of {name} within {timeout}s")


async def test_the_workflow_commands(broker: Broker, worker: WorkerProcess, tmp_path: Path) -> None:
    await files_read(broker)
    spec = tmp_path / "wf.yaml"
    spec.write_text(WORKFLOW)
    run = await taskyard("workflow", "submit", str(spec), "--wait", target=broker.target)
    assert run.code == 0, run.err
    assert run.out.splitlines()[-1] == "workflow succeeded"
    assert "b succeeded" in run.out

    run = await taskyard("workflow", "list", "--json", target=broker.target)
    listed = json.loads(run.out)["workflows"]
    assert [w["name"] for w in listed] == ["from-cli"]
    wf_id = listed[0]["id"]
    run = await taskyard("workflow", "get", wf_id, "--json", target=broker.target)
    shown = json.loads(run.out)
    assert [(n["name"], n["state"]) for n in shown["nodes"]] == [
        ("a", "succeeded"),
        ("b", "succeeded"),
    ]
    assert shown["nodes"][1]["trigger_rule"] == "all_finished"
    run = await taskyard("workflow", "get", wf_id, target=broker.target)
    assert "2/2 nodes finished" in run.out

    start = tmp_path / "start.yaml"
    start.write_text("template: nightly\nparams: {day: tue, seconds: 60}\n")
    run = await taskyard("workflow", "submit", str(start), target=broker.target)
    assert run.code == 0, run.err
    slow_id = run.out.strip()
    run = await taskyard("workflow", "retry", slow_id, target=broker.target)
    assert run.code == 1 and "WORKFLOW_NOT_RETRYABLE" in run.err
    run = await taskyard("workflow", "cancel", slow_id, "--json", target=broker.target)
    assert json.loads(run.out)["state"] == "cancelled"
    run = await taskyard("workflow", "watch", slow_id, target=broker.target)
    assert run.code == 1 and run.out.splitlines()[-1] == "workflow cancelled"

    more = tmp_path / "more.yaml"
    more.write_text(TEMPLATES.replace("Two steps", "Still two steps"))
    run = await taskyard("workflow", "template", "register", str(more), target=broker.target)
    assert run.out.strip() == "nightly v2"
    run = await taskyard("workflow", "template", "get", "nightly", target=broker.target)
    assert "param day: string, required" in run.out
    bad = tmp_path / "bad.yaml"
    bad.write_text("nodes: [{name: a}]\n")
    run = await taskyard("workflow", "submit", str(bad), target=broker.target)
    assert run.code != 0 and "task is required" in run.err


async def test_the_sdk_registers_and_starts_a_template(
    client: Client, worker: WorkerProcess
) -> None:
    wf = Workflow()
    wf.node("only", "wf.collect", {"who": "{{ params.who }}"})
    await client.register_template(
        "hello", wf, params=[TemplateParam("who", "string", "world", has_default=True)]
    )
    done = await client.wait_workflow((await client.start_workflow("hello")).id, timeout=60)
    assert done.node("only").state is TaskState.SUCCEEDED
    assert (await client.get(done.node("only").task_id)).result["payload"] == {"who": "world"}
