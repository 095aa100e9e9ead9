"""What an assignment and a cancelled task say about attempts and reasons is what happened."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from taskyard.v1 import worker_service_pb2 as pb
from tests.e2e.test_recovery import LeaseCall, open_raw, read_kind
from tests.helpers import Broker, Stubs, stubs
from worker_sdk import Client, TaskFailed, TaskState


@pytest.fixture
async def raw(broker: Broker) -> AsyncIterator[Stubs]:
    async with stubs(broker) as s:
        yield s


async def lease_one(raw: Stubs, name: str) -> tuple[LeaseCall, pb.Assignment]:
    call, _ = await open_raw(raw, name, credits=1)
    return call, (await read_kind(call, "assignments")).assignments.assignments[0]


async def fail(call: LeaseCall, a: pb.Assignment) -> None:
    done = pb.Completion(task_id=a.task_id, lease_id=a.lease_id)
    done.failure.CopyFrom(pb.Failure(type="Boom", message=f"attempt {a.attempt}"))
    await call.write(pb.LeaseRequest(completions=pb.Completions(completions=[done])))
    await read_kind(call, "completion_acks")


async def test_an_assignment_says_when_its_attempt_is_the_last_despite_lost_leases(
    client: Client, raw: Stubs
) -> None:
    task = await client.submit("record", max_attempts=2)
    seen: list[tuple[int, int]] = []
    # Two workers vanish holding it (lost leases use no attempt), then one fails twice.
    for name in ("gone-1", "gone-2"):
        call, a = await lease_one(raw, name)
        seen.append((a.attempt, a.max_attempts))
        call.cancel()  # gone, holding the lease: a loss
    call, a = await lease_one(raw, "failing")
    seen.append((a.attempt, a.max_attempts))
    await fail(call, a)
    call.cancel()
    call, a = await lease_one(raw, "failing-again")
    seen.append((a.attempt, a.max_attempts))
    await fail(call, a)
    call.cancel()

    # max_attempts is the number of the last attempt: it moves on with each loss.
    assert seen == [(1, 2), (2, 3), (3, 4), (4, 4)]
    with pytest.raises(TaskFailed) as info:
        await client.wait(task.id, timeout=10)
    dead = info.value.task
    assert (dead.state, dead.attempt, dead.lease_losses, dead.max_attempts) == (
        TaskState.DEAD,
        4,
        2,
        2,
    )
    assert dead.error is not None and dead.error.message == "attempt 4"


async def test_cancel_tasks_reason_becomes_the_error_of_a_running_task(
    client: Client, raw: Stubs
) -> None:
    task = await client.submit("record")
    call, a = await lease_one(raw, "w")
    await client.cancel(task.id, reason="the customer withdrew the order")
    push = (await read_kind(call, "cancellations")).cancellations.cancellations[0]
    assert push.reason == pb.CANCEL_REASON_REQUESTED
    done = pb.Completion(task_id=a.task_id, lease_id=a.lease_id)
    done.cancelled.message = "handler stopped"
    await call.write(pb.LeaseRequest(completions=pb.Completions(completions=[done])))
    await read_kind(call, "completion_acks")
    call.cancel()

    cancelled = await client.get(task.id)
    assert cancelled.state is TaskState.CANCELLED
    assert cancelled.error is not None
    assert (cancelled.error.type, cancelled.error.message) == (
        "Cancelled",
        "the customer withdrew the order",
    )
    # The worker's own note is kept beside it.
    assert cancelled.error.details == "handler stopped"


async def test_a_running_task_cancelled_without_a_reason_keeps_the_workers_note(
    client: Client, raw: Stubs
) -> None:
    task = await client.submit("record")
    call, a = await lease_one(raw, "w")
    await client.cancel(task.id)
    await read_kind(call, "cancellations")
    done = pb.Completion(task_id=a.task_id, lease_id=a.lease_id)
    done.cancelled.message = "handler stopped"
    await call.write(pb.LeaseRequest(completions=pb.Completions(completions=[done])))
    await read_kind(call, "completion_acks")
    call.cancel()
    cancelled = await client.get(task.id)
    assert cancelled.error is not None and cancelled.error.message == "handler stopped"
