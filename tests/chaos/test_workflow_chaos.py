"""Workflows through crashes: brokers SIGKILLed and workers killed while workflows run.

A steady stream of small workflows (a root, a fan-out of four, a join, and a
spawner whose children a second join gathers) is created while the broker is
SIGKILLed and restarted three times and workers are killed and replaced.
Afterwards every acknowledged workflow must have finished SUCCEEDED with exactly
its nodes — none lost, none duplicated — each node succeeded exactly once in the
broker's record, and each join released once (it ran once, unless a crash caught
it in flight). `make chaos` runs this.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.helpers import Broker, WorkerProcess, read_record, start_worker
from worker_sdk import Client, TaskState, TaskyardError, Workflow, WorkflowInfo, WorkflowState

pytestmark = pytest.mark.chaos

APP = "tests.workflow_workers:worker"
LOAD_SECONDS = 18
PACE_S = 0.15
FAN = 4
SPAWNED = 3


@pytest.fixture
def broker_args() -> list[str]:
    return ["--lease-duration", "2", "--sweep-interval", "0.2"]


def small() -> Workflow:
    wf = Workflow("chaos")
    root = wf.node("root", "wf.noop", {"seconds": 0.05})
    fan = [wf.node(f"f{i}", "wf.noop", {"seconds": 0.05}, after=[root]) for i in range(FAN)]
    wf.node("join", "wf.collect", after=fan)
    split = wf.node("split", "wf.spawn", {"n": SPAWNED}, after=[root])
    wf.node("gather", "wf.collect", after=[split], join_spawned=True)
    return wf


EXPECTED = sorted(
    ["root", "join", "split", "gather", *(f"f{i}" for i in range(FAN))]
    + [f"split/{i}" for i in range(SPAWNED)]
)


class Load:
    """Creates workflows at a steady pace; only acknowledged ones count."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.acked: list[str] = []
        self.refused = 0
        self.stop = asyncio.Event()

    async def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            try:
                async with Client(self.broker.target, timeout=2) as client:
                    created = await client.create_workflow(small(), request_id=f"chaos-{n}")
                    self.acked.append(created.id)
            except TaskyardError:
                self.refused += 1  # the broker was down: not acknowledged, not counted
            await asyncio.sleep(PACE_S)  # the load's pacing


async def test_acknowledged_workflows_finish_once_through_broker_and_worker_crashes(
    broker: Broker, tmp_path: Path
) -> None:
    rng = random.Random(20261205)
    workers = [await _worker(broker, tmp_path, f"w{i}") for i in range(2)]
    load = Load(broker)
    loader = asyncio.create_task(load.run())
    started = time.monotonic()
    plan = [
        (3.0, "kill-broker"), (5.5, "kill-worker"), (8.0, "kill-broker"),
        (11.0, "kill-worker"), (13.5, "kill-broker"),
    ]  # fmt: skip
    for second, action in plan:
        await asyncio.sleep(max(0.0, started + second - time.monotonic()))
        if action == "kill-broker":
            await broker.kill()
            await asyncio.sleep(0.3)  # the broker stays down a moment
            await broker.start()
        else:
            victim = rng.choice(workers)
            await victim.kill()
            workers.remove(victim)
            workers.append(await _worker(broker, tmp_path, f"r{second:.0f}"))
    await asyncio.sleep(max(0.0, started + LOAD_SECONDS - time.monotonic()))
    load.stop.set()
    await loader

    finals: dict[str, WorkflowInfo] = {}
    successes: Counter[tuple[str, str]] = Counter()
    async with Client(broker.target, timeout=30) as client:
        for wf_id in load.acked:
            finals[wf_id] = await client.wait_workflow(wf_id, timeout=120)
            for node in finals[wf_id].nodes:
                history = await client.attempts(node.task_id)
                successes[(wf_id, node.name)] = sum(a.outcome == "succeeded" for a in history)
    for w in workers:
        await w.stop()

    runs = Counter((line[1], line[4]) for line in read_record(tmp_path) if line[0] == "run")
    failed = [w for w in finals.values() if w.state is not WorkflowState.SUCCEEDED]
    wrong_nodes = [
        w.id for w in finals.values() if sorted(n.name for n in w.nodes) != sorted(EXPECTED)
    ]
    not_once = [k for k, n in successes.items() if n != 1]
    nodes = [n for w in finals.values() for n in w.nodes]
    joins = {(n.task_id, n.name) for n in nodes if n.name in ("join", "gather")}
    join_reruns = [k for k in joins if runs[k] > 1]
    print(  # noqa: T201 - the counts are the point of `make chaos`
        f"\nworkflow chaos: {len(load.acked)} acknowledged, {load.refused} refused while down, "
        f"{len(finals) - len(failed)} succeeded, {len(wrong_nodes)} with wrong nodes, "
        f"{len(not_once)} nodes not succeeded exactly once, {len(join_reruns)} joins re-run "
        f"(in flight at a crash)"
    )
    assert len(load.acked) >= 10  # each of a dozen nodes: enough to catch some mid-crash
    assert not failed, [(w.id, w.state, [(n.name, n.state) for n in w.nodes]) for w in failed[:3]]
    assert not wrong_nodes, wrong_nodes[:3]
    assert all(n.state is TaskState.SUCCEEDED for n in nodes)
    assert not not_once, not_once[:5]
    # A join runs again only if a crash caught it running (at most what was in flight).
    assert len(join_reruns) <= 2 * 8 * 3, join_reruns


async def _worker(broker: Broker, tmp_path: Path, name: str) -> WorkerProcess:
    return await start_worker(broker, tmp_path, name=name, app=APP, concurrency=8)
