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


# --- Retry conditions and the handler's own delay -------------------------------------------

ALLOW = RetryPolicy(
    max_attempts=3,
    initial_backoff_us=1_000_000,
    jitter=0.0,
    retryable_error_types=frozenset({"HTTP_503", "ExecutionTimeout"}),
    non_retryable_error_types=frozenset({"ValueError"}),
)


@pytest.mark.parametrize(
    ("error_type", "state"),
    [
        ("HTTP_503", S.RETRYING),  # on the allowlist
        ("ValueError", S.FAILED),  # on the denylist
        ("KeyError", S.FAILED),  # on neither, with an allowlist set: not retried
    ],
)
def test_an_allowlist_retries_only_its_error_types(error_type: str, state: TaskState) -> None:
    assert decide(row(), Failed(Failure(error_type, "m")), now=NOW, policy=ALLOW).state is state


def test_without_an_allowlist_every_type_off_the_denylist_is_retried() -> None:
    t = decide(row(), Failed(Failure("KeyError", "m")), now=NOW, policy=POLICY)
    assert t.state is S.RETRYING


def test_a_requested_delay_replaces_the_backoff_without_jitter() -> None:
    # The policy would wait 1 s (and shorten it by jitter); the handler asks for 42 s.
    jittery = RetryPolicy(initial_backoff_us=1_000_000, jitter=0.9)
    failure = Failure("HTTP_429", "slow down", retry_delay_us=42_000_000)
    t = decide(row(), Failed(failure), now=NOW, policy=jittery)
    assert (t.state, t.run_at) == (S.RETRYING, NOW + 42_000_000)
    zero = decide(row(), Failed(Failure("E", "m", retry_delay_us=0)), now=NOW, policy=jittery)
    assert (zero.state, zero.run_at) == (S.PENDING, NOW)


def test_a_requested_delay_is_bounded_by_max_backoff() -> None:
    policy = RetryPolicy(max_backoff_us=300_000_000)  # 5 minutes
    failure = Failure("HTTP_429", "m", retry_delay_us=3_600_000_000)  # asks for an hour
    assert decide(row(), Failed(failure), now=NOW, policy=policy).run_at == NOW + 300_000_000


@pytest.mark.parametrize(
    ("failure", "at", "state"),
    [
        (Failure("HTTP_503", "m", retry_delay_us=5), 3, S.DEAD),  # counts against max_attempts
        (Failure("HTTP_503", "m", non_retryable=True, retry_delay_us=5), 1, S.FAILED),
        (Failure("KeyError", "m", retry_delay_us=5), 1, S.FAILED),  # not on the allowlist
    ],
)
def test_a_requested_delay_does_not_make_a_failure_retryable(
    failure: Failure, at: int, state: TaskState
) -> None:
    assert decide(row(attempt=at), Failed(failure), now=NOW, policy=ALLOW).state is state
