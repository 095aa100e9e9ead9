"""Broker telemetry: OpenTelemetry metrics and dispatch spans (see docs/observability.md).

This package's own top level stays free of the OpenTelemetry SDK so that loops
can report events cheaply whether or not telemetry is on. The functions below
are the reporting API for code that has no handle on the metrics sink, such as
the schedule ticker: they do nothing until the broker activates a sink
(`broker.telemetry.setup.start`), and cost one attribute check when it has not.
"""

from __future__ import annotations

from typing import Protocol


class Reporter(Protocol):
    def schedule_fired(self, schedule: str, lag_seconds: float) -> None: ...

    def schedule_missed(self, schedule: str, count: int) -> None: ...

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


def schedule_missed(schedule: str, count: int = 1) -> None:
    """`count` runs of a schedule were skipped (broker down past the catch-up window,
    overlap policy, paused...)."""
    if _active is not None and count > 0:
        _active.schedule_missed(schedule, count)


def leases_expired(count: int) -> None:
    """`count` leases ended because their holder sent no heartbeat in time."""
    if _active is not None and count > 0:
        _active.leases_expired(count)
