"""A worker frozen past its heartbeat timeout (SIGSTOP) costs its task nothing it need not.

Its lease lapses and the task waits again, but the frozen session gets nothing more —
not its own task back, nor anything new — until the worker shows life. With nobody
else to take the task, the worker resumes, its lapsed lease comes back and the task
runs once; with another worker free, the task runs there and only that one loss counts.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from tests.helpers import Broker, read_record, start_worker
from worker_sdk import Client, RetryPolicy, TaskState

LEASE_S = 1.0


@pytest.fixture
def broker_args() -> list[str]:
    # A lease lasts 1 s without a heartbeat; the reaper sweeps five times a second.
    return ["--lease-duration", str(LEASE_S), "--sweep-interval", "0.2"]


async def wait_until(client: Client, task_id: str, **fields: object) -> None:
    """Follow WatchTask until the task's fields have these values."""
    async for task in client.watch(task_id, timeout=60):
        if all(getattr(task, k) == v for k, v in fields.items()):
            return
    raise AssertionError(f"task {task_id} ended without reaching {fields}")


async def test_a_frozen_worker_alone_gets_its_task_back_when_it_wakes_and_runs_it_once(
    broker: Broker, client: Client, tmp_path: Path
) -> None:
    frozen = await start_worker(broker, tmp_path, name="frozen", concurrency=4)
    # A budget of two lost leases: the frozen worker, handed its task again and again
    # while silent, used it up in three lease durations before.
    task = await client.submit(
        "sleep", {"seconds": 2}, retry_policy=RetryPolicy(max_lease_losses=2)
    )
    await wait_until(client, task.id, state=TaskState.RUNNING, worker_id="frozen")
    await frozen.process.signal(signal.SIGSTOP)
    await wait_until(client, task.id, state=TaskState.PENDING, lease_losses=1)
    # Frozen for eight lease durations in all; it has three free credits all along.
    await asyncio.sleep(7 * LEASE_S)
    still = await client.get(task.id)
    assert (still.state, still.attempt, still.lease_losses) == (TaskState.PENDING, 1, 1)

    await frozen.process.signal(signal.SIGCONT)
    assert await client.wait(task.id, timeout=30) == {"peak": 1}
    done = await client.get(task.id)
    assert (done.state, done.attempt, done.lease_losses, done.error) == (
        TaskState.SUCCEEDED,
        1,
        0,
        None,
    )
    starts = [line for line in read_record(tmp_path) if line[:2] == ["start", task.id]]
    assert len(starts) == 1, starts
    await frozen.stop()


async def test_a_frozen_workers_task_runs_on_a_free_worker_and_nothing_new_goes_to_it(
    broker: Broker, client: Client, tmp_path: Path
) -> None:
    frozen = await start_worker(broker, tmp_path, name="frozen", concurrency=4)
    task = await client.submit(
        "sleep", {"seconds": 30}, retry_policy=RetryPolicy(max_lease_losses=1)
    )
    await wait_until(client, task.id, state=TaskState.RUNNING, worker_id="frozen")
    free = await start_worker(broker, tmp_path, name="free", concurrency=4)
    await frozen.process.signal(signal.SIGSTOP)

    await wait_until(client, task.id, state=TaskState.RUNNING, worker_id="free")
    # While it stays frozen, new work goes to the free worker only, although the
    # frozen one has three credits left and took the first task before.
    later = [await client.submit("record", i) for i in range(8)]
    for i, t in enumerate(later):
        assert await client.wait(t.id, timeout=30) == i
    for t in later:
        finished = await client.get(t.id)
        assert (finished.worker_id, finished.attempt, finished.lease_losses) == ("free", 1, 0)

    await frozen.process.signal(signal.SIGCONT)
    assert await client.wait(task.id, timeout=60) == {"peak": 1}
    done = await client.get(task.id)
    # One loss (the freeze), within the budget of one: not DEAD.
    assert (done.state, done.worker_id, done.attempt, done.lease_losses) == (
        TaskState.SUCCEEDED,
        "free",
        2,
        1,
    )
    await frozen.stop()
    await free.stop()
