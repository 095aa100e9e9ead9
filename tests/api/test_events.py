"""EventService.WatchEvents against a real broker and worker, on both backends.

Each test subscribes before it acts and then reads until what it waits for
arrived (no sleeps): the first message of a stream arrives once the
subscription is live.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from taskyard.v1 import (
    event_service_pb2 as pb,
)
from taskyard.v1 import (
    event_service_pb2_grpc,
    schedule_service_pb2,
    schedule_service_pb2_grpc,
    task_pb2,
)
from tests.helpers import Broker, start_worker
from worker_sdk import Client, TaskSpec, TaskyardError

DEADLINE_S = 30.0


@pytest.fixture
def broker_args() -> list[str]:
    return ["--event-window", "40"]


class Watch:
    """One WatchEvents stream: its first message, then events as they come."""

    def __init__(self, call: Any, first: pb.WatchEventsResponse) -> None:
        self.call = call
        self.first = first
        self.events: list[pb.Event] = list(first.events)
        self.sequence = first.sequence

    async def until(self, done: Callable[[list[pb.Event]], bool]) -> list[pb.Event]:
        async with asyncio.timeout(DEADLINE_S):
            while not done(self.events):
                message = await self.call.read()
                assert message is not grpc.aio.EOF, "the stream ended"
                self.events += message.events
                assert message.sequence >= self.sequence
                self.sequence = message.sequence
        return self.events


@contextlib.asynccontextmanager
async def watch(broker: Broker, **request: Any) -> AsyncIterator[Watch]:
    async with broker.channel() as channel:
        stub = event_service_pb2_grpc.EventServiceStub(channel)
        call = stub.WatchEvents(json_format.ParseDict(request, pb.WatchEventsRequest()))
        first = await call.read()
        assert isinstance(first, pb.WatchEventsResponse)
        try:
            yield Watch(call, first)
        finally:
            call.cancel()


def states_of(events: Sequence[pb.Event], task_id: str) -> list[str]:
    return [
        task_pb2.TaskState.Name(e.task_state.state)
        for e in events
        if e.WhichOneof("kind") == "task_state" and e.task_state.task_id == task_id
    ]


async def test_a_task_s_life_arrives_in_order_with_sequence_numbers(
    broker: Broker, client: Client, tmp_path: Path
) -> None:
    worker = await start_worker(broker, tmp_path, name="w1")
    async with watch(broker) as w:
        assert w.first.stream_id and not w.first.events
        task = await client.submit("echo", {"n": 1}, labels={"team": "blue"})
        events = await w.until(lambda ev: "TASK_STATE_SUCCEEDED" in states_of(ev, task.id))
        mine = [e for e in events if e.task_state.task_id == task.id]
        # Created (pending, or leased at once to the idle worker), running, succeeded.
        assert states_of(mine, task.id)[-2:] == ["TASK_STATE_RUNNING", "TASK_STATE_SUCCEEDED"]
        assert mine[0].task_state.previous_state == task_pb2.TASK_STATE_UNSPECIFIED
        assert all(e.task_state.queue == "default" and e.task_state.type == "echo" for e in mine)
        assert mine[-1].task_state.attempt == 1
        sequences = [e.sequence for e in events]
        assert sequences == sorted(sequences) and len(set(sequences)) == len(sequences)
        assert all(e.time.seconds > 0 for e in mine)
    await worker.stop()


async def test_progress_worker_and_schedule_events(
    broker: Broker, client: Client, tmp_path: Path
) -> None:
    async with watch(broker) as w:
        worker = await start_worker(broker, tmp_path, name="evw")
        task = await client.submit("progress", {"steps": 2, "pause": 0.2})
        await w.until(lambda ev: "TASK_STATE_SUCCEEDED" in states_of(ev, task.id))
        async with broker.channel() as channel:
            schedules = schedule_service_pb2_grpc.ScheduleServiceStub(channel)
            schedule = json_format.ParseDict(
                {"name": "nightly", "spec": {"cron": {"expression": "0 3 * * *"}},
                 "task": {"type": "echo", "queue": "cron"}},
                schedule_service_pb2.CreateScheduleRequest().schedule,
            )  # fmt: skip
            await schedules.CreateSchedule(
                schedule_service_pb2.CreateScheduleRequest(schedule=schedule)
            )
            ran = await schedules.RunSchedule(
                schedule_service_pb2.RunScheduleRequest(name="nightly")
            )
        await client.drain_worker("evw")
        await worker.stop()

        def kinds(ev: Sequence[pb.Event]) -> set[str]:
            return {
                (e.WhichOneof("kind") or "")
                + (f":{pb.WorkerEventType.Name(e.worker.type)}" if e.HasField("worker") else "")
                for e in ev
            }

        wanted = {
            "task_progress",
            "schedule_fire",
            "worker:WORKER_EVENT_TYPE_CONNECTED",
            "worker:WORKER_EVENT_TYPE_DRAINING",
            "worker:WORKER_EVENT_TYPE_DISCONNECTED",
        }
        events = await w.until(lambda ev: wanted <= kinds(ev))
    steps = [e.task_progress.progress.step for e in events if e.task_progress.task_id == task.id]
    assert steps and steps == sorted(steps)
    progress = next(e.task_progress for e in events if e.HasField("task_progress"))
    assert (progress.queue, progress.type) == ("default", "progress")
    fire = next(e.schedule_fire for e in events if e.HasField("schedule_fire"))
    assert (fire.schedule, fire.queue, fire.type) == ("nightly", "cron", "echo")
    assert fire.fire.manual and fire.fire.task_id == ran.task.id
    connected = next(e.worker.worker for e in events if e.HasField("worker"))
    assert connected.worker_id == "evw" and "progress" in connected.task_types


async def test_filters_by_queue_type_state_labels_and_kind(broker: Broker, client: Client) -> None:
    rules = {
        "queues": ["q1"],
        "types": ["echo"],
        "states": ["TASK_STATE_PENDING"],
        "labels": {"team": "blue"},
        "kinds": ["EVENT_KIND_TASK_STATE"],
    }
    async with watch(broker, **rules) as w:
        others = [
            TaskSpec("echo", queue="q2", labels={"team": "blue"}),
            TaskSpec("other", queue="q1", labels={"team": "blue"}),
            TaskSpec("echo", queue="q1", labels={"team": "red"}),
            TaskSpec("echo", queue="q1"),
        ]
        await client.submit_many(others)
        wanted = await client.submit("echo", queue="q1", labels={"team": "blue", "x": "y"})
        await client.cancel(wanted.id)
        last = await client.submit("echo", queue="q1", labels={"team": "blue"})
        events = await w.until(lambda ev: any(e.task_state.task_id == last.id for e in ev))
    matched = [e.task_state.task_id for e in events]
    # The cancellation is filtered out by state; the other tasks by queue, type or labels.
    assert matched == [wanted.id, last.id]


async def test_a_reconnect_after_a_sequence_misses_nothing(broker: Broker, client: Client) -> None:
    async with watch(broker) as w:
        first = await client.submit("echo")
        await w.until(lambda ev: bool(states_of(ev, first.id)))
        stream_id, resume_after = w.first.stream_id, w.events[-1].sequence
    # Disconnected: these happen while nobody watches.
    missed = [t.id for t in await client.submit_many([TaskSpec("echo") for _ in range(5)])]
    async with watch(broker, stream_id=stream_id, after_sequence=str(resume_after)) as w:
        events = await w.until(lambda ev: all(states_of(ev, t) for t in missed))
    assert not any(e.HasField("gap") for e in events)
    assert [e.task_state.task_id for e in events[: len(missed)]] == missed
    assert events[0].sequence == resume_after + 1


async def test_resuming_before_the_window_or_on_another_stream_gets_a_gap(
    broker: Broker, client: Client
) -> None:
    async with watch(broker) as w:
        stream_id = w.first.stream_id
    # The window holds 40 events; 60 creations push the first ones out.
    await client.submit_many([TaskSpec("echo") for _ in range(60)])
    async with watch(broker, stream_id=stream_id, after_sequence="1") as w:
        gap = w.first.events[0].gap
        assert gap.reason == pb.EVENT_GAP_REASON_EXPIRED
        assert gap.first_sequence == 2 and gap.last_sequence >= 20
        events = await w.until(lambda ev: len(ev) >= 2)
        assert events[1].sequence == gap.last_sequence + 1
    async with watch(broker, stream_id="0123456789ab", after_sequence="5") as w:
        assert w.first.events[0].gap.reason == pb.EVENT_GAP_REASON_UNKNOWN_STREAM


async def test_bad_requests_are_invalid_argument(broker: Broker) -> None:
    bad = [
        pb.WatchEventsRequest(after_sequence=5),  # no stream_id
        pb.WatchEventsRequest(kinds=[99]),  # type: ignore[list-item]
        pb.WatchEventsRequest(queues=["no spaces allowed"]),
    ]
    async with broker.channel() as channel:
        stub = event_service_pb2_grpc.EventServiceStub(channel)
        for request in bad:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.WatchEvents(request).read()
            assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT, request


async def test_a_broker_that_stops_ends_the_stream_unavailable(broker: Broker) -> None:
    async with watch(broker) as w:
        await broker.stop()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            while True:
                message = await w.call.read()
                assert message is not grpc.aio.EOF
        error = TaskyardError.from_rpc_error(caught.value)
        assert (error.code, error.reason) == (grpc.StatusCode.UNAVAILABLE, "SHUTTING_DOWN")
