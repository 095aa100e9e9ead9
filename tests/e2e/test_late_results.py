"""A lapsed lease is not lost work: its worker may still report it until the task is leased again.

A lease lapses when it expires (no heartbeat in time, or a broker restart's
re-adoption window passed) or its stream closes. The task waits again; but while
nobody has leased it since, the worker that held it may re-adopt it (hello), heartbeat
it or complete it, and the loss is taken back. Once the task is leased again, the old
lease is LEASE_LOST as before.
"""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from taskyard.v1 import worker_service_pb2 as pb
from tests.e2e.test_recovery import LeaseCall, open_raw, read_kind
from tests.helpers import Broker, Stubs, read_record, start_worker, stubs
from worker_sdk import Client, TaskState


@pytest.fixture
def broker_args() -> list[str]:
    # Leases of 1 s, swept five times a second; after a restart, leases from before it
    # wait 1 s for their workers (the least --restart-grace allows with 1 s leases).
    return ["--lease-duration", "1", "--sweep-interval", "0.2", "--restart-grace", "1"]


@pytest.fixture
async def raw(broker: Broker) -> AsyncIterator[Stubs]:
    async with stubs(broker) as s:
        yield s


async def wait_until(client: Client, task_id: str, **fields: object) -> None:
    async for task in client.watch(task_id, timeout=60):
        if all(getattr(task, k) == v for k, v in fields.items()):
            return
    raise AssertionError(f"task {task_id} ended without reaching {fields}")


async def complete(call: LeaseCall, task_id: str, lease_id: str, value: str) -> pb.CompletionAck:
    done = pb.Completion(task_id=task_id, lease_id=lease_id)
    done.result.json.string_value = value
    await call.write(pb.LeaseRequest(completions=pb.Completions(completions=[done])))
    return (await read_kind(call, "completion_acks")).completion_acks.acks[0]


async def test_a_result_for_a_lapsed_lease_nobody_took_since_is_recorded(
    client: Client, raw: Stubs
) -> None:
    task = await client.submit("record")
    call, _ = await open_raw(raw, "slow", credits=1)
    lease = (await read_kind(call, "assignments")).assignments.assignments[0]
    # No heartbeat: the lease lapses, the task waits again (with no other worker).
    await wait_until(client, task.id, state=TaskState.PENDING, lease_losses=1)

    ack = await complete(call, task.id, lease.lease_id, "late")
    assert not ack.HasField("error")
    assert await client.wait(task.id, timeout=10) == "late"
    done = await client.get(task.id)
    assert (done.attempt, done.lease_losses, done.error) == (1, 0, None)
    assert [a.outcome for a in await client.attempts(task.id)] == ["succeeded"]
    call.cancel()


async def test_a_heartbeat_brings_a_lapsed_lease_back(client: Client, raw: Stubs) -> None:
    task = await client.submit("record")
    call, _ = await open_raw(raw, "slow", credits=1)
    lease = (await read_kind(call, "assignments")).assignments.assignments[0]
    await wait_until(client, task.id, state=TaskState.PENDING, lease_losses=1)

    beat = pb.Heartbeat(task_id=task.id, lease_id=lease.lease_id)
    await call.write(pb.LeaseRequest(heartbeats=pb.Heartbeats(heartbeats=[beat])))
    ack = (await read_kind(call, "heartbeat_acks")).heartbeat_acks.acks[0]
    assert not ack.HasField("error") and ack.HasField("lease_expire_time")
    running = await client.get(task.id)
    assert (running.state, running.attempt, running.lease_losses, running.worker_id) == (
        TaskState.RUNNING,
        1,
        0,
        "slow",
    )
    assert not (await complete(call, task.id, lease.lease_id, "kept")).HasField("error")
    assert await client.wait(task.id, timeout=10) == "kept"
    call.cancel()


async def test_a_lapsed_lease_is_lost_once_the_task_is_leased_again(
    client: Client, raw: Stubs
) -> None:
    task = await client.submit("record")
    first_call, _ = await open_raw(raw, "first", credits=1)
    first = (await read_kind(first_call, "assignments")).assignments.assignments[0]
    await wait_until(client, task.id, state=TaskState.PENDING, lease_losses=1)
    second_call, _ = await open_raw(raw, "second", credits=1)
    second = (await read_kind(second_call, "assignments")).assignments.assignments[0]
    assert (second.task_id, second.attempt) == (task.id, 2)
    # The first holder is told (it is connected to this broker) ...
    cancels = (await read_kind(first_call, "cancellations")).cancellations.cancellations
    assert [(c.task_id, c.lease_id, c.reason) for c in cancels] == [
        (task.id, first.lease_id, pb.CANCEL_REASON_LEASE_LOST)
    ]
    # ... and its result no longer counts.
    assert (await complete(first_call, task.id, first.lease_id, "stale")).error.reason == (
        "LEASE_LOST"
    )
    assert not (await complete(second_call, task.id, second.lease_id, "fresh")).HasField("error")
    assert await client.wait(task.id, timeout=10) == "fresh"
    assert (await client.get(task.id)).lease_losses == 1
    first_call.cancel()
    second_call.cancel()


async def test_a_worker_that_misses_the_restart_window_keeps_its_task_if_nobody_took_it(
    broker: Broker, client: Client, tmp_path: Path
) -> None:
    worker = await start_worker(broker, tmp_path, name="w1")
    task = await client.submit("sleep", {"seconds": 2.0})
    await wait_until(client, task.id, state=TaskState.RUNNING)
    # Frozen through the restart and past the re-adoption window: the new broker's
    # reaper takes the lease, and the task waits again with nobody else to run it.
    await worker.process.signal(signal.SIGSTOP)
    mark = worker.process.line_count
    await broker.stop()
    await broker.start()
    async with Client(broker.target) as fresh:
        await wait_until(fresh, task.id, state=TaskState.PENDING, lease_losses=1)
        await worker.process.signal(signal.SIGCONT)
        await worker.connected(after=mark)
        # It re-adopts the lapsed lease (hello.held_leases) and reports the attempt
        # it ran: attempt 1, run once, the loss taken back.
        assert await fresh.wait(task.id, timeout=30) == {"peak": 1}
        final = await fresh.get(task.id)
    assert (final.state, final.attempt, final.lease_losses) == (TaskState.SUCCEEDED, 1, 0)
    starts = [line for line in read_record(tmp_path) if line[:2] == ["start", task.id]]
    assert len(starts) == 1, starts
    await worker.stop()
