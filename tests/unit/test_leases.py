"""How a task moves when its lease ends: the pure decision the store applies."""

from __future__ import annotations

import random

import pytest

from broker.core.leases import LeaseRow, decide
from broker.core.models import Cancelled, Failed, Failure, LossReason, Lost, Released, Succeeded
from broker.core.retry import RetryPolicy
from broker.core.task_state import TaskState

NOW = 1_000_000_000
S = TaskState
POLICY = RetryPolicy(max_attempts=3, initial_backoff_us=1_000_000, jitter=0.0, max_lease_losses=2)


def row(attempt: int = 1, lost: int = 0, cancel: bool = False, max_attempts: int = 3) -> LeaseRow:
    return LeaseRow("T", "q", S.RUNNING, 7, attempt, max_attempts, lost, cancel)


def test_success_finishes_the_task() -> None:
    t = decide(row(), Succeeded(b"x"), now=NOW, policy=POLICY)
    assert (t.state, t.finished_at) == (S.SUCCEEDED, NOW)


def test_retryable_failure_waits_for_its_backoff() -> None:
    # First failure: initial backoff of 1 s; second: 1 s * 2.
    first = decide(row(attempt=1), Failed(Failure("E", "m")), now=NOW, policy=POLICY)
    second = decide(row(attempt=2), Failed(Failure("E", "m")), now=NOW, policy=POLICY)
    assert (first.state, first.run_at) == (S.RETRYING, NOW + 1_000_000)
    assert (second.state, second.run_at) == (S.RETRYING, NOW + 2_000_000)
    assert first.error == Failure("E", "m")


def test_last_attempt_failing_is_dead_with_the_error() -> None:
    t = decide(row(attempt=3), Failed(Failure("E", "boom")), now=NOW, policy=POLICY)
    assert (t.state, t.finished_at, t.error) == (S.DEAD, NOW, Failure("E", "boom"))


def test_non_retryable_failure_fails_at_once() -> None:
    t = decide(row(), Failed(Failure("E", "m", non_retryable=True)), now=NOW, policy=POLICY)
    assert t.state is S.FAILED


def test_error_types_listed_as_non_retryable_fail_at_once() -> None:
    policy = RetryPolicy(non_retryable_error_types=frozenset({"ValueError"}))
    t = decide(row(), Failed(Failure("ValueError", "m")), now=NOW, policy=policy)
    assert t.state is S.FAILED


def test_lost_lease_returns_the_task_at_once_without_using_an_attempt() -> None:
    t = decide(row(attempt=3, lost=0), Lost(LossReason.EXPIRED), now=NOW, policy=POLICY)
    assert (t.state, t.run_at, t.lost_count) == (S.PENDING, NOW, 1)
    # attempt 3 of which one was lost: two handler failures so far, one left.
    after = decide(row(attempt=3, lost=1), Failed(Failure("E", "m")), now=NOW, policy=POLICY)
    assert after.state is S.RETRYING


def test_too_many_lost_leases_is_dead() -> None:
    t = decide(row(lost=2), Lost(LossReason.DISCONNECTED), now=NOW, policy=POLICY)
    assert t.state is S.DEAD and t.error is not None and t.error.type == "LeaseLost"


def test_released_lease_gives_the_attempt_back() -> None:
    t = decide(row(attempt=2), Released(), now=NOW, policy=POLICY)
    assert (t.state, t.attempt) == (S.PENDING, 1)


@pytest.mark.parametrize(
    "outcome", [Cancelled("stopped"), Failed(Failure("E", "m")), Lost(LossReason.EXPIRED)]
)
def test_a_task_asked_to_cancel_ends_cancelled_unless_it_succeeded(outcome: object) -> None:
    t = decide(row(cancel=True), outcome, now=NOW, policy=POLICY)  # type: ignore[arg-type]
    assert t.state is S.CANCELLED and t.finished_at == NOW
    assert decide(row(cancel=True), Succeeded(None), now=NOW, policy=POLICY).state is S.SUCCEEDED


def test_backoff_grows_to_its_maximum_and_jitter_only_shortens() -> None:
    policy = RetryPolicy(
        initial_backoff_us=100, backoff_coefficient=3.0, max_backoff_us=1000, jitter=0.5
    )
    rng = random.Random(7)
    for failures, ceiling in [(1, 100), (2, 300), (3, 900), (4, 1000), (10, 1000)]:
        delays = [policy.backoff_us(failures, rng) for _ in range(200)]
        assert max(delays) <= ceiling and min(delays) >= ceiling // 2
