"""Crash safety, proven: kill the broker and workers under load and count what survives.

Under a steady load of submissions and three worker processes, the broker is
SIGKILLed and restarted three times, workers are SIGKILLed at random and
replaced, and one worker's connection is cut twice. Afterwards every
acknowledged submission must exist and have succeeded exactly once in the
broker's record, and every task that ran more than once must have had its
lease in flight at one of the failures. A second run freezes workers (SIGSTOP)
past their leases while others are free: no task may go DEAD through lease
losses. `make chaos` runs this; CI runs it.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections import defaultdict
from pathlib import Path

import grpc
import pytest

from tests.helpers import Broker, TcpProxy, WorkerProcess, read_record, start_worker
from worker_sdk import Client, RetryPolicy, TaskSpec, TaskState, TaskyardError

pytestmark = pytest.mark.chaos

LOAD_SECONDS = 20
BATCH = 5
PACE_S = 0.04


@pytest.fixture
def broker_args() -> list[str]:
    return ["--lease-duration", "2", "--sweep-interval", "0.2"]


class Load:
    """Submits small batches at a steady pace; only acknowledged ids count."""

    def __init__(
        self,
        broker: Broker,
        policy: RetryPolicy | None = None,
        *,
        batch: int = BATCH,
        pace_s: float = PACE_S,
    ) -> None:
        self.broker = broker
        self.policy = policy
        self.batch = batch
        self.pace_s = pace_s
        self.acked: list[str] = []
        self.refused = 0
        self.stop = asyncio.Event()

    async def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            specs = [
                TaskSpec("chaos", {"n": n + i}, retry_policy=self.policy) for i in range(self.batch)
            ]
            n += self.batch
            try:
                async with Client(self.broker.target, timeout=2) as client:
                    self.acked += [t.id for t in await client.submit_many(specs)]
            except TaskyardError:
                self.refused += 1  # the broker was down: not acknowledged, not counted
            await asyncio.sleep(self.pace_s)  # the load's pacing


async def test_acknowledged_tasks_survive_broker_and_worker_crashes(
    broker: Broker, tmp_path: Path
) -> None:
    rng = random.Random(20261125)
    proxy = TcpProxy(broker.port)
    await proxy.start()
    proxied = await _worker(broker, tmp_path, "proxied", port=proxy.port)
    workers = [
        proxied,
        await _worker(broker, tmp_path, "w1"),
        await _worker(broker, tmp_path, "w2"),
    ]
    events: list[tuple[float, str]] = []
    load = Load(broker)
    loader = asyncio.create_task(load.run())
    started = time.monotonic()

    async def at(second: float) -> None:
        await asyncio.sleep(max(0.0, started + second - time.monotonic()))

    plan = [
        (2.5, "kill-broker"), (4.5, "kill-worker"), (6.0, "cut"), (8.0, "kill-broker"),
        (10.5, "kill-worker"), (12.5, "cut"), (14.5, "kill-broker"), (16.5, "kill-worker"),
    ]  # fmt: skip
    replaced = 0
    since = proxied.process.line_count  # the proxied worker's log, from its last (re)connect
    for second, action in plan:
        await at(second)
        events.append((time.time(), action))
        if action == "kill-broker":
            since = proxied.process.line_count
            await broker.kill()
            await asyncio.sleep(0.3)  # the broker stays down a moment
            await broker.start()
        elif action == "kill-worker":
            victim = rng.choice([w for w in workers if w is not proxied])
            await victim.kill()
            workers.remove(victim)
            replaced += 1
            workers.append(await _worker(broker, tmp_path, f"r{replaced}"))
        else:
            # On a slow machine the worker may still be in reconnect backoff from
            # the last broker restart: cut its connection once it has one.
            await proxied.connected(after=since)
            since = proxied.process.line_count
            assert proxy.cut() >= 1
    await at(LOAD_SECONDS)
    load.stop.set()
    await loader

    async with Client(broker.target, timeout=10) as client:
        final = await _wait_all(client, load.acked)
        attempts = {task_id: await client.attempts(task_id) for task_id in load.acked}
    for w in workers:
        await w.stop()
    await proxy.close()

    runs: dict[str, list[float]] = defaultdict(list)
    for line in read_record(tmp_path):
        if line[0] == "run":
            runs[line[1]].append(float(line[4]))
    lost = [t for t in load.acked if t not in final]
    unfinished = [t for t, s in final.items() if s is not TaskState.SUCCEEDED]
    double = [t for t, a in attempts.items() if sum(x.outcome == "succeeded" for x in a) > 1]
    reruns = {t: r for t, r in runs.items() if len(r) > 1}
    unexplained = [
        t
        for t, r in reruns.items()
        if not any(min(r) - 0.5 <= e <= max(r) + 0.5 for e, _ in events)
    ]
    print(  # noqa: T201 - the counts are the point of `make chaos`
        f"\nchaos: {len(load.acked)} acknowledged, {load.refused} batches refused while down, "
        f"{sum(1 for s in final.values() if s is TaskState.SUCCEEDED)} succeeded, "
        f"{len(reruns)} re-executed, {len(lost)} lost, {len(double)} with two successes; "
        f"events: {', '.join(a for _, a in events)}"
    )
    assert len(load.acked) > 1000
    assert not lost, f"acknowledged but missing: {lost[:5]}"
    assert not unfinished, f"not succeeded: {unfinished[:5]}"
    assert not double, f"two successful attempts recorded: {double[:5]}"
    assert set(runs) >= set(load.acked)
    assert not unexplained, f"re-run with no failure while in flight: {unexplained[:5]}"


async def test_workers_frozen_past_their_leases_cost_no_task_its_life_while_others_are_free(
    broker: Broker, tmp_path: Path
) -> None:
    # A small lease-loss budget: a frozen worker handed its own lapsed tasks (and new
    # ones) again and again while it slept used up a budget of 2 in a few seconds.
    # A light load and a wide credit window, so that a frozen worker keeps free credits
    # (under a heavy load its window fills at once, and then it gets nothing anyway).
    load = Load(broker, RetryPolicy(max_lease_losses=2), batch=1, pace_s=0.05)
    workers = [await _worker(broker, tmp_path, f"w{i}", concurrency=256) for i in range(3)]
    loader = asyncio.create_task(load.run())
    started = time.monotonic()

    async def at(second: float) -> None:
        await asyncio.sleep(max(0.0, started + second - time.monotonic()))

    # Each freeze lasts four lease durations (2 s), one worker at a time: two are free.
    freezes = [(2.0, 0, 10.0), (12.0, 1, 20.0), (22.0, 2, 30.0)]
    for begin, index, end in freezes:
        await at(begin)
        await workers[index].process.signal(signal.SIGSTOP)
        await at(end)
        await workers[index].process.signal(signal.SIGCONT)
    await at(32.0)
    load.stop.set()
    await loader

    async with Client(broker.target, timeout=10) as client:
        final = await _wait_all(client, load.acked)
        losses = {task_id: (await client.get(task_id)).lease_losses for task_id in load.acked}
    for w in workers:
        await w.stop()
    dead = [t for t, s in final.items() if s is TaskState.DEAD]
    lost = [t for t in load.acked if t not in final]
    print(  # noqa: T201 - the counts are the point of `make chaos`
        f"\nchaos (frozen workers): {len(load.acked)} acknowledged, "
        f"{sum(1 for s in final.values() if s is TaskState.SUCCEEDED)} succeeded, "
        f"{len(dead)} dead, {sum(1 for n in losses.values() if n)} with a lost lease, "
        f"at most {max(losses.values(), default=0)} losses per task"
    )
    assert len(load.acked) > 300
    assert not lost, f"acknowledged but missing: {lost[:5]}"
    assert not dead, f"dead through lease losses while workers were free: {dead[:5]}"
    assert all(s is TaskState.SUCCEEDED for s in final.values())
    # A frozen worker costs each task it held one loss at most, never more.
    assert max(losses.values(), default=0) <= 1, sorted(losses.values())[-5:]


async def _worker(
    broker: Broker, tmp_path: Path, name: str, *, port: int | None = None, concurrency: int = 8
) -> WorkerProcess:
    target = broker if port is None else _At(broker, port)
    return await start_worker(target, tmp_path, name=name, concurrency=concurrency)  # type: ignore[arg-type]


class _At:
    """A broker as seen through another port (the proxy)."""

    def __init__(self, broker: Broker, port: int) -> None:
        self.target = f"127.0.0.1:{port}"
        self.workdir = broker.workdir


async def _wait_all(client: Client, ids: list[str], timeout: float = 90) -> dict[str, TaskState]:
    """Wait (watching each task) until every acknowledged task is terminal."""
    states: dict[str, TaskState] = {}
    async with asyncio.timeout(timeout):
        for task_id in ids:
            while True:
                try:
                    async for task in client.watch(task_id):
                        if task.done:
                            states[task_id] = task.state
                            break
                    break
                except TaskyardError as error:
                    if error.code is not grpc.StatusCode.NOT_FOUND:
                        raise
                    break
    return states
