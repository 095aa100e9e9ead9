"""Journal events as WatchEvents messages, encoded once and shared by every subscriber.

An event is turned into a protobuf `Event` on its first delivery and kept
(in `Event.wire`) as the bytes of a `WatchEventsResponse.events` entry, tag
and length included, and as its JSON text once a JSON (HTTP) subscriber asks.
A response is then the concatenation of its events' bytes plus two fields,
with no per-subscriber encoding: ten subscribers cost about what one does
(docs/events.md has the figures). `Batch` is what the servicer yields;
gRPC and the HTTP codecs ask it for `proto()` or `json()`.
"""

from __future__ import annotations

from operator import attrgetter

from google.protobuf import json_format

from broker.api import convert, schedule_convert, worker_registry
from broker.core.models import Progress
from broker.core.schedules import FireRecord
from broker.engine.event_record import Event, GapReason, Kind
from broker.store.workers import SessionRow
from taskyard.v1 import event_service_pb2 as pb

_EVENTS_TAG = b"\x0a"  # WatchEventsResponse.events: field 1, length-delimited
_STREAM_TAG = b"\x12"  # stream_id: field 2, length-delimited
_SEQUENCE_TAG = b"\x18"  # sequence: field 3, varint
_FRAMED = attrgetter("framed")


_SMALL = [bytes((i,)) for i in range(128)]


def varint(n: int) -> bytes:
    if 0 <= n < 0x80:
        return _SMALL[n]
    if 0 < n < 0x4000:  # sequence numbers and lengths: mostly two or three bytes
        return bytes((n & 0x7F | 0x80, n >> 7))
    if 0 < n < 0x200000:
        return bytes((n & 0x7F | 0x80, (n >> 7) & 0x7F | 0x80, n >> 14))
    out = bytearray()
    n &= (1 << 64) - 1  # negative int64 values take ten bytes, as protobuf writes them
    while True:
        low = n & 0x7F
        n >>= 7
        if n:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def message(seq: int, ev: Event) -> pb.Event:
    """The protobuf form of one journal event."""
    out = pb.Event(sequence=seq)
    if ev.at:
        convert.set_timestamp(out.time, ev.at)
    kind, d = ev.kind, ev.detail
    if kind is Kind.TASK_STATE:
        t = out.task_state
        t.task_id, t.queue, t.type = ev.key, ev.queue or "", ev.type or ""
        t.state, t.previous_state, t.attempt = ev.state, ev.previous, ev.attempt  # type: ignore[assignment]
    elif kind is Kind.TASK_PROGRESS and isinstance(d, Progress):
        p = out.task_progress
        p.task_id, p.queue, p.type = ev.key, ev.queue or "", ev.type or ""
        convert.set_progress(p.progress, d)
    elif kind is Kind.SCHEDULE_FIRE and isinstance(d, FireRecord):
        f = out.schedule_fire
        f.schedule, f.queue, f.type = ev.key, ev.queue or "", ev.type or ""
        f.fire.CopyFrom(schedule_convert.fire_out(d))
    elif kind is Kind.WORKER and isinstance(d, SessionRow):
        out.worker.type = ev.state  # type: ignore[assignment]
        out.worker.worker.CopyFrom(worker_registry.info(d))
    elif kind is Kind.GAP and isinstance(d, GapReason):
        out.gap.reason = int(d)  # type: ignore[assignment]
    return out


def gap(seq: int, at: int, reason: GapReason, first: int, last: int) -> pb.Event:
    """A gap made for one subscriber (the journal's own gaps come through `message`)."""
    out = pb.Event(sequence=seq)
    if at:
        convert.set_timestamp(out.time, at)
    out.gap.reason, out.gap.first_sequence, out.gap.last_sequence = int(reason), first, last  # type: ignore[assignment]
    return out


class Encoded:
    """One event's encodings: the framed protobuf bytes, and JSON text once asked for."""

    __slots__ = ("_head", "framed", "json")

    def __init__(self, body: bytes) -> None:
        """`body` is one serialized `Event`; `framed` adds its field tag and length."""
        self.framed = _frame(body)
        self._head = len(self.framed) - len(body)
        self.json: str | None = None

    def json_text(self) -> str:
        if self.json is None:
            event = pb.Event.FromString(self.framed[self._head :])
            self.json = json_format.MessageToJson(event, indent=None)
        return self.json


def of(event: pb.Event) -> Encoded:
    return Encoded(event.SerializeToString())


def _frame(body: bytes) -> bytes:
    """One serialized `Event` as a `WatchEventsResponse.events` entry: tag, length, body."""
    return _EVENTS_TAG + varint(len(body)) + body


def framed(seq: int, ev: Event) -> bytes:
    """The event's framed protobuf bytes, without keeping an `Encoded` for it."""
    wire = ev.wire
    if wire is not None:
        return wire.framed  # type: ignore[no-any-return]
    if ev.kind is not Kind.TASK_STATE:
        return encoded(seq, ev).framed
    return _frame(task_state_bytes(seq, ev))


class Run:
    """Consecutive journal events as one piece of a response, encoded and joined once.

    Unfiltered subscribers send the same events in the same order, so a run
    of them is shared as one bytes object (event_service.Runs) and a message
    is the join of a few runs rather than of a thousand events. JSON is made
    per event, on first use, as for a lone `Encoded`.
    """

    __slots__ = ("_events", "_first", "framed", "json")

    def __init__(self, first: int, events: list[Event]) -> None:
        self._first = first
        self._events = events
        self.framed = b"".join([framed(seq, ev) for seq, ev in enumerate(events, first)])
        self.json: str | None = None

    def json_text(self) -> str:
        if self.json is None:
            self.json = ",".join(
                encoded(seq, ev).json_text() for seq, ev in enumerate(self._events, self._first)
            )
        return self.json


Piece = Encoded | Run


def encoded(seq: int, ev: Event) -> Encoded:
    """The event's shared encodings, made on first use."""
    wire = ev.wire
    if wire is None:
        fast = ev.kind is Kind.TASK_STATE
        body = task_state_bytes(seq, ev) if fast else message(seq, ev).SerializeToString()
        wire = ev.wire = Encoded(body)
    return wire  # type: ignore[no-any-return]


# Task state changes are most of the events: written field by field, in field
# order, which is byte for byte what SerializeToString gives for `message`
# (tests/unit/test_journal.py checks it), at a fraction of the cost. What
# repeats from event to event is kept as bytes: the queue and type fields
# together, the state/previous/attempt fields together, and the last time.
_names: dict[tuple[str | None, str | None], bytes] = {}
_numbers: dict[tuple[int, int, int], bytes] = {}
_time: tuple[int, bytes] = (0, b"")
_CACHED = 10_000  # queue and type names, states and attempts: few


def _string(tag: bytes, value: str | None) -> bytes:
    if not value:
        return b""
    data = value.encode()
    return tag + varint(len(data)) + data


def _names_field(queue: str | None, type_: str | None) -> bytes:
    key = (queue, type_)
    cached = _names.get(key)
    if cached is None:
        cached = _string(b"\x12", queue) + _string(b"\x1a", type_)
        if len(_names) < _CACHED:
            _names[key] = cached
    return cached


def _numbers_field(state: int, previous: int, attempt: int) -> bytes:
    key = (state, previous, attempt)
    cached = _numbers.get(key)
    if cached is None:
        cached = b"".join(
            (
                b"\x20" + varint(state) if state else b"",
                b"\x28" + varint(previous) if previous else b"",
                b"\x30" + varint(attempt) if attempt else b"",
            )
        )
        if len(_numbers) < _CACHED:
            _numbers[key] = cached
    return cached


def _timestamp(at: int) -> bytes:
    global _time
    if _time[0] == at:
        return _time[1]
    seconds, micros = divmod(at, 1_000_000)
    ts = (b"\x08" + varint(seconds) if seconds else b"") + (
        b"\x10" + varint(micros * 1000) if micros else b""
    )
    field = b"\x12" + varint(len(ts)) + ts
    _time = (at, field)
    return field


def task_state_bytes(seq: int, ev: Event) -> bytes:
    key = ev.key.encode()
    inner = b"".join(
        (
            b"\x0a",
            varint(len(key)),
            key,
            _names_field(ev.queue, ev.type),
            _numbers_field(ev.state, ev.previous, ev.attempt),
        )
    )
    return b"".join(
        (
            b"\x08" + varint(seq) if seq else b"",
            _timestamp(ev.at) if ev.at else b"",
            b"\x1a",
            varint(len(inner)),
            inner,
        )
    )


class Batch:
    """One WatchEventsResponse, kept as its events' encodings until a transport asks.

    `events` holds single events and runs of them (`Piece`s), in order.
    """

    __slots__ = ("events", "sequence", "stream_id")

    def __init__(self, stream_id: str, sequence: int, events: list[Piece]) -> None:
        self.stream_id = stream_id
        self.sequence = sequence
        self.events = events

    def proto(self) -> bytes:
        stream = self.stream_id.encode()
        tail = _STREAM_TAG + varint(len(stream)) + stream
        if self.sequence:
            tail += _SEQUENCE_TAG + varint(self.sequence)
        return b"".join(map(_FRAMED, self.events)) + tail

    def json(self) -> bytes:
        parts = [f'"streamId":"{self.stream_id}"']  # a hex replica id: nothing to escape
        if self.sequence:
            parts.append(f'"sequence":"{self.sequence}"')
        if self.events:
            parts.insert(0, '"events":[' + ",".join(e.json_text() for e in self.events) + "]")
        return ("{" + ",".join(parts) + "}").encode()

    def message(self) -> pb.WatchEventsResponse:
        """The batch as a protobuf message (for tests and the rare generic path)."""
        return pb.WatchEventsResponse.FromString(self.proto())


def serialize(response: Batch | pb.WatchEventsResponse) -> bytes:
    """gRPC's response serializer for WatchEvents."""
    if isinstance(response, Batch):
        return response.proto()
    return response.SerializeToString()
