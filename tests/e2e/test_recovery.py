"""Workers and brokers die; acknowledged tasks do not get lost or finish twice."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from taskyard.v1 import worker_service_pb2 as pb
from tests.helpers import Broker, Stubs, read_record, start_worker, stubs, wait_for_record
from worker_sdk import Client, TaskSpec, TaskState


@pytest.fixture
def broker_args() -> list[str]:
    # Short leases so that expiry happens within a test's time.
    return ["--lease-duration", "1", "--sweep-interval", "0.2"]


async def wait_for_state(client: Client, task_id: str, state: TaskState) -> None:
    async for task in client.watch(task_id):
        if task.state is state:
            return
    raise AssertionError(f"task {task_id} finished without reaching {state}")


async def test_task_of_a_sigkilled_worker_is_rerun_by_another_worker(
    broker: Broker, client: Client, tmp_path: Path
) -> None:
    doomed = await start_worker(broker, tmp_path, name="doomed")
    task = await client.submit("hang.first")
    await wait_for_record(tmp_path, "start", task.id, 1)  # its handler runs, not only its lease
    assert (await client.get(task.id)).worker_id == "doomed"

    await doomed.kill()
    survivor = await start_worker(broker, tmp_path, name="survivor")
    result = await client.wait(task.id, timeout=30)

    assert result["attempt"] == 2
    final = await client.get(task.id)
    assert final.state is TaskState.SUCCEEDED and final.worker_id == "survivor"
    starts = [line for line in read_record(tmp_path) if line[1] == task.id]
    assert [line[2] for line in starts] == ["1", "2"]
    await survivor.stop()


LeaseCall = grpc.aio.StreamStreamCall[pb.LeaseRequest, pb.LeaseResponse]


@pytest.fixture
async def raw_lease(broker: Broker) -> AsyncIterator[Stubs]:
    """Stubs for speaking the Lease protocol directly, to misbehave on purpose."""
    async with stubs(broker) as s:
        yield s


async def open_raw(stub: Stubs, worker_id: str, credits: int) -> tuple[LeaseCall, pb.Welcome]:
    call: LeaseCall = stub.workers.Lease()
    hello = pb.Hello(worker_id=worker_id, task_types=["record"], credits=credits)
    await call.write(pb.LeaseRequest(hello=hello))
    first = await read_kind(call, "welcome")
    return call, first.welcome


async def read_kind(call: LeaseCall, kind: str) -> pb.LeaseResponse:
    while True:
        message = await call.read()
        assert isinstance(message, pb.LeaseResponse), "the stream ended"
        if message.WhichOneof("kind") == kind:
            return message


async def test_result_sent_after_the_lease_expired_is_rejected_and_changes_nothing(
    broker: Broker, client: Client, raw_lease: Stubs
) -> None:
    task = await client.submit("record", {"v": 1})
    stale_call, _ = await open_raw(raw_lease, "stale", credits=1)
    first = (await read_kind(stale_call, "assignments")).assignments.assignments[0]
    assert first.task_id == task.id

    # No heartbeat: the lease (1 s) expires and a second worker gets the task.
    fresh_call, _ = await open_raw(raw_lease, "fresh", credits=1)
    second = (await read_kind(fresh_call, "assignments")).assignments.assignments[0]
    assert second.task_id == task.id and second.lease_id != first.lease_id
    assert second.attempt == 2

    stale = pb.Completion(task_id=task.id, lease_id=first.lease_id)
    stale.result.json.string_value = "stale"
    await stale_call.write(pb.LeaseRequest(completions=pb.Completions(completions=[stale])))
    ack = (await read_kind(stale_call, "completion_acks")).completion_acks.acks[0]
    assert ack.error.reason == "LEASE_LOST"
    heartbeat = pb.Heartbeat(task_id=task.id, lease_id=first.lease_id)
    await stale_call.write(pb.LeaseRequest(heartbeats=pb.Heartbeats(heartbeats=[heartbeat])))
    hb_ack = (await read_kind(stale_call, "heartbeat_acks")).heartbeat_acks.acks[0]
    assert hb_ack.error.reason == "LEASE_LOST"

    current = await client.get(task.id)
    assert current.state is TaskState.RUNNING and current.worker_id == "fresh"
    assert current.result is None

    good = pb.Completion(task_id=task.id, lease_id=second.lease_id)
    good.result.json.string_value = "fresh"
    await fresh_call.write(pb.LeaseRequest(completions=pb.Completions(completions=[good])))
    ack = (await read_kind(fresh_call, "completion_acks")).completion_acks.acks[0]
    assert not ack.HasField("error")
    assert await client.wait(task.id, timeout=10) == "fresh"
    stale_call.cancel()
    fresh_call.cancel()


async def test_closing_the_stream_releases_its_leases_at_once(
    broker: Broker, client: Client, raw_lease: Stubs
) -> None:
    task = await client.submit("record")
    call, _ = await open_raw(raw_lease, "leaver", credits=5)
    await read_kind(call, "assignments")
    assert (await client.get(task.id)).state is TaskState.RUNNING

    await call.done_writing()
    await wait_for_state(client, task.id, TaskState.PENDING)
    assert (await client.get(task.id)).attempt == 1


async def test_broker_killed_and_restarted_keeps_every_acknowledged_task(
    broker: Broker, client: Client, tmp_path: Path
) -> None:
    worker = await start_worker(broker, tmp_path, name="w1", concurrency=8)
    acknowledged = await client.submit_many(TaskSpec("record", {"i": i}) for i in range(300))

    await broker.kill()
    await broker.start()  # same database file, same port
    async with Client(broker.target) as fresh:
        more = await fresh.submit_many(TaskSpec("record", {"i": i}) for i in range(100))
        everything = [*acknowledged, *more]
        results = await asyncio.gather(*(fresh.wait(t.id, timeout=60) for t in everything))
        assert [r["i"] for r in results] == [t.payload["i"] for t in everything]
        succeeded = {t.id async for t in fresh.list(state=TaskState.SUCCEEDED, page_size=1000)}
    assert succeeded == {t.id for t in everything}
    # A task can run twice only if its lease was in flight at the crash; the
    # record shows each re-run, and the broker kept exactly one result.
    runs = [line[1] for line in read_record(tmp_path) if line[0] == "run"]
    assert set(runs) == {t.id for t in everything}
    await worker.stop()


async def test_sigterm_stops_the_broker_cleanly_with_exit_status_zero(
    broker: Broker, client: Client
) -> None:
    await client.submit("record")
    assert await broker.stop() == 0
    log = (broker.workdir / "broker.log").read_text()
    assert "shutting down" in log and "Traceback" not in log
