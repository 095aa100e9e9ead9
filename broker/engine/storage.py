"""Whether the database refuses this broker's writes right now, and why.

The committer reports each write that failed for a storage condition (a full
disk, a read-only database, no connection to be had: store/failures.py) and
each commit that succeeded. The condition holds while writes keep failing: it
ends when a commit with ops of a kind that failed goes through (space was
freed; for a read-only or unreachable database, any commit), or WINDOW_US after
the last failure (nothing tried since). No restart
is needed either way. Health reports NOT_SERVING and a gauge reports the reason
while it holds (server.py, telemetry/metrics.py).

Why not "the last commit failed": with a full disk, commits that only update
rows in place (the reaper's tick, heartbeats) still succeed while every
submission fails; that signal would flap every second.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from broker.clock import Clock

log = logging.getLogger(__name__)

WINDOW_US = 10_000_000
FULL = "STORAGE_FULL"


class StorageHealth:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._reason: str | None = None
        self._failed_at = 0
        self._failing: set[str] = set()  # op kinds that failed while the condition holds
        # Set whenever the condition may have started or ended; the health watcher waits on it.
        self.changed = asyncio.Event()

    def refused(self, reason: str, kinds: Iterable[str]) -> None:
        """Writes of these op kinds failed for a storage condition (`reason`)."""
        if self.problem() != reason:
            log.warning("the database refuses writes: %s", reason)
            self._failing.clear()
        self._reason = reason
        self._failed_at = self._clock.now_us()
        self._failing.update(kinds)
        self.changed.set()

    def committed(self, kinds: Iterable[str]) -> None:
        """A commit with ops of these kinds succeeded.

        A read-only or unreachable database takes no write at all, so any commit ends
        those conditions; a full one may still take writes that need no new space.
        """
        if self._reason is None:
            return
        if self._reason != FULL or not self._failing.isdisjoint(kinds):
            log.info("the database takes writes again (was %s)", self._reason)
            self._reason = None
            self._failing.clear()
            self.changed.set()

    def problem(self) -> str | None:
        """The reason writes are refused now, or None. Reads only: any thread may ask."""
        reason, failed_at = self._reason, self._failed_at
        if reason is None or self._clock.now_us() - failed_at >= WINDOW_US:
            return None
        return reason

    def seconds_left(self) -> float:
        """How long the condition holds unless writes fail again (0 when it does not)."""
        if self.problem() is None:
            return 0.0
        return (WINDOW_US - (self._clock.now_us() - self._failed_at)) / 1_000_000
