"""Every input limit, each set small on the command line, refused with its code and reason
and leaving nothing stored."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc
import pytest

from taskyard.v1 import payload_pb2, task_pb2, worker_service_pb2
from taskyard.v1 import task_service_pb2 as ts
from tests.helpers import Broker, stubs
from tests.security.support import TokensFile, call, outcome_of
from worker_sdk import Client, TaskSpec, TaskyardError

LIMITS = [
    "--max-payload-bytes", "1000",
    "--max-batch", "3",
    "--max-labels", "2",
    "--max-label-value", "8",
    "--max-string", "12",
    "--max-page-size", "2",
    "--max-credits", "5",
    "--max-lease-items", "500",
    "--max-message-bytes", "65536",
    "--max-streams-per-identity", "2",
]  # fmt: skip


@pytest.fixture(params=["sqlite"])
def backend(request: pytest.FixtureRequest) -> str:
    """Limits are checked before the store: one backend is enough."""
    return str(request.param)


@pytest.fixture
def broker_args() -> list[str]:
    return LIMITS


async def refused(coro: object) -> TaskyardError:
    with pytest.raises(TaskyardError) as info:
        await coro  # type: ignore[misc]
    return info.value


async def nothing_stored(client: Client) -> None:
    assert [t async for t in client.list()] == []


async def test_payload_over_the_limit_is_refused(client: Client) -> None:
    error = await refused(client.submit("echo", "x" * 1001))
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "PAYLOAD_TOO_LARGE")
    await nothing_stored(client)
    assert (await client.submit("echo", "x" * 900)).id


async def test_batch_over_the_limit_is_refused_whole(broker: Broker, client: Client) -> None:
    async with stubs(broker) as s:
        item = ts.CreateTaskRequest(task=task_pb2.Task(type="echo"))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await s.tasks.BatchCreateTasks(ts.BatchCreateTasksRequest(requests=[item] * 4))
    assert (outcome_of(info.value).code, outcome_of(info.value).reason) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "BATCH_TOO_LARGE",
    )
    await nothing_stored(client)


async def test_labels_over_the_count_or_length_are_refused(client: Client) -> None:
    many = await refused(client.submit("echo", labels={"a": "1", "b": "2", "c": "3"}))
    long = await refused(client.submit("echo", labels={"a": "123456789"}))
    for error in (many, long):
        assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_LABELS")
    await nothing_stored(client)


async def test_strings_over_the_limit_are_refused(client: Client) -> None:
    cases = [
        (client.submit("t" * 13), "INVALID_TYPE"),
        (client.submit("echo", queue="q" * 13), "INVALID_QUEUE"),
        (client.submit("echo", request_id="r" * 13), "INVALID_REQUEST_ID"),
    ]
    for coro, reason in cases:
        error = await refused(coro)
        assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, reason)
    await nothing_stored(client)


async def test_pages_are_cut_to_the_limit(client: Client, broker: Broker) -> None:
    await client.submit_many([TaskSpec("echo"), TaskSpec("echo"), TaskSpec("echo")])
    async with stubs(broker) as s:
        page = await s.tasks.ListTasks(ts.ListTasksRequest(page_size=100))
        assert len(page.tasks) == 2 and page.next_page_token
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await s.tasks.ListTasks(ts.ListTasksRequest(page_size=-1))
    assert outcome_of(info.value).reason == "INVALID_PAGE_SIZE"


async def test_a_message_over_the_size_limit_is_resource_exhausted(
    broker: Broker, client: Client
) -> None:
    big = ts.CreateTaskRequest(
        task=task_pb2.Task(type="echo", payload=payload_pb2.Payload(binary=b"x" * 70_000))
    )
    async with broker.channel() as channel:
        outcome = await call(channel, "/taskyard.v1.TaskService/CreateTask", big)
    assert outcome.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    await nothing_stored(client)


async def test_credits_over_the_limit_end_the_handshake(broker: Broker) -> None:
    hello = worker_service_pb2.LeaseRequest(
        hello=worker_service_pb2.Hello(worker_id="w", task_types=["echo"], credits=6)
    )
    async with broker.channel() as channel:
        outcome = await call(channel, "/taskyard.v1.WorkerService/Lease", hello, streaming="bidi")
    assert (outcome.code, outcome.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_CREDITS")


async def test_a_lease_message_over_the_item_limit_ends_the_stream(broker: Broker) -> None:
    pb = worker_service_pb2
    beats = [pb.Heartbeat(task_id="t", lease_id="1")] * 501
    async with broker.channel() as channel:
        bidi: Any = channel.stream_stream("/taskyard.v1.WorkerService/Lease")
        lease = bidi()
        hello = pb.Hello(worker_id="w", task_types=["echo"])
        await lease.write(pb.LeaseRequest(hello=hello).SerializeToString())
        assert pb.LeaseResponse.FromString(await lease.read()).HasField("welcome")
        message = pb.LeaseRequest(heartbeats=pb.Heartbeats(heartbeats=beats))
        await lease.write(message.SerializeToString())
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            await lease.read()
    outcome = outcome_of(ended.value)
    assert (outcome.code, outcome.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "BATCH_TOO_LARGE")


async def test_a_result_over_the_limit_is_refused_and_the_lease_kept(
    broker: Broker, client: Client
) -> None:
    task = await client.submit("echo")
    pb = worker_service_pb2
    async with broker.channel() as channel:
        bidi: Any = channel.stream_stream("/taskyard.v1.WorkerService/Lease")
        lease = bidi()
        hello = pb.Hello(worker_id="w", task_types=["echo"], credits=1)
        await lease.write(pb.LeaseRequest(hello=hello).SerializeToString())
        assert pb.LeaseResponse.FromString(await lease.read()).HasField("welcome")
        assigned = pb.LeaseResponse.FromString(await lease.read()).assignments.assignments[0]
        completion = pb.Completion(
            task_id=assigned.task_id,
            lease_id=assigned.lease_id,
            result=payload_pb2.Payload(binary=b"r" * 2000),
        )
        message = pb.LeaseRequest(completions=pb.Completions(completions=[completion]))
        await lease.write(message.SerializeToString())
        ack = pb.LeaseResponse.FromString(await lease.read()).completion_acks.acks[0]
        assert ack.error.reason == "PAYLOAD_TOO_LARGE"
        assert (await client.get(task.id)).state.value == "running"
        lease.cancel()


async def test_streams_per_identity_are_capped(broker: Broker, client: Client) -> None:
    task = await client.submit("echo")
    request = ts.WatchTaskRequest(id=task.id).SerializeToString()
    path = "/taskyard.v1.TaskService/WatchTask"
    async with broker.channel() as channel:
        watch_call: Any = channel.unary_stream(path)
        watches = [watch_call(request) for _ in range(2)]
        for watch in watches:
            await watch.read()  # the snapshot: the stream is open
        third = await call(channel, path, request, streaming="server")
        assert (third.code, third.reason) == (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "TOO_MANY_STREAMS",
        )
        watches[0].cancel()
        # The broker frees the slot when it sees the cancel; that cannot be awaited.
        async with asyncio.timeout(10):
            while (again := await call(channel, path, request, streaming="server")).code is not (
                grpc.StatusCode.OK
            ):
                assert again.reason == "TOO_MANY_STREAMS"
                await asyncio.sleep(0.05)
        watches[1].cancel()


async def test_submission_rate_is_per_identity_with_a_retry_hint(
    db_url: str, tmp_path: Path
) -> None:
    tokens = TokensFile(tmp_path / "tokens.toml")
    tokens.add("alice", "submitter")
    tokens.add("bob", "submitter")
    args = ["--tokens", str(tokens.path), "--submit-rate", "0.5", "--submit-burst", "3"]
    broker = Broker(db_url=db_url, workdir=tmp_path, extra_args=[*args, "--max-batch", "3"])
    await broker.start()
    try:
        async with (
            Client(broker.target, token=tokens.tokens["alice"]) as alice,
            Client(broker.target, token=tokens.tokens["bob"]) as bob,
        ):
            await alice.submit_many([TaskSpec("echo")] * 3)
            with pytest.raises(TaskyardError) as info:
                await alice.submit("echo")
            error = info.value
            assert (error.code, error.reason) == (
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "RATE_LIMITED",
            )
            # One task at 0.5/s: about two seconds from now.
            assert error.retry_after is not None and 0 < error.retry_after <= 2.0
            # Without time to wait out the limit, the batch is refused as a whole.
            with pytest.raises(TaskyardError) as batch:
                await alice.submit_many([TaskSpec("echo")] * 2, rate_limit_wait=0)
            assert batch.value.reason == "RATE_LIMITED"
            assert (await bob.submit("echo")).id
            assert len([t async for t in alice.list()]) == 3
    finally:
        await broker.stop()
