"""WatchEvents across PostgreSQL replicas: what one replica commits, another's subscribers see."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from taskyard.v1 import event_service_pb2 as pb
from taskyard.v1 import event_service_pb2_grpc, task_pb2
from tests.conftest import _postgres
from tests.helpers import Broker, start_worker
from tests.http_client import Http
from worker_sdk import Client

DEADLINE_S = 30.0


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[list[Broker]]:
    url = await _postgres.create()
    brokers = []
    for name in ("a", "b"):
        workdir = tmp_path / name
        workdir.mkdir()
        brokers.append(
            Broker(db_url=url, workdir=workdir, extra_args=["--http-listen", "127.0.0.1:0"])
        )
    try:
        await brokers[0].start()  # creates the schema
        await brokers[1].start()
        yield brokers
    finally:
        for b in brokers:
            if b.process is not None and b.process.proc.returncode is None:
                await b.stop()
        await _postgres.drop(url)


async def test_events_committed_on_one_replica_reach_subscribers_of_the_other(
    pair: list[Broker], tmp_path: Path
) -> None:
    a, b = pair
    async with b.channel() as channel:
        call = event_service_pb2_grpc.EventServiceStub(channel).WatchEvents(pb.WatchEventsRequest())
        first = await call.read()
        assert isinstance(first, pb.WatchEventsResponse)
        worker = await start_worker(a, tmp_path, name="on-a")  # connects to replica a only
        async with Client(a.target) as client:
            task = await client.submit("progress", {"steps": 2, "pause": 0.2})
            await client.wait(task.id, timeout=DEADLINE_S)
        events: list[pb.Event] = []
        async with asyncio.timeout(DEADLINE_S):
            while not any(e.task_state.state == task_pb2.TASK_STATE_SUCCEEDED for e in events):
                message = await call.read()
                assert isinstance(message, pb.WatchEventsResponse)
                events += [
                    e
                    for e in message.events
                    if e.task_state.task_id == task.id
                    or e.HasField("task_progress")
                    or e.HasField("worker")
                ]
        call.cancel()
        await worker.stop()
    states = [e.task_state.state for e in events if e.HasField("task_state")]
    assert states[-2:] == [task_pb2.TASK_STATE_RUNNING, task_pb2.TASK_STATE_SUCCEEDED]
    assert any(e.task_progress.task_id == task.id for e in events)
    worker_events = [e.worker for e in events if e.HasField("worker")]
    assert worker_events and worker_events[0].worker.worker_id == "on-a"
    assert not any(e.HasField("gap") for e in events)


async def test_resuming_on_another_replica_is_an_explicit_gap(pair: list[Broker]) -> None:
    a, b = pair
    http_a, http_b = Http(a.http_port), Http(b.http_port)
    async with http_a.stream("EventService/WatchEvents", {}) as on_a:
        first = await on_a.read()
        assert first is not None
    async with Client(a.target) as client:
        await client.submit("echo")
    resume = {"streamId": first["streamId"], "afterSequence": first.get("sequence", "0")}
    async with http_b.stream("EventService/WatchEvents", resume) as on_b:
        hello = await on_b.read()
    assert hello is not None
    assert hello["events"][0]["gap"]["reason"] == "EVENT_GAP_REASON_UNKNOWN_STREAM"
    assert hello["streamId"] != first["streamId"]


async def test_watch_task_on_another_replica_hears_progress_at_once(
    pair: list[Broker], tmp_path: Path
) -> None:
    """WatchTask on b follows a task run through a: relayed events wake it (no poll wait)."""
    a, b = pair
    worker = await start_worker(a, tmp_path, name="runner")
    async with Client(a.target) as on_a, Client(b.target) as on_b:
        task = await on_a.submit("progress", {"steps": 3, "pause": 0.3})
        steps = [u.progress.step async for u in on_b.watch(task.id) if u.progress is not None]
    await worker.stop()
    assert len(set(steps)) >= 2, steps
