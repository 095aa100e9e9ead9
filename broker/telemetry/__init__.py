"""Broker telemetry: OpenTelemetry metrics and dispatch spans (see docs/observability.md).

This package's own top level stays free of the OpenTelemetry SDK so that loops
can report events cheaply whether or not telemetry is on. The functions below
are the reporting API for code that has no handle on the metrics sink, such as
the schedule ticker: they do nothing until the broker activates a sink
(`broker.telemetry.setup.start`), and cost one attribute check when it has not.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum
from typing import Protocol


class Reporter(Protocol):
    def schedule_fired(self, schedule: str, lag_seconds: float) -> None: ...

    def schedule_missed(self, schedule: str, count: int, reason: str) -> None: ...

    def leases_expired(self, count: int) -> None: ...


_active: Reporter | None = None


def activate(reporter: Reporter | None) -> None:
    """Route the functions below to `reporter` (None: back to doing nothing)."""
    global _active
    _active = reporter


def schedule_fired(schedule: str, lag_seconds: float) -> None:
    """A schedule started a run `lag_seconds` after its nominal time (0 or more)."""
    if _active is not None:
        _active.schedule_fired(schedule, lag_seconds)


def schedule_missed(schedule: str, count: int = 1, reason: str = "missed") -> None:
    """`count` runs of a schedule did not happen.

    `reason`: "missed" (not fired in time, e.g. the broker was down past the
    catch-up window), "skipped" (overlap policy) or "failed" (no task could be
    created).
    """
    if _active is not None and count > 0:
        _active.schedule_missed(schedule, count, reason)


class FireOutcome(Protocol):
    """What `fires_committed` reads of a fire record (broker.core.schedules.FireRecord)."""

    @property
    def fire_time(self) -> int: ...  # nominal, µs
    @property
    def recorded_at(self) -> int: ...  # µs
    @property
    def result(self) -> Enum: ...  # FireResult: STARTED, SKIPPED, MISSED, BUFFERED, FAILED
    @property
    def count(self) -> int: ...


def fires_committed(schedule: str, records: Iterable[FireOutcome]) -> None:
    """A schedule's fire records were committed: count its runs, started or not."""
    if _active is None:
        return
    for r in records:
        outcome = r.result.name
        if outcome == "STARTED":
            schedule_fired(schedule, (r.recorded_at - r.fire_time) / 1e6)
        elif outcome in ("SKIPPED", "MISSED", "FAILED"):
            schedule_missed(schedule, r.count, outcome.lower())


def leases_expired(count: int) -> None:
    """`count` leases ended because their holder sent no heartbeat in time."""
    if _active is not None and count > 0:
        _active.leases_expired(count)
