"""The broker's domain records: what a task is, and how a lease can end.

Payloads, results and labels are opaque here (serialized bytes and JSON text);
only `broker/api/convert.py` knows their protobuf shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from broker.core.task_state import TaskState


@dataclass(frozen=True, slots=True)
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

    @property
    def initial_state(self) -> TaskState:
        return TaskState.SCHEDULED if self.run_at > self.created_at else TaskState.PENDING


@dataclass(frozen=True, slots=True)
class Progress:
    percent: float
    message: str
    step: int
    total_steps: int
    at_us: int


@dataclass(frozen=True, slots=True)
class Failure:
    type: str
    message: str
    details: str = ""
    non_retryable: bool = False


@dataclass(frozen=True, slots=True)
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
    payload: bytes | None = None
    result: bytes | None = None


@dataclass(frozen=True, slots=True)
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


# How an attempt (a lease) ended.


@dataclass(frozen=True, slots=True)
class Succeeded:
    result: bytes | None


@dataclass(frozen=True, slots=True)
class Failed:
    failure: Failure


@dataclass(frozen=True, slots=True)
class Cancelled:
    message: str = ""


class LossReason(Enum):
    DISCONNECTED = "disconnected"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class Lost:
    reason: LossReason


@dataclass(frozen=True, slots=True)
class Released:
    """The worker handed the lease back without running it."""


Outcome = Succeeded | Failed | Cancelled | Lost | Released


@dataclass(frozen=True, slots=True)
class LeaseEnd:
    task_id: str
    lease_id: int
    outcome: Outcome


@dataclass(frozen=True, slots=True)
class LeaseRef:
    task_id: str
    lease_id: int
