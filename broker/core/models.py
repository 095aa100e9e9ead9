"""The broker's domain records: what a task is, and how a lease can end.

Payloads, results and labels are opaque here (serialized bytes and JSON text);
only `broker/api/convert.py` knows their protobuf shape.
"""

from __future__ import annotations

from dataclasses import field
from enum import Enum

from broker.core.options import Timeouts
from broker.core.record import record
from broker.core.task_state import TaskState


@record
class NewTask:
    id: str
    type: str
    queue: str
    priority: int
    payload: bytes | None
    labels: str | None
    run_at: int
    created_at: int
    max_attempts: int
    request_id: str | None
    # The effective policy as JSON, or None when it is the broker's default.
    retry_policy: str | None = None
    timeouts: Timeouts = field(default_factory=Timeouts)
    concurrency_key: str | None = None
    trace_context: str | None = None  # JSON of the W3C headers
    owner: str | None = None  # the identity that created it (broker/security/access.py)

    @property
    def expire_at(self) -> int | None:
        expiry = self.timeouts.expiry_us
        return None if expiry is None else self.run_at + expiry

    @property
    def initial_state(self) -> TaskState:
        return TaskState.SCHEDULED if self.run_at > self.created_at else TaskState.PENDING


@record
class Progress:
    percent: float
    message: str
    step: int
    total_steps: int
    at_us: int


@record
class LogLine:
    """One log record a handler wrote: when (its worker's clock), how severe, what."""

    at_us: int
    level: int  # 1 DEBUG, 2 INFO, 3 WARNING, 4 ERROR, 5 CRITICAL (taskyard.v1.TaskLogLevel)
    message: str


@record
class Failure:
    type: str
    message: str
    details: str = ""
    non_retryable: bool = False
    # The delay the handler asked for before the next attempt (µs), or None
    # for the policy's backoff. Decides one transition; never stored.
    retry_delay_us: int | None = None


@record
class TaskRecord:
    id: str
    type: str
    queue: str
    priority: int
    state: TaskState
    attempt: int
    max_attempts: int
    lost_count: int
    run_at: int
    created_at: int
    updated_at: int
    started_at: int | None
    finished_at: int | None
    lease_id: int | None
    lease_expires_at: int | None
    worker_id: str | None
    cancel_requested: bool
    request_id: str | None
    labels: str | None
    error: Failure | None
    error_attempt: int | None
    progress: Progress | None
    retry_policy: str | None = None
    attempt_base: int = 0
    timeouts: Timeouts = field(default_factory=Timeouts)
    expire_at: int | None = None
    deadline_at: int | None = None
    concurrency_key: str | None = None
    trace_context: str | None = None
    payload: bytes | None = None
    result: bytes | None = None


@record
class Claimed:
    """A task just leased, with what the worker needs to run it."""

    id: str
    type: str
    queue: str
    priority: int
    attempt: int
    max_attempts: int
    labels: str | None
    created_at: int
    run_at: int
    lease_id: int
    lease_expires_at: int
    payload: bytes | None
    worker_id: str = ""
    heartbeat_timeout_us: int = 10_000_000
    deadline_at: int | None = None
    soft_deadline_at: int | None = None
    trace_context: str | None = None
    leased_by: str | None = None  # the identity of the session it went to


# How an attempt (a lease) ended.


@record
class Succeeded:
    result: bytes | None


@record
class Failed:
    failure: Failure


@record
class Cancelled:
    message: str = ""


@record
class TimedOut:
    """The attempt ran past its execution deadline."""

    timeout_us: int


class LossReason(Enum):
    DISCONNECTED = "disconnected"
    EXPIRED = "expired"


@record
class Lost:
    reason: LossReason


@record
class Released:
    """The worker handed the lease back without running it."""


Outcome = Succeeded | Failed | Cancelled | TimedOut | Lost | Released


class AttemptOutcome(Enum):
    """How an attempt ended; values equal the protobuf AttemptOutcome numbers."""

    RUNNING = 0
    SUCCEEDED = 1
    FAILED = 2
    TIMED_OUT = 3
    LEASE_LOST = 4
    CANCELLED = 5


@record
class Attempt:
    attempt: int
    worker_id: str | None
    started_at: int | None
    ended_at: int | None
    outcome: AttemptOutcome
    error: Failure | None


@record
class Holder:
    """Who acts on a lease: the caller's identity and the queues and task types it may touch.

    The broker's own ends (expiry, timeouts) carry none and are not checked.
    `identity` is None without authentication; `queues`/`types` None mean all.
    """

    identity: str | None
    queues: frozenset[str] | None = None
    types: frozenset[str] | None = None


@record
class LeaseEnd:
    task_id: str
    lease_id: int
    outcome: Outcome
    by: Holder | None = None  # the worker that reported it; None: the broker itself


@record
class LeaseRef:
    task_id: str
    lease_id: int
