"""Releases and drains: a released task never goes back to the session that released it,
and a worker that drains closes its credit window, so nothing is left in flight when it
half-closes."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from taskyard.v1 import worker_service_pb2 as pb
from tests.e2e.test_recovery import open_raw, read_kind
from tests.helpers import Broker, Stubs, start_worker, stubs
from worker_sdk import Client, Task, TaskSpec, TaskState


@pytest.fixture
async def raw(broker: Broker) -> AsyncIterator[Stubs]:
    async with stubs(broker) as s:
        yield s


async def test_a_released_task_is_never_assigned_back_to_the_releasing_session(
    client: Client, raw: Stubs
) -> None:
    first = await client.submit("record", "first")
    call, _ = await open_raw(raw, "releaser", credits=3)
    lease = (await read_kind(call, "assignments")).assignments.assignments[0]
    assert lease.task_id == first.id
    ref = pb.LeaseRef(task_id=first.id, lease_id=lease.lease_id)
    await call.write(pb.LeaseRequest(releases=pb.Releases(leases=[ref])))
    # Two credits are left, and the released task is the only one waiting; it stays
    # waiting. A task submitted afterwards comes, alone, in the next assignments.
    later = await client.submit("record", "later")
    again = (await read_kind(call, "assignments")).assignments.assignments
    assert [a.task_id for a in again] == [later.id]
    waiting = await client.get(first.id)
    assert (waiting.state, waiting.attempt, waiting.lease_losses) == (TaskState.PENDING, 0, 0)

    # Any other session takes it.
    other, _ = await open_raw(raw, "other", credits=1)
    taken = (await read_kind(other, "assignments")).assignments.assignments
    assert [(a.task_id, a.attempt) for a in taken] == [(first.id, 1)]
    call.cancel()
    other.cancel()


async def test_a_worker_that_drains_gets_nothing_more_and_half_closes_without_losses(
    client: Client, raw: Stubs
) -> None:
    running = await client.submit("record", "running")
    call, _ = await open_raw(raw, "drainer", credits=5)
    lease = (await read_kind(call, "assignments")).assignments.assignments[0]
    await call.write(pb.LeaseRequest(drain=pb.Drain(message="stopping")))
    await read_kind(call, "drain")
    # From the broker's answer on, nothing is assigned to this stream: its four unused
    # credits are gone (ListWorkers shows it), and new work waits for someone else.
    [info] = await client.workers()
    assert (info.worker_id, info.draining, info.credits) == ("drainer", True, 0)
    waiting = await client.submit_many(TaskSpec("record", i) for i in range(3))

    # It finishes what it holds, then half-closes: the broker ends the stream cleanly.
    done = pb.Completion(task_id=running.id, lease_id=lease.lease_id)
    done.result.json.string_value = "done"
    await call.write(pb.LeaseRequest(completions=pb.Completions(completions=[done])))
    await read_kind(call, "completion_acks")
    await call.done_writing()
    assert await call.code() is grpc.StatusCode.OK
    assert await client.wait(running.id, timeout=10) == "done"
    for t in waiting:
        task = await client.get(t.id)
        assert (task.state, task.attempt, task.lease_losses) == (TaskState.PENDING, 0, 0)


async def test_a_sigtermed_sdk_worker_leaves_no_lease_behind(
    broker: Broker, client: Client, tmp_path: Path
) -> None:
    worker = await start_worker(broker, tmp_path, name="w1", concurrency=4)
    # Tasks keep arriving while it drains, to credits it granted before: none may
    # bounce between it and the broker, nor be left in flight when it closes its
    # stream (that would be a lost lease).
    tasks: list[Task] = []
    started = asyncio.Event()

    async def keep_submitting() -> None:
        while True:
            tasks.append(await client.submit("record", len(tasks)))
            if len(tasks) == 20:
                started.set()
            await asyncio.sleep(0.002)

    feeder = asyncio.create_task(keep_submitting())
    try:
        await started.wait()
        await client.wait(tasks[10].id, timeout=30)  # it is busy working through them
        await worker.process.signal(signal.SIGTERM)
        assert await worker.process.wait(timeout=30) == 0
    finally:
        feeder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await feeder
    for t in tasks:
        task = await client.get(t.id)
        assert task.lease_losses == 0, task

    other = await start_worker(broker, tmp_path, name="w2", concurrency=4)
    for i, t in enumerate(tasks):
        assert await client.wait(t.id, timeout=30) == i
        assert (await client.get(t.id)).lease_losses == 0
    await other.stop()
