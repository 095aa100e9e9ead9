"""Memory a caller can make the broker spend is bounded: unauthenticated bodies are not read,
the receive limit is the largest legal request, open streams are capped, FULL watches share
one snapshot and memory returns after they close, FULL lists page by bytes, submissions have
a byte rate, and a hello may re-adopt a bounded number of leases.

RSS is read from /proc: these tests measure the broker process, on a shared machine, so
their margins are wide (the effects they guard against are ten times larger)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2

from broker.api.watch_frames import Snapshot
from broker.config import Limits
from broker.core.models import Progress
from taskyard.v1 import payload_pb2, task_pb2
from taskyard.v1 import task_service_pb2 as ts
from taskyard.v1 import worker_service_pb2 as ws
from tests.helpers import Broker, stubs
from tests.security.support import LeaseStream, TokensFile, call, outcome_of
from worker_sdk import Client, TaskyardError

MB = 1024 * 1024
PAYLOAD = MB - 64  # a serialized Payload just under the 1 MiB default
# The documented defaults (docs/security.md), spelled out so that a broker
# without them fails on behaviour, not on a missing attribute.
RECEIVE_BYTES = 4 * MB  # max(largest CreateTask, --max-batch-bytes)
PAGE_BYTES = 4 * MB  # --max-page-bytes
OPEN_STREAMS = 100  # --max-open-streams

StartBroker = Callable[..., Awaitable[Broker]]


@pytest.fixture
async def broker_with(db_url: str, tmp_path: Path) -> AsyncIterator[StartBroker]:
    """Start a broker with these flags (stopped after the test)."""
    started: list[Broker] = []

    async def start(*args: str) -> Broker:
        broker = Broker(db_url=db_url, workdir=tmp_path, extra_args=list(args))
        await broker.start()
        started.append(broker)
        return broker

    yield start
    for broker in started:
        await broker.stop()


def rss_mb(broker: Broker) -> float:
    assert broker.process is not None
    for line in Path(f"/proc/{broker.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def settled_rss(broker: Broker, *, below: float, deadline_s: float = 60.0) -> float:
    """RSS once it is below `below` MB (freed memory goes back with a delay), or the last read."""
    end = time.monotonic() + deadline_s
    now = rss_mb(broker)
    while now >= below and time.monotonic() < end:
        await asyncio.sleep(0.5)  # RSS cannot be awaited
        now = rss_mb(broker)
    return now


def channels(broker: Broker, n: int) -> list[grpc.aio.Channel]:
    """n channels on n separate connections (channels otherwise share one)."""
    options = [("grpc.max_receive_message_length", 64 * MB), ("grpc.use_local_subchannel_pool", 1)]
    return [grpc.aio.insecure_channel(broker.target, options=options) for _ in range(n)]


async def big_task(broker: Broker, *, queue: str = "nobody") -> str:
    async with stubs(broker) as s:
        payload = payload_pb2.Payload(binary=b"p" * PAYLOAD)
        task = task_pb2.Task(type="echo", queue=queue, payload=payload)
        return (await s.tasks.CreateTask(ts.CreateTaskRequest(task=task))).task.id


# --- Before authentication ------------------------------------------------------------------


async def test_bodies_without_a_token_are_never_read(
    db_url: str, tmp_path: Path, broker_with: StartBroker
) -> None:
    """Before: ten 30 MB requests without a token cost the broker ~400 MB."""
    tokens = TokensFile(tmp_path / "tokens.toml")
    tokens.add("alice", "submitter")
    # A receive limit above the requests, so that only the token decides.
    broker = await broker_with("--tokens", str(tokens.path), "--max-message-bytes", "40000000")
    baseline = rss_mb(broker)
    body = b"\x0a" + b"x" * (30 * MB)
    connections = channels(broker, 10)
    try:
        outcomes = await asyncio.gather(
            *(call(c, "/taskyard.v1.TaskService/CreateTask", body) for c in connections)
        )
    finally:
        for c in connections:
            await c.close()
    assert {(o.code, o.reason) for o in outcomes} == {
        (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_REQUIRED")
    }
    assert rss_mb(broker) - baseline < 100


async def test_the_receive_limit_is_the_largest_legal_request(
    broker: Broker, client: Client
) -> None:
    labels = {f"{i:02d}" + "k" * 198: "v" * 1024 for i in range(64)}
    largest = task_pb2.Task(
        type="t" * 200,
        queue="q" * 200,
        labels=labels,
        payload=payload_pb2.Payload(binary=b"p" * PAYLOAD),
    )
    async with broker.channel() as channel:
        request = ts.CreateTaskRequest(task=largest, request_id="r" * 200)
        assert request.ByteSize() <= RECEIVE_BYTES
        accepted = await call(channel, "/taskyard.v1.TaskService/CreateTask", request)
        assert accepted.code is grpc.StatusCode.OK
        # Over the limit is refused by gRPC before anything is decoded (before:
        # 32 MiB for every request).
        over = b"\x0a" + b"x" * RECEIVE_BYTES
        refused = await call(channel, "/taskyard.v1.TaskService/CreateTask", over)
        assert refused.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    limits = Limits()
    assert limits.largest_task_bytes <= limits.receive_bytes == RECEIVE_BYTES


async def test_health_streams_without_a_token_are_capped(
    db_url: str, tmp_path: Path, broker_with: StartBroker
) -> None:
    tokens = TokensFile(tmp_path / "tokens.toml")
    tokens.add("alice", "submitter")
    broker = await broker_with("--tokens", str(tokens.path))  # --max-open-streams 100
    request = health_pb2.HealthCheckRequest().SerializeToString()
    path = "/grpc.health.v1.Health/Watch"
    async with broker.channel() as channel:
        watch: Any = channel.unary_stream(path)
        open_ = [watch(request) for _ in range(OPEN_STREAMS)]
        for stream in open_:
            await stream.read()  # the status: the stream is open
        too_many = (grpc.StatusCode.RESOURCE_EXHAUSTED, "TOO_MANY_STREAMS")
        extra = await call(channel, path, request, streaming="server")
        assert (extra.code, extra.reason) == too_many
        open_[0].cancel()
        # The broker frees the slot when it sees the cancel; that cannot be awaited.
        async with asyncio.timeout(10):
            while (again := await call(channel, path, request, streaming="server")).code is not (
                grpc.StatusCode.OK
            ):
                assert (again.code, again.reason) == too_many
                await asyncio.sleep(0.05)
        for stream in open_[1:]:
            stream.cancel()


async def test_streams_per_connection_are_capped(
    db_url: str, tmp_path: Path, broker_with: StartBroker
) -> None:
    broker = await broker_with("--max-streams-per-connection", "3")
    task_id = await big_task(broker)
    request = ts.WatchTaskRequest(id=task_id)
    (channel,) = channels(broker, 1)
    try:
        watch: Any = channel.unary_stream(
            "/taskyard.v1.TaskService/WatchTask",
            request_serializer=ts.WatchTaskRequest.SerializeToString,
            response_deserializer=ts.WatchTaskResponse.FromString,
        )
        first = [watch(request) for _ in range(3)]
        for stream in first:
            await stream.read()
        fourth = watch(request)
        reading = asyncio.ensure_future(fourth.read())
        # A fourth stream on the same connection is not served while three are open
        # (an absence, so a wait: two seconds in which it would otherwise be answered).
        done, _ = await asyncio.wait([reading], timeout=2)
        assert not done or isinstance(reading.exception(), grpc.aio.AioRpcError)
        first[0].cancel()
        if done:  # gRPC's client may fail it (REFUSED_STREAM) rather than wait
            assert (await fourth.code()) is grpc.StatusCode.UNAVAILABLE
        else:
            assert (await reading).task.id == task_id
        for stream in [*first, fourth]:
            stream.cancel()
    finally:
        await channel.close()


# --- After authentication -------------------------------------------------------------------


@pytest.mark.slow
async def test_500_full_watches_share_the_payload_and_memory_returns_after(
    broker: Broker,
) -> None:
    """Before: 2.7 GB with 500 FULL watches of a 1 MB task, and 2 GB after they closed."""
    task_id = await big_task(broker)
    baseline = rss_mb(broker)
    connections = channels(broker, 10)
    request = ts.WatchTaskRequest(id=task_id, view=ts.TASK_VIEW_FULL).SerializeToString()
    streams: list[Any] = []
    try:
        for i in range(500):
            watch: Any = connections[i % 10].unary_stream("/taskyard.v1.TaskService/WatchTask")
            streams.append(watch(request))
        firsts = await asyncio.gather(*(s.read() for s in streams))
        assert all(len(m) > PAYLOAD for m in firsts)
        del firsts
        peak = rss_mb(broker)
        # The watchers poll every few seconds; let a round of polls pass.
        await asyncio.sleep(6)  # polls are the broker's timer; nothing to await
        peak = max(peak, rss_mb(broker))
    finally:
        for s in streams:
            s.cancel()
        for c in connections:
            await c.close()
    assert peak - baseline < 600, f"{peak:.0f} MB with the watches open, {baseline:.0f} before"
    after = await settled_rss(broker, below=baseline + 100)
    assert after - baseline < 100, f"{after:.0f} MB after the watches closed, {baseline:.0f} before"


async def test_a_full_list_pages_by_bytes(broker: Broker) -> None:
    """Before: a FULL page held every task of page_size (900 MB for four callers)."""
    ids = {await big_task(broker) for _ in range(10)}
    bound = PAGE_BYTES
    seen: list[str] = []
    async with stubs(broker) as s:
        token = ""
        while True:
            page = await s.tasks.ListTasks(
                ts.ListTasksRequest(page_size=100, view=ts.TASK_VIEW_FULL, page_token=token)
            )
            assert len(page.tasks) >= 1 and page.ByteSize() <= bound + 64 * 1024
            assert all(len(t.payload.binary) == PAYLOAD for t in page.tasks)
            seen += [t.id for t in page.tasks]
            token = page.next_page_token
            if not token:
                break
    assert len(seen) == len(set(seen)) and set(seen) == ids
    assert len(seen) > len(page.tasks)  # it took several pages


async def test_submissions_have_a_byte_rate_per_identity(
    db_url: str, tmp_path: Path, broker_with: StartBroker
) -> None:
    """Before: only tasks were counted; one submitter stored 93 MB in 2.4 s."""
    tokens = TokensFile(tmp_path / "tokens.toml")
    tokens.add("alice", "submitter")
    tokens.add("bob", "submitter")
    broker = await broker_with(
        "--tokens",
        str(tokens.path),
        "--submit-bytes-rate",
        "10000",  # slow enough that a slow machine's seconds refill little
        "--submit-bytes-burst",
        str(6 * MB),
    )
    big = b"x" * (900 * 1024)
    async with (
        Client(broker.target, token=tokens.tokens["alice"]) as alice,
        Client(broker.target, token=tokens.tokens["bob"]) as bob,
    ):
        accepted = 0
        with pytest.raises(TaskyardError) as info:
            for _ in range(20):
                await alice.submit("echo", big, queue="nobody")
                accepted += 1
        assert (info.value.code, info.value.reason) == (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "RATE_LIMITED",
        )
        assert 5 <= accepted <= 7  # 6 MiB of burst (~6 requests of 0.9 MB), 10 kB/s after
        assert info.value.retry_after is not None and info.value.retry_after > 1
        assert (await bob.submit("echo", big, queue="nobody")).id  # another identity's bucket
        assert len([t async for t in alice.list()]) == accepted  # nothing refused was stored


async def test_a_hello_re_adopts_at_most_max_lease_items(
    db_url: str, tmp_path: Path, broker_with: StartBroker
) -> None:
    """Before: a hello with 600,000 held leases stalled the writer for every tenant."""
    broker = await broker_with("--max-lease-items", "500")
    held: Sequence[dict[str, str]] = [
        {"task_id": f"01ARZ3NDEKTSV4RRFFQ69G{i:04d}", "lease_id": "1"} for i in range(501)
    ]
    async with broker.channel() as channel:
        lease = LeaseStream(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await lease.hello(task_types=["echo"], held_leases=held)
        outcome = outcome_of(info.value)
        assert (outcome.code, outcome.reason) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "BATCH_TOO_LARGE",
        )
        ok = LeaseStream(channel)
        welcome = await ok.hello(task_types=["echo"], held_leases=held[:500])
        assert len(welcome.lost_leases) == 500  # none of them exist: all reported lost
        ok.close()


async def test_full_watch_messages_keep_the_payload_as_progress_arrives(broker: Broker) -> None:
    """Shared snapshots: progress is added to the version's message, nothing else changes."""
    task_id = await big_task(broker, queue="default")
    async with broker.channel() as channel, stubs(broker) as s:
        worker = LeaseStream(channel)
        await worker.hello(task_types=["echo"], credits=1)
        (assigned,) = await worker.assignments()
        watch: Any = s.tasks.WatchTask(ts.WatchTaskRequest(id=task_id, view=ts.TASK_VIEW_FULL))
        first: ts.WatchTaskResponse = await watch.read()
        assert first.task.state == task_pb2.TASK_STATE_RUNNING
        beat = ws.Heartbeat(
            task_id=task_id, lease_id=assigned.lease_id, progress=task_pb2.Progress(percent=40)
        )
        await worker.send(ws.LeaseRequest(heartbeats=ws.Heartbeats(heartbeats=[beat])))
        second: ts.WatchTaskResponse = await watch.read()
        assert second.task.progress.percent == 40
        assert (
            second.task.payload == first.task.payload and len(first.task.payload.binary) == PAYLOAD
        )
        second.task.ClearField("progress")
        assert second.task == first.task
        await worker.complete(task_id, assigned.lease_id, b"done")
        last: ts.WatchTaskResponse = await watch.read()
        assert last.task.state == task_pb2.TASK_STATE_SUCCEEDED
        assert last.task.result.binary == b"done" and last.task.payload == first.task.payload
        watch.cancel()
        worker.close()


def test_a_watch_frame_carries_each_field_once() -> None:
    """Every runtime reads it alike: protobufjs replaces a sub-message seen twice."""
    task = task_pb2.Task(id="t" * 26, type="echo", payload=payload_pb2.Payload(binary=b"p" * 300))
    snapshot = Snapshot(task.SerializeToString())
    assert ts.WatchTaskResponse.FromString(snapshot.base.wire).task == task
    framed = snapshot.frame(Progress(50.0, "half", 1, 2, 1_700_000_000_000_000)).wire
    decoded = ts.WatchTaskResponse.FromString(framed)
    assert decoded.task.progress.message == "half" and decoded.task.payload == task.payload
    # One length-delimited field 1 spanning the whole message: no second occurrence.
    assert framed[0] == 0x0A
    length, shift, start = 0, 0, 1
    while True:
        byte = framed[start]
        length |= (byte & 0x7F) << shift
        start, shift = start + 1, shift + 7
        if byte < 0x80:
            break
    assert start + length == len(framed)
