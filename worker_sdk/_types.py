"""The SDK's view of tasks: plain, typed, immutable Python values."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

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

    def to_proto(self) -> task_pb2.TaskState.ValueType:
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


Seconds = float | timedelta


def _secs(value: Seconds | None) -> float | None:
    if value is None:
        return None
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a failed task is retried; None fields take the queue's or broker's defaults.

    Attributes:
        max_attempts: Attempts in all, counting the first.
        strategy: "fixed", "linear" or "exponential".
        initial_backoff: Seconds (or timedelta) before the first retry.
        backoff_coefficient: Growth factor for "exponential" (at least 1).
        max_backoff: No delay exceeds this.
        jitter: Random shortening of each delay, 0 to 1.
        non_retryable_error_types: Error types that fail the task at once.
        max_lease_losses: Lost leases (dead workers) tolerated before the task is dead.
        retryable_error_types: When not empty, the only error types retried; any
            other type fails the task at once (``non_retryable_error_types`` wins).
    """

    max_attempts: int | None = None
    strategy: str | None = None
    initial_backoff: Seconds | None = None
    backoff_coefficient: float | None = None
    max_backoff: Seconds | None = None
    jitter: float | None = None
    non_retryable_error_types: tuple[str, ...] = ()
    max_lease_losses: int | None = None
    retryable_error_types: tuple[str, ...] = ()

    def to_proto(self) -> task_pb2.RetryPolicy:
        out = task_pb2.RetryPolicy(
            max_attempts=self.max_attempts or 0,
            backoff_coefficient=self.backoff_coefficient or 0.0,
            non_retryable_error_types=list(self.non_retryable_error_types),
            max_lease_losses=self.max_lease_losses or 0,
            retryable_error_types=list(self.retryable_error_types),
        )
        if self.strategy is not None:
            out.strategy = task_pb2.BackoffStrategy.Value(
                f"BACKOFF_STRATEGY_{self.strategy.upper()}"
            )
        if self.jitter is not None:
            out.jitter = self.jitter
        _set_duration(out, "initial_backoff", self.initial_backoff)
        _set_duration(out, "max_backoff", self.max_backoff)
        return out

    @classmethod
    def from_proto(cls, p: task_pb2.RetryPolicy) -> RetryPolicy:
        return cls(
            max_attempts=p.max_attempts,
            strategy=task_pb2.BackoffStrategy.Name(p.strategy)
            .removeprefix("BACKOFF_STRATEGY_")
            .lower(),
            initial_backoff=p.initial_backoff.ToTimedelta().total_seconds(),
            backoff_coefficient=p.backoff_coefficient,
            max_backoff=p.max_backoff.ToTimedelta().total_seconds(),
            jitter=p.jitter,
            non_retryable_error_types=tuple(p.non_retryable_error_types),
            max_lease_losses=p.max_lease_losses,
            retryable_error_types=tuple(p.retryable_error_types),
        )


@dataclass(frozen=True, slots=True)
class Timeouts:
    """How long a task may wait and run (seconds or timedelta); None takes the defaults.

    Attributes:
        execution: Start-to-close limit of one attempt; past it the attempt fails
            with ``ExecutionTimeout`` and is retried.
        heartbeat: A running attempt silent for this long is taken back.
        soft: Warns the handler (``ctx.soft_timeout_exceeded``) before ``execution``.
        expiry: A task not started this long after its run time expires.
    """

    execution: Seconds | None = None
    heartbeat: Seconds | None = None
    soft: Seconds | None = None
    expiry: Seconds | None = None

    def to_proto(self) -> task_pb2.TaskTimeouts:
        out = task_pb2.TaskTimeouts()
        for name in ("execution", "heartbeat", "soft", "expiry"):
            _set_duration(out, name, getattr(self, name))
        return out

    @classmethod
    def from_proto(cls, p: task_pb2.TaskTimeouts) -> Timeouts:
        def get(name: str) -> float | None:
            if not p.HasField(name):  # type: ignore[arg-type]
                return None
            return float(getattr(p, name).ToTimedelta().total_seconds())

        return cls(get("execution"), get("heartbeat"), get("soft"), get("expiry"))


def _set_duration(message: object, name: str, value: Seconds | None) -> None:
    seconds = _secs(value)
    if seconds is not None:
        getattr(message, name).FromMicroseconds(round(seconds * 1_000_000))


@dataclass(frozen=True, slots=True)
class Attempt:
    """One attempt of a task (see ``Client.attempts``)."""

    attempt: int
    worker_id: str
    start_time: datetime | None
    end_time: datetime | None
    outcome: str  # running, succeeded, failed, timed_out, lease_lost, cancelled
    error: TaskError | None

    @classmethod
    def from_proto(cls, a: task_pb2.TaskAttempt) -> Attempt:
        outcome = task_pb2.AttemptOutcome.Name(a.outcome).removeprefix("ATTEMPT_OUTCOME_").lower()
        error = None
        if a.HasField("error"):
            e = a.error
            error = TaskError(e.type, e.message, e.details, e.non_retryable, e.attempt)
        return cls(
            attempt=a.attempt,
            worker_id=a.worker_id,
            start_time=_time(a, "start_time"),
            end_time=_time(a, "end_time"),
            outcome="running" if outcome == "unspecified" else outcome,
            error=error,
        )


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One line a handler wrote with ``ctx.log`` (see ``Client.logs``).

    Attributes:
        time: When the handler wrote it.
        level: ``DEBUG``, ``INFO``, ``WARNING``, ``ERROR`` or ``CRITICAL``.
        message: The formatted message (a truncation notice when the attempt's limit was hit).
        attempt: The attempt that wrote it.
    """

    time: datetime | None
    level: str
    message: str
    attempt: int

    @classmethod
    def from_proto(cls, r: task_pb2.TaskLogRecord) -> LogRecord:
        level = task_pb2.TaskLogLevel.Name(r.level).removeprefix("TASK_LOG_LEVEL_")
        level = "INFO" if level == "UNSPECIFIED" else level
        return cls(_time(r, "time"), level, r.message, r.attempt)


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
    retry_policy: RetryPolicy | None = None
    timeouts: Timeouts | None = None
    concurrency_key: str | None = None


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
    retry_policy: RetryPolicy | None = None
    timeouts: Timeouts | None = None
    expire_time: datetime | None = None
    lease_losses: int = 0
    concurrency_key: str = ""

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
            retry_policy=RetryPolicy.from_proto(t.retry_policy)
            if t.HasField("retry_policy")
            else None,
            timeouts=Timeouts.from_proto(t.timeouts) if t.HasField("timeouts") else None,
            expire_time=_time(t, "expire_time"),
            lease_losses=t.lease_losses,
            concurrency_key=t.concurrency_key,
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


class Specified(Protocol):
    """Anything that carries a `TaskSpec` (a typed call, ``resize.call(...)``)."""

    @property
    def spec(self) -> TaskSpec: ...
