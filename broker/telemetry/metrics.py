"""The broker's metrics: what the ledger reports after each commit, as OpenTelemetry instruments.

`record` runs in the committer after every commit, so it must stay cheap: task
counters are summed into plain dicts and read by observable counters when a
reader collects (a scrape or an OTLP export), and only durations go through
the SDK one by one. Gauges are read at collection time too: queue depths from
the `queue_count` table (exact, kept by the ledger in every transaction) and
leases and sessions from this broker's memory.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Protocol

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from broker.core.task_state import WAITING, TaskState
from broker.engine.metrics import EventName, MetricEvent
from broker.telemetry.labels import AllNames

# Seconds: 1 ms to 1 h. Covers a no-op handler's run time and a long backlog's wait.
DURATION_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
)  # fmt: skip

TASK_COUNTERS: dict[EventName, tuple[str, str]] = {
    "submitted": ("taskyard.tasks.submitted", "Tasks accepted (deduplicated repeats excluded)."),
    "started": ("taskyard.tasks.started", "Attempts started: tasks leased to a worker."),
    "succeeded": ("taskyard.tasks.succeeded", "Tasks that ended with a result."),
    "failed": ("taskyard.tasks.failed", "Tasks that ended failed or dead (no more retries)."),
    "retried": ("taskyard.tasks.retried", "Failed or timed-out attempts scheduled to run again."),
    "expired": ("taskyard.tasks.expired", "Waiting tasks that passed their expiry unrun."),
    "cancelled": ("taskyard.tasks.cancelled", "Tasks cancelled, waiting or running."),
    "lost": ("taskyard.leases.lost", "Leases lost: no heartbeat in time or worker gone."),
}

QueueCounts = Callable[[], Mapping[tuple[str, int], int]]
"""Reads {(queue, TaskState value): tasks} for every queue; may raise when unavailable."""


class Labels(Protocol):
    """The label a queue or task type is counted under (telemetry/labels.py)."""

    def queue(self, name: str) -> str: ...

    def type(self, name: str) -> str: ...


class BrokerMetrics:
    """A `MetricsSink` for the committer plus the broker's gauges and schedule counters.

    Args:
        meter: Where the instruments live (the broker's MeterProvider).
        queue_counts: Reads the per-queue state counts, for the depth gauges.
        leases_in_flight: Leases this broker has out to its connected workers.
        sessions: Worker sessions connected to this broker.
        labels: Which queue and type names are labels of their own; by default all.
        storage: Why the database refuses writes now (`STORAGE_FULL`, …), or None.
    """

    def __init__(
        self,
        meter: Meter,
        *,
        queue_counts: QueueCounts | None = None,
        leases_in_flight: Callable[[], int] | None = None,
        sessions: Callable[[], int] | None = None,
        labels: Labels | None = None,
        storage: Callable[[], str | None] | None = None,
    ) -> None:
        # Names become labels when recorded: a counter's series never shrinks
        # when a name becomes known later (its count so far stays in _other).
        self._labels = labels or AllNames()
        self._totals: dict[EventName, dict[tuple[str, str], int]] = {n: {} for n in TASK_COUNTERS}
        self._attrs: dict[tuple[str, str], dict[str, str]] = {}
        self._expired_leases = 0
        self._storage_refusals: dict[str, int] = {}
        self._queue_counts = _Cached(queue_counts) if queue_counts else None
        for name, (metric, description) in TASK_COUNTERS.items():
            meter.create_observable_counter(
                metric, [self._observe_total(name)], unit="{task}", description=description
            )
        meter.create_observable_counter(
            "taskyard.leases.expired",
            [lambda _: [Observation(self._expired_leases)]],
            unit="{lease}",
            description="Leases taken back because no heartbeat came within the timeout.",
        )
        meter.create_observable_counter(
            "taskyard.storage.refusals",
            [self._observe_refusals],
            unit="{write}",
            description="Writes the database refused: full, read-only, out of connections.",
        )
        if storage is not None:
            meter.create_observable_gauge(
                "taskyard.storage.refusing",
                [lambda _: [Observation(1, {"reason": r}) for r in [storage()] if r]],
                unit="{condition}",
                description="1, with the reason, while the database refuses this broker's "
                "writes (health says NOT_SERVING meanwhile).",
            )
        self._run_time = meter.create_histogram(
            "taskyard.task.run_time",
            unit="s",
            description="Attempt run time, from lease to outcome (lost leases excluded).",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self._queue_wait = meter.create_histogram(
            "taskyard.task.queue_wait",
            unit="s",
            description="Time from becoming due (run time) to being leased, per attempt.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self._schedule_lag = meter.create_histogram(
            "taskyard.schedule.lag",
            unit="s",
            description="How late each schedule run started after its nominal time.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self._schedule_fires = meter.create_counter(
            "taskyard.schedule.fires", unit="{run}", description="Schedule runs started."
        )
        self._schedule_misses = meter.create_counter(
            "taskyard.schedule.misses", unit="{run}", description="Schedule runs skipped."
        )
        if self._queue_counts is not None:
            meter.create_observable_gauge(
                "taskyard.queue.depth",
                [self._observe_depth],
                unit="{task}",
                description="Tasks waiting in a queue, by state (scheduled, pending, retrying).",
            )
            meter.create_observable_gauge(
                "taskyard.queue.running",
                [self._observe_running],
                unit="{task}",
                description="Tasks running (leased), across every broker replica.",
            )
        if leases_in_flight is not None:
            meter.create_observable_gauge(
                "taskyard.leases.in_flight",
                [lambda _: [Observation(leases_in_flight())]],
                unit="{lease}",
                description="Leases held by workers connected to this broker.",
            )
        if sessions is not None:
            meter.create_observable_gauge(
                "taskyard.workers.connected",
                [lambda _: [Observation(sessions())]],
                unit="{worker}",
                description="Worker sessions (Lease streams) open on this broker.",
            )

    # --- MetricsSink ------------------------------------------------------------------------

    def record(self, events: Sequence[MetricEvent]) -> None:
        labels = self._labels
        for e in events:
            key = (labels.queue(e.queue), labels.type(e.type))
            totals = self._totals[e.name]
            totals[key] = totals.get(key, 0) + e.count
            if e.seconds is not None:
                histogram = self._queue_wait if e.name == "started" else self._run_time
                histogram.record(e.seconds, self._attributes(key))

    # --- Schedules and expiries (the rest of MetricsSink) ------------------------------------

    def schedule_fired(self, schedule: str, lag_seconds: float) -> None:
        attributes = {"schedule": schedule}
        self._schedule_fires.add(1, attributes)
        self._schedule_lag.record(max(lag_seconds, 0.0), attributes)

    def schedule_missed(self, schedule: str, count: int, reason: str) -> None:
        if count <= 0:
            return
        self._schedule_misses.add(count, {"schedule": schedule, "reason": reason})

    def leases_expired(self, count: int) -> None:
        if count > 0:
            self._expired_leases += count

    def storage_refused(self, reason: str) -> None:
        self._storage_refusals[reason] = self._storage_refusals.get(reason, 0) + 1

    # --- Collection (runs on the reader's thread) -------------------------------------------

    def _attributes(self, key: tuple[str, str]) -> dict[str, str]:
        attributes = self._attrs.get(key)
        if attributes is None:
            attributes = self._attrs[key] = {"queue": key[0], "type": key[1]}
        return attributes

    def _observe_total(self, name: EventName) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(_: CallbackOptions) -> Iterable[Observation]:
            # dict() copies atomically under the GIL while the loop may add keys.
            totals = dict(self._totals[name])
            return [Observation(n, self._attributes(key)) for key, n in totals.items()]

        return observe

    def _observe_refusals(self, _: CallbackOptions) -> Iterable[Observation]:
        counts = dict(self._storage_refusals)
        return [Observation(n, {"reason": reason}) for reason, n in counts.items()]

    def _by_label(self, states: Collection[int]) -> dict[tuple[str, int], int]:
        """The queue counts in these states, with unknown queues summed under _other."""
        assert self._queue_counts is not None
        summed: dict[tuple[str, int], int] = {}
        for (queue, state), n in self._queue_counts.get().items():
            if state in states:
                key = (self._labels.queue(queue), state)
                summed[key] = summed.get(key, 0) + n
        return summed

    def _observe_depth(self, _: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(n, {"queue": queue, "state": TaskState(state).name.lower()})
            for (queue, state), n in self._by_label(WAITING).items()
        ]

    def _observe_running(self, _: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(n, {"queue": queue})
            for (queue, _state), n in self._by_label({TaskState.RUNNING}).items()
        ]


class _Cached:
    """One read of the counts serves every gauge of one collection."""

    def __init__(self, read: QueueCounts, max_age_s: float = 0.5) -> None:
        self._read = read
        self._max_age_s = max_age_s
        self._lock = threading.Lock()
        self._at = -1e9
        self._value: Mapping[tuple[str, int], int] = {}

    def get(self) -> Mapping[tuple[str, int], int]:
        with self._lock:
            now = time.monotonic()
            if now - self._at > self._max_age_s:
                self._value = self._read()
                self._at = now
            return self._value
