"""The SDK's view of tasks: plain, typed, immutable Python values."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from google.protobuf import timestamp_pb2

from taskyard.v1 import task_pb2
from worker_sdk._payload import from_payload


class TaskState(StrEnum):
    """Where a task is in its life; see ``taskyard.v1.TaskState``."""

    SCHEDULED = "scheduled"
    PENDING = "pending"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    DEAD = "dead"
    EXPIRED = "expired"

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL

    def to_proto(self) -> int:
        return _TO_PROTO[self]

    @classmethod
    def from_proto(cls, value: int) -> TaskState:
        return _FROM_PROTO[value]  # type: ignore[index]


_TO_PROTO = {s: task_pb2.TaskState.Value(f"TASK_STATE_{s.name}") for s in TaskState}
_FROM_PROTO = {v: s for s, v in _TO_PROTO.items()}
_TERMINAL = frozenset(
    {TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED, TaskState.DEAD, TaskState.EXPIRED}
)


@dataclass(frozen=True, slots=True)
class TaskError:
    type: str
    message: str
    details: str = ""
    non_retryable: bool = False
    attempt: int = 0


@dataclass(frozen=True, slots=True)
class Progress:
    percent: float = 0.0
    message: str = ""
    step: int = 0
    total_steps: int = 0
    update_time: datetime | None = None


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """A task to submit (see ``Client.submit`` for the fields)."""

    type: str
    payload: Any = None
    queue: str | None = None
    priority: int = 0
    run_at: datetime | None = None
    labels: dict[str, str] = field(default_factory=dict)
    max_attempts: int | None = None
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class Task:
    id: str
    type: str
    queue: str
    priority: int
    state: TaskState
    attempt: int
    max_attempts: int
    payload: Any
    result: Any
    labels: dict[str, str]
    create_time: datetime | None
    run_time: datetime | None
    start_time: datetime | None
    finish_time: datetime | None
    error: TaskError | None
    progress: Progress | None
    worker_id: str
    cancel_requested: bool
    request_id: str

    @property
    def done(self) -> bool:
        return self.state.is_terminal

    @classmethod
    def from_proto(cls, t: task_pb2.Task) -> Task:
        return cls(
            id=t.id,
            type=t.type,
            queue=t.queue,
            priority=t.priority,
            state=TaskState.from_proto(t.state),
            attempt=t.attempt,
            max_attempts=t.max_attempts,
            payload=from_payload(t.payload) if t.HasField("payload") else None,
            result=from_payload(t.result) if t.HasField("result") else None,
            labels=dict(t.labels),
            create_time=_time(t, "create_time"),
            run_time=_time(t, "run_time"),
            start_time=_time(t, "start_time"),
            finish_time=_time(t, "finish_time"),
            error=_error(t),
            progress=_progress(t),
            worker_id=t.worker_id,
            cancel_requested=t.cancel_requested,
            request_id=t.request_id,
        )


def _time(message: Any, name: str) -> datetime | None:
    if not message.HasField(name):
        return None
    ts: timestamp_pb2.Timestamp = getattr(message, name)
    return datetime.fromtimestamp(ts.seconds + ts.nanos / 1e9, tz=UTC)


def _error(t: task_pb2.Task) -> TaskError | None:
    if not t.HasField("error"):
        return None
    e = t.error
    return TaskError(e.type, e.message, e.details, e.non_retryable, e.attempt)


def _progress(t: task_pb2.Task) -> Progress | None:
    if not t.HasField("progress"):
        return None
    p = t.progress
    return Progress(p.percent, p.message, p.step, p.total_steps, _time(p, "update_time"))
