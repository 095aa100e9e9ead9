"""The event journal: every change the broker commits, numbered, kept for a window.

Ops record events while their transaction runs (`task`, `progress`, `fire`,
`worker`); the committer `commit`s them once the transaction is durable (or
`discard`s them), which numbers them and appends them to a fixed-size ring.
WatchEvents subscribers read the ring by sequence number: there is no queue
per subscriber, so a slow one costs no memory, it only falls out of the
window (and is told so with a gap). With no subscribers, an event costs one
small object and a list store.

On PostgreSQL the same events travel to the other replicas with the commit's
NOTIFY (`outgoing`, `heard`: see `engine/event_relay.py`), so every replica's
ring holds every replica's events, numbered in the order it heard them.
Sequence numbers belong to one replica and one run of it: `stream_id` names
that numbering (docs/events.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import cast

from broker.clock import Clock
from broker.core.models import Progress
from broker.core.schedules import FireRecord
from broker.core.task_state import TaskState
from broker.engine import event_relay
from broker.engine.event_record import Event, GapReason, Kind, WorkerChange
from broker.store.workers import SessionRow

DEFAULT_WINDOW = 100_000
_TASK = Kind.TASK_STATE


class Closed(Exception):
    """The journal was closed: the broker is shutting down."""


class Journal:
    def __init__(
        self, *, stream_id: str, clock: Clock, window: int = DEFAULT_WINDOW, relay: bool
    ) -> None:
        if window < 1:
            raise ValueError(f"the event window must hold at least 1 event, got {window}")
        self.stream_id = stream_id  # also this replica's name in relay messages
        self._clock = clock
        self.window = window
        self.head = 0  # the sequence number of the newest event; 0 before the first
        # The newest event recorded without its queue (readers look those up): a
        # reader whose range starts after it need not look at each event.
        self.last_unplaced = 0
        self._ring: list[Event | None] = [None] * window
        self._pending: list[Event] = []
        self._relay = relay
        self._relay_sent = 0  # relay messages this replica committed
        self._relay_tentative = 0
        self._heard: dict[str, int] = {}  # replica → the last relay message number heard
        self._waiters: list[asyncio.Future[None]] = []
        self.closed = False
        self.subscribers = 0

    # --- Recording, inside a transaction ----------------------------------------------------

    def task(
        self,
        task_id: str,
        queue: str,
        type_: str,
        state: TaskState,
        previous: TaskState | None,
        attempt: int,
        facts: tuple[str | None, str | None] | None = None,
    ) -> None:
        # TaskState is an IntEnum: stored as is (int() would cost more than the rest).
        self._pending.append(
            Event(_TASK, task_id, queue, type_, state, previous or 0, attempt, None, facts)
        )

    def progress(self, task_id: str, queue: str | None, type_: str | None, p: Progress) -> None:
        self._pending.append(Event(Kind.TASK_PROGRESS, task_id, queue, type_, detail=p))

    def fire(self, schedule: str, record: FireRecord, queue: str, type_: str) -> None:
        self._pending.append(Event(Kind.SCHEDULE_FIRE, schedule, queue, type_, detail=record))

    def worker(self, change: WorkerChange, row: SessionRow) -> None:
        event = Event(Kind.WORKER, row.session_id, None, None, int(change), detail=row)
        self._pending.append(event)

    # --- The transaction's end ---------------------------------------------------------------

    def outgoing(self, now: int) -> list[str]:
        """NOTIFY payloads carrying this transaction's events to the other replicas."""
        if not (self._relay and self._pending):
            return []
        payloads = event_relay.encode(self.stream_id, self._relay_sent + 1, now, self._pending)
        self._relay_tentative = len(payloads)
        return payloads

    def commit(self, now: int) -> None:
        """The transaction is durable: number its events and make them visible."""
        pending, self._pending = self._pending, []
        self._relay_sent += self._relay_tentative
        self._relay_tentative = 0
        if pending:
            self._append(pending, now)

    def discard(self) -> None:
        self._pending.clear()
        self._relay_tentative = 0

    # --- Other replicas ------------------------------------------------------------------------

    def heard(self, payload: str) -> list[Event]:
        """A relay NOTIFY: append its events (a gap first if messages went missing)."""
        message = event_relay.decode(payload)
        if message is None or message.replica == self.stream_id:
            return []
        last = self._heard.get(message.replica)
        self._heard[message.replica] = message.number
        if last is not None and message.number != last + 1:
            self.link_lost()
        self._append(message.events, message.at)
        return message.events

    def link_lost(self) -> None:
        """Notices from other replicas may have been missed: say so, in place."""
        gap = Event(Kind.GAP, "", None, None, detail=GapReason.REPLICA_LINK)
        self._append([gap], self._clock.now_us())

    def _append(self, events: Sequence[Event], at: int) -> None:
        ring, window, seq = self._ring, self.window, self.head
        for event in events:
            seq += 1
            event.at = at
            ring[seq % window] = event
            if event.queue is None:
                self.last_unplaced = seq
        self.head = seq
        if self._waiters:
            self._wake()

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    # --- Reading -------------------------------------------------------------------------------

    @property
    def oldest(self) -> int:
        """The oldest sequence number still held (head + 1 when none is)."""
        return max(1, self.head - self.window + 1)

    def get(self, seq: int) -> Event | None:
        """The event with this sequence number, or None once it left the window."""
        if seq < self.oldest or seq > self.head:
            return None
        return self._ring[seq % self.window]

    def read(self, first: int, last: int) -> list[Event]:
        """Events `first`..`last` (inclusive), all within the window: two list slices at most."""
        if first > last:
            return []
        assert self.oldest <= first and last <= self.head
        window, ring = self.window, self._ring
        start, end = first % window, last % window + 1
        # Every slot within the window holds an event.
        return cast(list[Event], ring[start:end] if start < end else ring[start:] + ring[:end])

    async def wait(self, after: int, timeout: float) -> None:
        """Until an event after `after` exists, `timeout` passes, or the journal closes."""
        if self.closed:
            raise Closed
        if self.head > after:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout):
                await waiter
        except TimeoutError:
            pass
        if self.closed:
            raise Closed

    def close(self) -> None:
        """Shutting down: every reader's `wait` raises Closed."""
        self.closed = True
        self._wake()
