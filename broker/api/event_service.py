"""EventService.WatchEvents: the journal (engine/journal.py), filtered, in batches.

A subscription is a read position in the journal's ring, nothing more. It
sleeps until the journal grows, reads what is new (at most `MAX_EVENTS` per
message), looks up owner and labels when its filter needs them, and yields
one batch. Messages go out at most every `PACE_S` unless a full one is
waiting, so that a busy broker sends a few large messages rather than one
per commit (gRPC's cost is mostly per message). A position that left
the window becomes a gap; the broker's shutdown ends the stream with
UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable
from operator import attrgetter
from typing import Any

from broker.api import event_filter, event_wire
from broker.api.event_filter import EventFilter
from broker.api.event_wire import Batch, Piece, Run
from broker.api.runtime import Runtime
from broker.api.status import maps_errors
from broker.engine.event_record import Event, GapReason, Kind
from broker.engine.journal import Closed, Journal
from broker.errors import InvalidArgument, ShuttingDown
from broker.store import tasks
from taskyard.v1 import event_service_pb2, event_service_pb2_grpc

Context = Any  # grpc.aio.ServicerContext
MAX_EVENTS = 1000
PACE_S = 0.05
HEARTBEAT_S = 15.0
_TASK_KINDS = (Kind.TASK_STATE, Kind.TASK_PROGRESS)
_WIRE = attrgetter("wire")


class Runs:
    """Runs of `RUN` events, aligned on sequence numbers, shared by unfiltered subscribers.

    Ten subscribers reading everything would otherwise each gather and join
    the same thousand encodings per message. The newest `KEEP` runs are kept;
    a subscriber far behind builds its runs again (what every reader paid before).
    """

    RUN = 64
    KEEP = 256

    def __init__(self) -> None:
        self._runs: dict[int, Run] = {}

    def pieces(self, events: list[Event], start: int) -> list[Piece]:
        """`events` (sequence numbers from `start`) as single events and whole runs."""
        n, size = len(events), self.RUN
        head = min(n, -start % size)  # events before the first run boundary
        whole = head + (n - head) // size * size
        out = _singles(events[:head], start)
        runs = self._runs
        for i in range(head, whole, size):
            number = (start + i) // size
            run = runs.get(number)
            if run is None:
                run = runs[number] = Run(start + i, events[i : i + size])
                if len(runs) > self.KEEP:
                    del runs[next(iter(runs))]
            out.append(run)
        if whole < n:
            out += _singles(events[whole:], start + whole)
        return out


def _singles(events: list[Event], start: int) -> list[Piece]:
    """The events' shared encodings: one attribute read per event once they exist."""
    wires: list[Piece] = list(map(_WIRE, events))
    if None in wires:
        for i, wire in enumerate(wires):
            if wire is None:
                wires[i] = event_wire.encoded(start + i, events[i])
    return wires


class EventService(event_service_pb2_grpc.EventServiceServicer):
    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime
        self._runs = Runs()

    @maps_errors
    async def WatchEvents(  # type: ignore[override]
        self, request: event_service_pb2.WatchEventsRequest, context: Context
    ) -> AsyncIterator[Batch]:
        if self._rt.shutting_down:
            raise ShuttingDown()
        rules = event_filter.from_request(request, self._rt.settings.limits)
        journal = self._rt.journal
        journal.subscribers += 1
        try:
            subscription = Subscription(journal, rules, self._rt, self._runs)
            yield subscription.start(request)
            async for batch in subscription.batches():
                yield batch
        finally:
            journal.subscribers -= 1


class Subscription:
    def __init__(
        self, journal: Journal, rules: EventFilter, rt: Runtime, runs: Runs | None = None
    ) -> None:
        self._journal = journal
        self._rules = rules
        self._rt = rt
        self._runs = runs if runs is not None else Runs()
        self.position = journal.head  # every event up to here has been considered

    def start(self, request: event_service_pb2.WatchEventsRequest) -> Batch:
        """The first message: where the stream starts, with a gap if the resume point is lost."""
        j = self._journal
        after, stream = request.after_sequence, request.stream_id
        if after < 0:
            raise InvalidArgument(f"after_sequence must be >= 0, got {after}")
        if after and not stream:
            raise InvalidArgument("after_sequence needs the stream_id it belongs to")
        first: list[Piece] = []
        if stream and stream != j.stream_id:
            first.append(self._gap(GapReason.UNKNOWN_STREAM, 0, 0))
        elif stream:
            if after > j.head:
                raise InvalidArgument(
                    f"after_sequence {after} is beyond this stream's newest event {j.head}"
                )
            self.position = after
            if after + 1 < j.oldest:
                self.position = j.oldest - 1
                first.append(self._gap(GapReason.EXPIRED, after + 1, self.position))
        return Batch(j.stream_id, self.position, first)

    async def batches(self) -> AsyncIterator[Batch]:
        j = self._journal
        sent = time.monotonic()
        while True:
            try:
                await j.wait(self.position, HEARTBEAT_S)
            except Closed:
                raise ShuttingDown() from None
            if j.head <= self.position:
                yield Batch(j.stream_id, self.position, [])  # a heartbeat
                sent = time.monotonic()
                continue
            # A busy journal is read in bigger bites rather than once per commit,
            # unless a full message is waiting already.
            delay = sent + PACE_S - time.monotonic()
            if delay > 0 and j.head - self.position < MAX_EVENTS:
                await asyncio.sleep(delay)
            batch = await self._read()
            if batch.events or time.monotonic() - sent >= HEARTBEAT_S:
                yield batch
                sent = time.monotonic()

    async def _read(self) -> Batch:
        j, rules = self._journal, self._rules
        out: list[Piece] = []
        if self.position + 1 < j.oldest:
            # Fell out of the window: what it missed is gone.
            first, self.position = self.position + 1, j.oldest - 1
            out.append(self._gap(GapReason.SLOW_SUBSCRIBER, first, self.position))
        start, end = self.position + 1, min(j.head, self.position + MAX_EVENTS)
        events = j.read(start, end)
        self.position = end
        if rules.needs_facts or (
            j.last_unplaced >= start and any(ev.queue is None for ev in events)
        ):
            await self._complete(events)
        if rules.everything:
            out += self._runs.pieces(events, start)
        else:
            encode, matches = event_wire.encoded, rules.matches
            out += [
                ev.wire or encode(seq, ev) for seq, ev in enumerate(events, start) if matches(ev)
            ]
        return Batch(j.stream_id, self.position, out)

    async def _complete(self, events: Iterable[Event]) -> None:
        """Look up what events were recorded without and this subscriber needs."""
        needs_facts = self._rules.needs_facts
        missing: dict[str, list[Event]] = {}
        for ev in events:
            if ev.kind in _TASK_KINDS and (ev.queue is None or (needs_facts and ev.facts is None)):
                missing.setdefault(ev.key, []).append(ev)
        if not missing:
            return
        async with self._rt.db.reader.connect() as conn:
            found = await tasks.task_facts(conn, missing.keys())
        for task_id, same in missing.items():
            facts = found.get(task_id)
            for ev in same:
                if facts is None:
                    ev.facts = (None, None)  # gone: no restricted subscriber sees it
                    continue
                ev.facts = (facts.owner, facts.labels)
                ev.queue, ev.type = facts.queue, facts.type

    def _gap(self, reason: GapReason, first: int, last: int) -> Piece:
        seq = last or self.position
        return event_wire.of(event_wire.gap(seq, self._rt.clock.now_us(), reason, first, last))
