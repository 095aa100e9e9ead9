"""The event journal, its relay codec and the shared encodings, without a broker."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any, cast

from google.protobuf import json_format

from broker.api.event_filter import EventFilter
from broker.api.event_service import Runs, Subscription
from broker.api.event_wire import Batch, Run, encoded, message, task_state_bytes
from broker.api.runtime import Runtime
from broker.clock import FakeClock
from broker.core.models import Progress
from broker.core.schedules import FireRecord, FireResult
from broker.core.task_state import TaskState
from broker.engine import event_relay
from broker.engine.event_record import Event, GapReason, Kind, WorkerChange
from broker.engine.journal import Journal
from broker.store.notices import MAX_PAYLOAD
from broker.store.workers import SessionRow
from taskyard.v1 import event_service_pb2 as pb

ROW = SessionRow(
    "s1", "w1", "r1", "ipv4:1.2.3.4:5", "python 1", ("echo",), ("q",), 1, 2, 3, 0, False
)


def journal(window: int = 10, relay: bool = False) -> Journal:
    return Journal(stream_id="r1", clock=FakeClock(), window=window, relay=relay)


def add_tasks(j: Journal, n: int, now: int = 1_000_000) -> None:
    for i in range(n):
        j.task(f"t{i}", "q", "echo", TaskState.PENDING, None, 0)
    j.commit(now)


def test_events_are_numbered_at_commit_and_kept_for_the_window() -> None:
    j = journal(window=10)
    j.task("t0", "q", "echo", TaskState.PENDING, None, 0)
    assert j.head == 0  # not committed yet
    j.discard()
    j.commit(5)
    assert j.head == 0  # the discarded event never existed
    add_tasks(j, 25)
    assert (j.head, j.oldest) == (25, 16)
    assert j.get(15) is None and j.get(26) is None
    event = j.get(16)
    assert event is not None and event.key == "t15" and event.at == 1_000_000


def test_relay_payloads_round_trip_every_kind_and_stay_small() -> None:
    j = journal(relay=True)
    j.task("t1", "q", "echo", TaskState.RUNNING, TaskState.PENDING, 2)
    j.progress("t1", "q", "echo", Progress(50.0, "half", 1, 2, 7))
    fire = FireRecord("", 10, True, FireResult.STARTED, 11, "t9", 1, None, None)
    j.fire("nightly", fire, "cron", "echo")
    j.worker(WorkerChange.CONNECTED, ROW)
    for i in range(300):  # enough to need several payloads
        j.task(f"bulk{i:04d}-{'x' * 40}", "q", "echo", TaskState.PENDING, None, 0)
    payloads = j.outgoing(123)
    assert len(payloads) > 1 and all(len(p.encode()) <= MAX_PAYLOAD for p in payloads)
    messages = [event_relay.decode(p) for p in payloads]
    assert [m.number for m in messages if m] == list(range(1, len(payloads) + 1))
    events = [e for m in messages if m for e in m.events]
    assert len(events) == 304
    first, progress, fired, worker = events[:4]
    assert (first.kind, first.key, first.state, first.previous, first.attempt) == (
        Kind.TASK_STATE, "t1", int(TaskState.RUNNING), int(TaskState.PENDING), 2,
    )  # fmt: skip
    assert progress.detail == Progress(50.0, "half", 1, 2, 7)
    assert fired.detail.task_id == "t9" and fired.queue == "cron"
    assert worker.detail == ROW and worker.state == int(WorkerChange.CONNECTED)
    j.commit(123)
    assert j.outgoing(124) == []  # nothing pending


def test_a_missing_relay_message_becomes_a_gap() -> None:
    sender, receiver = (
        journal(relay=True),
        Journal(stream_id="r2", clock=FakeClock(), window=100, relay=True),
    )
    sent = []
    for round_ in range(3):
        sender.task(f"t{round_}", "q", "echo", TaskState.PENDING, None, 0)
        sent += sender.outgoing(round_)
        sender.commit(round_)
    receiver.heard(sent[0])
    receiver.heard(sent[2])  # the second never arrived
    kinds = [e.kind for e in (receiver.get(s) for s in range(1, receiver.head + 1)) if e]
    assert kinds == [Kind.TASK_STATE, Kind.GAP, Kind.TASK_STATE]
    assert receiver.heard(sent[0].replace('"r":"r1"', '"r":"r2"')) == []  # its own: ignored


def _runtime() -> Runtime:
    return cast(Runtime, SimpleNamespace(clock=FakeClock(), db=None))


async def test_a_subscriber_that_falls_a_window_behind_gets_a_gap_then_the_rest() -> None:
    j = journal(window=10)
    sub = Subscription(j, EventFilter(), _runtime())
    start = sub.start(pb.WatchEventsRequest())
    assert start.sequence == 0 and not start.events
    add_tasks(j, 25)  # the subscriber read nothing meanwhile
    batch = await sub._read()
    message = batch.message()
    gap = message.events[0].gap
    assert (gap.reason, gap.first_sequence, gap.last_sequence) == (
        pb.EVENT_GAP_REASON_SLOW_SUBSCRIBER, 1, 15,
    )  # fmt: skip
    assert [e.sequence for e in message.events[1:]] == list(range(16, 26))
    assert message.sequence == 25


def test_a_batch_is_the_same_message_as_protobuf_and_as_json() -> None:
    events = [
        Event(Kind.TASK_STATE, "t1", "q", "echo", 3, 2, 1, at=1_700_000_000_123_456),
        Event(Kind.TASK_PROGRESS, "t1", "q", "echo", detail=Progress(10.0, "m", 1, 3, 5)),
        Event(Kind.WORKER, "s1", None, None, 2, detail=ROW),
        Event(Kind.GAP, "", None, None, detail=GapReason.REPLICA_LINK),
    ]
    batch = Batch("r1", 9, [encoded(i + 6, e) for i, e in enumerate(events)])
    message = batch.message()
    assert [e.sequence for e in message.events] == [6, 7, 8, 9]
    assert message.events[0].task_state.state == 3 and message.events[0].time.nanos == 123_456_000
    assert message.events[2].worker.worker.worker_id == "w1"
    as_json: dict[str, Any] = json.loads(batch.json())
    assert as_json == json_format.MessageToDict(message)


def test_task_state_events_are_written_byte_for_byte_as_protobuf_would() -> None:
    cases = [
        Event(Kind.TASK_STATE, "01M927P8EEFDQBGF8KQ5X06PWV", "q", "echo", 3, 2, 1, at=1),
        Event(Kind.TASK_STATE, "t", "", "", 0, 0, 0, at=0),  # defaults are left out
        Event(Kind.TASK_STATE, "t", "quëue", "tÿpe", 9, 4, 100_000, at=1_796_445_250_005_032),
        Event(Kind.TASK_STATE, "t", None, None, 2, 0, 0, at=1_700_000_000_000_000),
    ]
    for seq, event in zip((1, 0, 300, 2**40), cases, strict=True):
        assert task_state_bytes(seq, event) == message(seq, event).SerializeToString(), event.key


def test_the_fast_encoding_holds_at_every_varint_width_and_long_names() -> None:
    """Lengths and numbers cross the one-, two- and three-byte varint boundaries."""
    key, long_name = "k" * 200, "q" * 130  # lengths over 127: two-byte varints
    at = 1_796_445_250_005_032
    for seq in (127, 128, 16_383, 16_384, 2_097_151, 2_097_152, 2**35):
        for event in (
            Event(Kind.TASK_STATE, key, long_name, "t", 3, 2, 127, at=at),
            Event(Kind.TASK_STATE, "t", "q", long_name, 1, 0, 128, at=at + seq),
            Event(Kind.TASK_STATE, "t", "", "", 0, 0, 16_384, at=0),
        ):
            body = message(seq, event).SerializeToString()
            assert task_state_bytes(seq, event) == body, (seq, event.attempt)
            framed = encoded(seq, event).framed  # WatchEventsResponse.events: tag 1, length
            assert pb.WatchEventsResponse.FromString(framed).events[0] == message(seq, event)


async def test_only_events_recorded_without_their_queue_make_a_reader_look_them_up() -> None:
    """A relayed progress report can lack its queue; the reader fills it in from the
    database, and only a range holding such an event costs that scan."""
    j = journal(window=100)
    add_tasks(j, 5)
    assert j.last_unplaced == 0
    sub = Subscription(j, EventFilter(), _runtime())  # no database: a lookup would fail
    sub.start(pb.WatchEventsRequest())
    add_tasks(j, 5)
    assert len((await sub._read()).events) == 5
    j.progress("t0", None, None, Progress(50.0, "half", 1, 2, 0))
    j.commit(2_000_000)
    assert j.last_unplaced == j.head == 11
    add_tasks(j, 3)
    assert j.last_unplaced == 11  # later events were placed


async def test_unfiltered_subscribers_share_runs_and_send_what_single_events_would() -> None:
    """Runs of events are joined once and shared; the messages are the same bytes and JSON
    as when each event is its own piece, whatever the read boundaries."""
    j = journal(window=1000)
    for commit in range(20):  # commits of uneven sizes
        for i in range(commit * 7 % 13 + 1):
            j.task(f"t{commit}-{i}", "q", "echo", TaskState.RUNNING, TaskState.PENDING, 1)
        j.commit(1_000_000 + commit)
    j.progress("t0-0", "q", "echo", Progress(50.0, "half", 1, 2, 0))
    j.worker(WorkerChange.CONNECTED, ROW)
    j.commit(2_000_000)
    runs = Runs()
    shared = [Subscription(j, EventFilter(), _runtime(), runs) for _ in range(2)]
    for sub in shared:
        sub.start(pb.WatchEventsRequest())
        sub.position = 5  # not on a run boundary
    plain = [
        Batch("r1", seq, [encoded(seq, e)]) for seq, e in enumerate(j.read(6, j.head), start=6)
    ]
    first, second = [await sub._read() for sub in shared]
    assert any(isinstance(piece, Run) for piece in first.events)
    assert [p for p in first.events if isinstance(p, Run)] == [
        p for p in second.events if isinstance(p, Run)
    ]  # the same objects: built once
    expected = [e for batch in plain for e in batch.message().events]
    assert list(first.message().events) == expected == list(second.message().events)
    as_json = json.loads(first.json())["events"]
    assert as_json == [json_format.MessageToDict(e) for e in expected]


def test_runs_kept_are_bounded() -> None:
    j = journal(window=100_000)
    add_tasks(j, Runs.RUN * (Runs.KEEP + 10))
    runs = Runs()
    pieces = runs.pieces(j.read(1, j.head), 1)
    assert sum(isinstance(p, Run) for p in pieces) == Runs.KEEP + 9  # 63 singles, then runs
    assert len(runs._runs) == Runs.KEEP
