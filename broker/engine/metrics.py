"""What the write path reports for metrics, and the sink it reports to.

The engine knows only this protocol: `broker/telemetry/metrics.py` implements
it with OpenTelemetry instruments, and `NoMetrics` stands in when no exporter
is configured. So the engine never imports telemetry (which reads the
dispatcher's gauges, and so sits above it), and reporting costs one method
call on a no-op when metrics are off. Reports are made after a commit, never
for a transaction that may still fail.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Literal, Protocol

EventName = Literal[
    "submitted", "started", "succeeded", "failed", "retried", "expired", "cancelled", "lost"
]


@dataclass(frozen=True, slots=True)
class MetricEvent:
    """One thing that happened to tasks, for metrics: `count` of them, or one duration."""

    name: EventName
    queue: str
    type: str
    count: int = 1
    seconds: float | None = None  # run time (ended) or queue wait (started)


class MetricsSink(Protocol):
    def record(self, events: Sequence[MetricEvent]) -> None:
        """A commit's task events (the ledger hands them over after the commit)."""

    def schedule_fired(self, schedule: str, lag_seconds: float) -> None:
        """A schedule started a run `lag_seconds` after its nominal time (0 or more)."""

    def schedule_missed(self, schedule: str, count: int, reason: str) -> None:
        """`count` runs of a schedule did not happen.

        `reason`: "missed" (not fired in time, e.g. the broker was down past the
        catch-up window), "skipped" (the overlap policy, max_instances included) or
        "failed" (no task could be created).
        """

    def leases_expired(self, count: int) -> None:
        """`count` leases ended because their holder sent no heartbeat in time."""

    def storage_refused(self, reason: str) -> None:
        """A write failed for a storage condition (`STORAGE_FULL`, …; store/failures.py)."""


class NoMetrics:
    def record(self, events: Sequence[MetricEvent]) -> None:
        return None

    def schedule_fired(self, schedule: str, lag_seconds: float) -> None:
        return None

    def schedule_missed(self, schedule: str, count: int, reason: str) -> None:
        return None

    def leases_expired(self, count: int) -> None:
        return None

    def storage_refused(self, reason: str) -> None:
        return None


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


def fires_committed(sink: MetricsSink, schedule: str, records: Iterable[FireOutcome]) -> None:
    """A schedule's fire records were committed: count its runs, started or not."""
    for r in records:
        outcome = r.result.name
        if outcome == "STARTED":
            sink.schedule_fired(schedule, (r.recorded_at - r.fire_time) / 1e6)
        elif outcome in ("SKIPPED", "MISSED", "FAILED") and r.count > 0:
            sink.schedule_missed(schedule, r.count, outcome.lower())
