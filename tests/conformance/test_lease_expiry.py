"""Protocol conformance with short leases: heartbeats, expiry and stale results.

Each case runs against the Python and the Node.js worker (see conftest.py).
"""

from __future__ import annotations

import asyncio
import re

import pytest

from tests.conformance.conftest import Workers
from tests.conformance.test_lease_protocol import wait_for
from worker_sdk import Client, TaskState


@pytest.fixture
def broker_args() -> list[str]:
    # A lease lasts 1 s without a heartbeat and the reaper sweeps five times a second,
    # so expiry happens within a test's time; workers heartbeat every 1/3 s.
    return ["--lease-duration", "1", "--sweep-interval", "0.2"]


async def test_heartbeats_keep_a_task_longer_than_its_lease_on_the_first_attempt(
    client: Client, workers: Workers
) -> None:
    await workers.start("w1")

    task = await client.submit("conformance.sleep", {"seconds": 3})

    assert await client.wait(task.id, timeout=30) == {"attempt": 1, "worker": "w1"}
    assert (await client.get(task.id)).attempt == 1
    assert len(workers.records("start", task.id)) == 1


async def test_a_stalled_workers_stale_result_is_rejected_and_it_keeps_working(
    client: Client, workers: Workers
) -> None:
    stale = await workers.start("stale", concurrency=1)
    # Attempt 1 takes 0.6 s, attempt 2 takes 8 s: long enough to look at the task
    # while the second worker holds it, on a loaded machine too.
    task = await client.submit("conformance.sleep", {"seconds": [0.6, 8]})
    await stale.wait_for_line(f"started task {task.id} attempt 1")
    await stale.pause()  # SIGSTOP mid-handler: no heartbeats, the lease expires

    fresh = await workers.start("fresh", concurrency=1)
    await wait_for(client, task.id, state=TaskState.RUNNING, attempt=2, worker_id="fresh")
    seen = stale.process.line_count
    await stale.resume()  # its handler is long done; it reports attempt 1's result

    # The stale worker learns its lease is gone: either its result is answered
    # LEASE_LOST, or (if the broker's LEASE_LOST push or a heartbeat ack is read
    # first) it abandons the task. Both are conformant; neither may change the task.
    await stale.wait_for_line(rf"(outcome of task {task.id}|lease on task {task.id}).*", after=seen)
    current = await client.get(task.id)
    assert current.state is TaskState.RUNNING
    assert (current.attempt, current.worker_id) == (2, "fresh")
    assert current.result is None

    assert await client.wait(task.id, timeout=30) == {"attempt": 2, "worker": "fresh"}
    assert sorted((line[2], line[3]) for line in workers.records("start", task.id)) == [
        ("1", str(stale.pid)),
        ("2", str(fresh.pid)),
    ]

    # The stalled worker is healthy again: with the other one gone it takes new work.
    assert await fresh.stop() == 0
    later = await client.submit("conformance.echo", {"after": "resume"})
    assert await client.wait(later.id, timeout=30) == {"after": "resume"}
    assert (await client.get(later.id)).worker_id == "stale"
    log = (workers.workdir / "stale.log").read_text()
    assert re.search(rf"LEASE_LOST|revoked the lease on task {task.id}", log), log


async def test_a_paused_workers_lapsed_lease_comes_back_and_its_attempt_runs_once(
    client: Client, workers: Workers
) -> None:
    worker = await workers.start("w1", concurrency=2)
    # Attempt 1 would take 3 s, attempt 2 5 s: the answer says which attempt finished.
    task = await client.submit("conformance.sleep", {"seconds": [3, 5]})
    await worker.wait_for_line(f"started task {task.id} attempt 1")
    await worker.pause()
    # The lease expires and the task waits again, but not for this worker: it has shown
    # no life since, so it gets nothing (it still has a free credit), and no other
    # worker exists. The task stays PENDING however long the pause lasts.
    await wait_for(client, task.id, state=TaskState.PENDING, lease_losses=1)
    await asyncio.sleep(3)  # the pause goes on: three more lease durations
    waiting = await client.get(task.id)
    assert (waiting.state, waiting.attempt, waiting.lease_losses) == (TaskState.PENDING, 1, 1)
    await worker.resume()

    # Its first heartbeat or its result restores the lapsed lease (nobody took the task
    # since): attempt 1 finishes, the loss is taken back, nothing ran twice.
    assert await client.wait(task.id, timeout=30) == {"attempt": 1, "worker": "w1"}
    done = await client.get(task.id)
    assert (done.attempt, done.lease_losses, done.error) == (1, 0, None)
    assert [line[2] for line in workers.records("start", task.id)] == ["1"]
    assert [a.outcome for a in await client.attempts(task.id)] == ["succeeded"]
