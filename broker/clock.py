"""Time as the broker sees it, injectable so that scheduling logic can be tested.

The broker stores every instant as integer microseconds since the Unix epoch
(UTC): the same representation on SQLite and PostgreSQL, cheap to index and
compare, and free of time-zone surprises.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from typing import Protocol

MICROS = 1_000_000


class Clock(Protocol):
    def now_us(self) -> int:
        """The current time in microseconds since the epoch."""
        ...


class SystemClock:
    def now_us(self) -> int:
        return time.time_ns() // 1000


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, start_us: int = 1_700_000_000 * MICROS) -> None:
        self._now = start_us

    def now_us(self) -> int:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += round(seconds * MICROS)

    def set(self, now_us: int) -> None:
        self._now = now_us


def to_datetime(us: int) -> datetime:
    return datetime.fromtimestamp(us / MICROS, tz=UTC)


def from_datetime(dt: datetime) -> int:
    if dt.tzinfo is None:
        raise ValueError("naive datetime: pass a time-zone-aware datetime")
    return round(dt.timestamp() * MICROS)


class OffsetClock:
    """The system clock shifted by a fixed span: a broker started "later" than it is.

    Tests set TASKYARD_CLOCK_OFFSET (seconds) to restart a real broker as if
    hours had passed while it was down, without waiting for them.
    """

    def __init__(self, offset_us: int) -> None:
        self._offset = offset_us

    def now_us(self) -> int:
        return time.time_ns() // 1000 + self._offset


def system_clock() -> Clock:
    """The broker's clock: the system's, unless TASKYARD_CLOCK_OFFSET shifts it (for tests)."""
    offset = os.environ.get("TASKYARD_CLOCK_OFFSET")
    if not offset:
        return SystemClock()
    return OffsetClock(round(float(offset) * MICROS))
