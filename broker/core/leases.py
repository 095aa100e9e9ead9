"""What becomes of a task when its lease ends: the decision, free of I/O.

The store fences first (the lease must still be current), then asks `decide`
for the transition and writes it with a compare-and-set on the same lease.
"""

from __future__ import annotations

import random

from broker.core.models import (
    AttemptOutcome,
    Cancelled,
    Failed,
    Failure,
    Holder,
    LossReason,
    Lost,
    Outcome,
    Released,
    Succeeded,
    TimedOut,
)
from broker.core.record import record
from broker.core.retry import RetryPolicy
from broker.core.task_state import TaskState, check_move


@record
class LeaseRow:
    """The fields of a leased task that the decision needs."""

    id: str
    queue: str
    state: TaskState
    lease_id: int | None
    attempt: int
    max_attempts: int
    lost_count: int
    cancel_requested: bool
    attempt_base: int = 0
    retry_policy: str | None = None
    heartbeat_timeout_us: int = 10_000_000
    worker_id: str | None = None
    started_at: int | None = None
    type: str = ""
    leased_by: str | None = None  # the identity holding the lease (None: not recorded)
    workflow_id: str | None = None
    # Set while the task waits again after losing this lease, until it is leased again.
    lapsed_lease_id: int | None = None
    cancel_reason: str | None = None
    execution_timeout_us: int | None = None


@record
class Transition:
    state: TaskState
    attempt: int
    lost_count: int
    run_at: int | None = None
    finished_at: int | None = None
    error: Failure | None = None
    # Set when the task goes on to another attempt: how this one ended, for
    # the attempt history. Final attempts are read from the task row instead.
    recorded: AttemptOutcome | None = None


def may_act(row: LeaseRow, by: Holder | None) -> bool:
    """Whether `by` may heartbeat, complete or re-adopt the lease on `row`.

    Only the identity holding the lease may, and only within its queues and
    task types; the broker's own ends (`by` None) always may. A lease with no
    recorded holder (no authentication, or taken before revision 0009) may
    be acted on by any identity whose scope covers the task.
    """
    if by is None:
        return True
    if row.leased_by is not None and row.leased_by != by.identity:
        return False
    if by.queues is not None and row.queue not in by.queues:
        return False
    return by.types is None or row.type in by.types


CANCELLED_ERROR = "Cancelled"
LEASE_LOST_ERROR = "LeaseLost"
TIMEOUT_ERROR = "ExecutionTimeout"


def decide(
    row: LeaseRow,
    outcome: Outcome,
    *,
    now: int,
    policy: RetryPolicy,
    rng: random.Random | None = None,
) -> Transition:
    transition = _decide(row, outcome, now, policy, rng)
    check_move(row.state, transition.state)
    return transition


def _decide(
    row: LeaseRow,
    outcome: Outcome,
    now: int,
    policy: RetryPolicy,
    rng: random.Random | None,
) -> Transition:
    if isinstance(outcome, Succeeded):
        return Transition(TaskState.SUCCEEDED, row.attempt, row.lost_count, finished_at=now)
    if isinstance(outcome, Released):
        # The attempt never started, so it does not count.
        return Transition(TaskState.PENDING, row.attempt - 1, row.lost_count, run_at=now)
    if row.cancel_requested or isinstance(outcome, Cancelled):
        error = _cancelled(row, outcome)
        return Transition(
            TaskState.CANCELLED, row.attempt, row.lost_count, finished_at=now, error=error
        )
    if isinstance(outcome, Lost):
        return _lost(row, outcome.reason, now, policy)
    if isinstance(outcome, TimedOut):
        seconds = outcome.timeout_us / 1_000_000
        failure = Failure(
            TIMEOUT_ERROR,
            f"attempt {row.attempt} ran longer than its execution timeout ({seconds:g}s)",
        )
        return _failed(row, failure, now, policy, rng, AttemptOutcome.TIMED_OUT)
    assert isinstance(outcome, Failed)
    return _failed(row, outcome.failure, now, policy, rng, AttemptOutcome.FAILED)


def _cancelled(row: LeaseRow, outcome: Outcome) -> Failure:
    """CancelTask's reason is the error message; the worker's own note goes to the details."""
    note = outcome.message if isinstance(outcome, Cancelled) else ""
    if row.cancel_reason:
        return Failure(CANCELLED_ERROR, row.cancel_reason, note, non_retryable=True)
    return Failure(CANCELLED_ERROR, note or "cancelled while running", non_retryable=True)


def _lost(row: LeaseRow, reason: LossReason, now: int, policy: RetryPolicy) -> Transition:
    lost = row.lost_count + 1
    what = (
        "disconnected"
        if reason is LossReason.DISCONNECTED
        else f"sent no heartbeat for {row.heartbeat_timeout_us / 1_000_000:g}s"
    )
    error = Failure(LEASE_LOST_ERROR, f"worker {row.worker_id or '?'} {what}")
    if lost > policy.max_lease_losses:
        error = Failure(
            LEASE_LOST_ERROR,
            f"{error.message}; the lease was lost {lost} times, over the cap of "
            f"{policy.max_lease_losses}",
            non_retryable=True,
        )
        return Transition(TaskState.DEAD, row.attempt, lost, finished_at=now, error=error)
    # A lost worker is not the handler's fault: run again at once.
    return Transition(
        TaskState.PENDING,
        row.attempt,
        lost,
        run_at=now,
        error=error,
        recorded=AttemptOutcome.LEASE_LOST,
    )


def _failed(
    row: LeaseRow,
    failure: Failure,
    now: int,
    policy: RetryPolicy,
    rng: random.Random | None,
    recorded: AttemptOutcome,
) -> Transition:
    if failure.non_retryable or not policy.retries(failure.type):
        return Transition(
            TaskState.FAILED, row.attempt, row.lost_count, finished_at=now, error=failure
        )
    failures = row.attempt - row.attempt_base - row.lost_count
    if failures >= row.max_attempts:
        return Transition(
            TaskState.DEAD, row.attempt, row.lost_count, finished_at=now, error=failure
        )
    if failure.retry_delay_us is not None:
        delay = policy.requested_us(failure.retry_delay_us)
    else:
        delay = policy.backoff_us(failures, rng)
    return Transition(
        TaskState.RETRYING if delay > 0 else TaskState.PENDING,
        row.attempt,
        row.lost_count,
        run_at=now + delay,
        error=failure,
        recorded=recorded,
    )
