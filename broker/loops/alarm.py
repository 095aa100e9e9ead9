"""The time a sleeping loop should look next, and the bell others ring to bring it forward.

The promoter and the ticker each sleep until the earliest time they know of
(`next`, read from the database) or their poll interval. Whoever writes an
earlier time on this replica — an op after its commit (a delayed task, a
retry), a schedule saved through the API or the schedules file — calls
`due_at(t)`, which wakes the loop only when `t` is earlier than what it knows.

The alarm is made first and handed to both sides (to the sleeper, and to the
engine as its `DueSink` or to the servicers as the schedule hint), so nothing
is wired up after construction. It outlives a restart of its loop, so a hint
given while the loop was down is not lost.
"""

from __future__ import annotations

import asyncio
import contextlib

from broker.clock import MICROS


class Alarm:
    def __init__(self) -> None:
        self.next: int | None = None  # the earliest time the sleeper knows of
        self._hint: int | None = None  # an earlier one rung since, not yet folded in
        self._bell = asyncio.Event()

    def due_at(self, at: int | None) -> None:
        """Something is due at `at` (µs); None: nothing new."""
        if at is None:
            return
        if self._hint is None or at < self._hint:
            self._hint = at
        if self.next is None or at < self.next:
            self._bell.set()

    def reading(self) -> None:
        """The sleeper starts re-reading `next`: hints from now on are folded in after it."""
        self._hint = None

    def read(self, at: int | None) -> None:
        """The re-read found `at`; a time written during the read is not forgotten."""
        self.next = at
        self._fold()

    async def sleep(self, now: int, poll_us: int) -> bool:
        """Sleep until `next` (at most `poll_us`); True if the bell rang (and was folded in)."""
        wait_us = poll_us if self.next is None else min(poll_us, self.next - now)
        self._bell.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._bell.wait(), max(wait_us, 0) / MICROS)
        if not self._bell.is_set():
            return False
        self._fold()
        return True

    def _fold(self) -> None:
        hint, self._hint = self._hint, None
        if hint is not None and (self.next is None or hint < self.next):
            self.next = hint
