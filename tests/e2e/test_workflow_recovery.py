"""A broker SIGKILLed mid-workflow loses nothing and duplicates no node (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from tests.helpers import Broker, read_record, start_worker
from worker_sdk import Client, TaskState, Workflow, WorkflowInfo, WorkflowState

APP = "tests.workflow_workers:worker"
FAN = 24
SPAWNED = 8


@pytest.fixture
def broker_args() -> list[str]:
    return ["--lease-duration", "2", "--sweep-interval", "0.2"]


def fan_in_with_a_spawner() -> Workflow:
    """root → 24 slow nodes → join → tail, beside a spawner of 8 children and its join."""
    wf = Workflow("recovery")
    root = wf.node("root", "wf.noop")
    fan = [wf.node(f"f{i}", "wf.noop", {"seconds": 0.15}, after=[root]) for i in range(FAN)]
    join = wf.node("join", "wf.collect", after=fan)
    wf.node("tail", "wf.collect", after=[join])
    split = wf.node("split", "wf.spawn", {"n": SPAWNED}, after=[root])
    wf.node("gather", "wf.collect", after=[split], join_spawned=True)
    return wf


async def test_a_broker_killed_mid_workflow_finishes_it_with_every_node_once(
    broker: Broker, tmp_path: Path
) -> None:
    worker = await start_worker(broker, tmp_path, name="wf", app=APP, concurrency=4)
    async with Client(broker.target) as client:
        created = await client.create_workflow(fan_in_with_a_spawner())
        await _until_succeeded(client, created.id, at_least=8)
    await broker.kill()  # SIGKILL: no shutdown, nothing flushed
    await broker.start()
    async with Client(broker.target, timeout=60) as client:
        done = await client.wait_workflow(created.id, timeout=90)
        attempts = {n.name: await client.attempts(n.task_id) for n in done.nodes}
        join = await client.get(done.node("join").task_id)
        gather = await client.get(done.node("gather").task_id)
    await worker.stop()

    assert done.state is WorkflowState.SUCCEEDED
    names = [n.name for n in done.nodes]
    expected = {"root", "join", "tail", "split", "gather", *(f"f{i}" for i in range(FAN))}
    expected |= {f"split/{i}" for i in range(SPAWNED)}
    assert len(names) == len(set(names)) == len(expected) and set(names) == expected
    assert {n.state for n in done.nodes} == {TaskState.SUCCEEDED}
    for name, history in attempts.items():
        assert sum(a.outcome == "succeeded" for a in history) == 1, (name, history)
    assert len(join.result["parents"]) == FAN
    assert set(gather.result["parents"]) == {"split", *(f"split/{i}" for i in range(SPAWNED))}
    runs = Counter(line[4] for line in read_record(tmp_path) if line[0] == "run")
    # Nodes that start after their parents (join, tail, gather) are released once: they run once.
    assert (runs["join"], runs["tail"], runs["gather"]) == (1, 1, 1), runs


async def _until_succeeded(client: Client, workflow_id: str, *, at_least: int) -> WorkflowInfo:
    """Follow the workflow until `at_least` nodes succeeded (mid-run, not finished)."""
    states: dict[str, TaskState] = {}
    async for update in client.watch_workflow(workflow_id, timeout=60):
        states |= {n.name: n.state for n in update.nodes}
        if sum(s is TaskState.SUCCEEDED for s in states.values()) >= at_least:
            return update
    raise AssertionError(f"the workflow finished before {at_least} nodes succeeded: {states}")
