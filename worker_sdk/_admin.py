"""Queues, statistics and workers, as the clients see them: requests and result types."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from google.protobuf import duration_pb2

from taskyard.v1 import (
    queue_pb2,
    queue_service_pb2,
    stats_service_pb2,
    system_service_pb2,
    worker_service_pb2,
)
from worker_sdk._types import RetryPolicy, Seconds, TaskState, Timeouts, _secs, _time


def _seconds(d: duration_pb2.Duration) -> float:
    return float(d.ToTimedelta().total_seconds())


def _duration(value: Seconds) -> duration_pb2.Duration:
    out = duration_pb2.Duration()
    out.FromMicroseconds(round((_secs(value) or 0.0) * 1_000_000))
    return out


@dataclass(frozen=True, slots=True)
class Queue:
    """A queue's settings (see ``taskyard.v1.Queue``); None means no limit."""

    name: str
    paused: bool
    pause_note: str
    max_concurrency: int | None
    rate_limit: tuple[int, float] | None  # (starts, per seconds)
    concurrency_key_limit: int | None
    max_depth: int | None
    retry_policy: RetryPolicy | None
    timeouts: Timeouts | None
    retention: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_proto(cls, q: queue_pb2.Queue) -> Queue:
        retention = {
            name: _seconds(getattr(q.retention, name))
            for name in ("succeeded", "failed", "cancelled")
            if q.retention.HasField(name)
        }
        return cls(
            name=q.name,
            paused=q.paused,
            pause_note=q.pause_note,
            max_concurrency=q.max_concurrency or None,
            rate_limit=(q.rate_limit.limit, _seconds(q.rate_limit.interval))
            if q.HasField("rate_limit")
            else None,
            concurrency_key_limit=q.concurrency_key_limit or None,
            max_depth=q.max_depth or None,
            retry_policy=RetryPolicy.from_proto(q.retry_policy)
            if q.HasField("retry_policy")
            else None,
            timeouts=Timeouts.from_proto(q.timeouts) if q.HasField("timeouts") else None,
            retention=retention,
        )


_SETTABLE = {
    "max_concurrency", "rate_limit", "concurrency_key_limit", "max_depth", "retry_policy",
    "timeouts", "retention",
}  # fmt: skip


def queue_message(name: str, settings: Mapping[str, Any]) -> tuple[queue_pb2.Queue, list[str]]:
    """A Queue message and the field mask for the given settings."""
    unknown = set(settings) - _SETTABLE
    if unknown:
        raise TypeError(f"unknown queue settings {sorted(unknown)}; use {sorted(_SETTABLE)}")
    q = queue_pb2.Queue(name=name)
    for key in ("max_concurrency", "concurrency_key_limit", "max_depth"):
        if key in settings:
            setattr(q, key, settings[key] or 0)
    if settings.get("rate_limit") is not None:
        limit, per = settings["rate_limit"]
        q.rate_limit.limit = limit
        q.rate_limit.interval.CopyFrom(_duration(per))
    if settings.get("retry_policy") is not None:
        q.retry_policy.CopyFrom(settings["retry_policy"].to_proto())
    if settings.get("timeouts") is not None:
        q.timeouts.CopyFrom(settings["timeouts"].to_proto())
    for key, value in (settings.get("retention") or {}).items():
        getattr(q.retention, key).CopyFrom(_duration(value))
    return q, sorted(settings)


@dataclass(frozen=True, slots=True)
class QueueStats:
    """A queue's live state (see ``taskyard.v1.QueueStats``)."""

    queue: str
    counts: dict[TaskState, int]
    running: int
    oldest_pending_age: float | None
    finished_last_minute: int
    finished_last_hour: int
    paused: bool

    @classmethod
    def from_proto(cls, s: stats_service_pb2.QueueStats) -> QueueStats:
        return cls(
            queue=s.queue,
            counts={TaskState.from_proto(c.state): c.count for c in s.counts},
            running=s.running,
            oldest_pending_age=_seconds(s.oldest_pending_age)
            if s.HasField("oldest_pending_age")
            else None,
            finished_last_minute=s.finished_last_minute,
            finished_last_hour=s.finished_last_hour,
            paused=s.paused,
        )


@dataclass(frozen=True, slots=True)
class Distribution:
    """Durations in seconds: count, mean and percentiles."""

    count: int
    mean: float
    p50: float
    p95: float
    p99: float

    @classmethod
    def from_proto(cls, d: stats_service_pb2.Distribution) -> Distribution:
        return cls(d.count, _seconds(d.mean), _seconds(d.p50), _seconds(d.p95), _seconds(d.p99))


@dataclass(frozen=True, slots=True)
class TaskStats:
    """What tasks of one queue and type (or all, with empty names) did in a range."""

    queue: str
    type: str
    submitted: int
    started: int
    succeeded: int
    failed: int
    cancelled: int
    expired: int
    retried: int
    lease_losses: int
    success_rate: float
    run_time: Distribution
    wait_time: Distribution
    finished_per_minute: list[int]
    finished_per_hour: list[int]

    @classmethod
    def from_proto(cls, s: stats_service_pb2.TaskStats) -> TaskStats:
        return cls(
            queue=s.queue,
            type=s.type,
            submitted=s.submitted,
            started=s.started,
            succeeded=s.succeeded,
            failed=s.failed,
            cancelled=s.cancelled,
            expired=s.expired,
            retried=s.retried,
            lease_losses=s.lease_losses,
            success_rate=s.success_rate,
            run_time=Distribution.from_proto(s.run_time),
            wait_time=Distribution.from_proto(s.wait_time),
            finished_per_minute=list(s.finished_per_minute),
            finished_per_hour=list(s.finished_per_hour),
        )


def task_stats_request(
    start: datetime | None, end: datetime | None, queue: str | None, type: str | None
) -> stats_service_pb2.GetTaskStatsRequest:
    request = stats_service_pb2.GetTaskStatsRequest(queue=queue or "", type=type or "")
    if start is not None:
        request.start_time.FromDatetime(start)
    if end is not None:
        request.end_time.FromDatetime(end)
    return request


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """One connected worker session (see ``taskyard.v1.WorkerInfo``)."""

    worker_id: str
    session_id: str
    address: str
    sdk: str
    task_types: list[str]
    queues: list[str]
    credits: int
    leases_in_flight: int
    connect_time: datetime | None
    last_seen_time: datetime | None
    draining: bool
    replica_id: str

    @classmethod
    def from_proto(cls, w: worker_service_pb2.WorkerInfo) -> WorkerInfo:
        return cls(
            worker_id=w.worker_id,
            session_id=w.session_id,
            address=w.address,
            sdk=w.sdk,
            task_types=list(w.task_types),
            queues=list(w.queues),
            credits=w.credits,
            leases_in_flight=w.leases_in_flight,
            connect_time=_time(w, "connect_time"),
            last_seen_time=_time(w, "last_seen_time"),
            draining=w.draining,
            replica_id=w.replica_id,
        )


@dataclass(frozen=True, slots=True)
class Caller:
    """Who the broker takes the client to be (see ``taskyard.v1.Caller``).

    ``methods`` are what the roles allow, as ``taskyard.v1.<Service>/<Method>``; the broker
    still decides each call (queue limits, task ownership).
    """

    name: str
    authenticated: bool
    roles: list[str]
    queue_limited: bool
    queues: list[str]
    methods: list[str]
    own_task_methods: list[str]

    @classmethod
    def from_proto(cls, c: system_service_pb2.Caller) -> Caller:
        return cls(
            name=c.name,
            authenticated=c.authenticated,
            roles=list(c.roles),
            queue_limited=c.queue_limited,
            queues=list(c.queues),
            methods=list(c.methods),
            own_task_methods=list(c.own_task_methods),
        )

    def may(self, method: str) -> bool:
        """Whether the roles allow ``method`` (``"TaskService/CancelTask"`` or a full name)."""
        return method in self.methods or f"taskyard.v1.{method}" in self.methods


QS = queue_service_pb2
__all__ = ["Caller", "Distribution", "Queue", "QueueStats", "TaskStats", "WorkerInfo", "timedelta"]
