"""Backoff arithmetic and where a task's options come from."""

from __future__ import annotations

import json

import pytest

from broker.core.options import Defaults, TaskOptions, Timeouts
from broker.core.retry import BackoffStrategy, RetryPolicy
from broker.errors import InvalidArgument

S = 1_000_000


@pytest.mark.parametrize(
    "strategy,failures,expected_s",
    [
        # fixed: always the initial 2 s
        (BackoffStrategy.FIXED, 1, 2), (BackoffStrategy.FIXED, 5, 2),
        # linear: n * 2 s
        (BackoffStrategy.LINEAR, 1, 2), (BackoffStrategy.LINEAR, 3, 6),
        # exponential: 2 s * 3^(n-1), capped at 60 s
        (BackoffStrategy.EXPONENTIAL, 1, 2), (BackoffStrategy.EXPONENTIAL, 3, 18),
        (BackoffStrategy.EXPONENTIAL, 5, 60),
    ],
)  # fmt: skip
def test_backoff_strategies(strategy: BackoffStrategy, failures: int, expected_s: int) -> None:
    policy = RetryPolicy(
        strategy=strategy,
        initial_backoff_us=2 * S,
        backoff_coefficient=3,
        max_backoff_us=60 * S,
        jitter=0,
    )
    assert policy.backoff_us(failures) == expected_s * S


@pytest.mark.parametrize(
    "changes,fragment",
    [
        ({"initial_backoff_us": -1}, "initial_backoff must not be negative"),
        ({"backoff_coefficient": 0.5}, "backoff_coefficient must be at least 1"),
        ({"max_backoff_us": 1, "initial_backoff_us": 5}, "max_backoff"),
        ({"jitter": 1.5}, "jitter must be between 0 and 1"),
        ({"max_attempts": 0}, "max_attempts must be between 1 and 1000"),
        ({"max_lease_losses": -2}, "max_lease_losses"),
        (
            {
                "retryable_error_types": frozenset({"E", "F"}),
                "non_retryable_error_types": frozenset({"F"}),
            },
            "in both retryable_error_types and non_retryable_error_types",
        ),
    ],
)
def test_out_of_range_policies_are_refused_not_clamped(
    changes: dict[str, object], fragment: str
) -> None:
    options = TaskOptions(**changes)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument) as info:
        Defaults().resolve(options, queue="q", type_="t")
    assert info.value.reason == "INVALID_RETRY_POLICY"
    assert fragment in info.value.message


def test_the_most_specific_option_wins_field_by_field() -> None:
    defaults = Defaults(
        retry=RetryPolicy(max_attempts=3, initial_backoff_us=1 * S),
        timeouts=Timeouts(heartbeat_us=10 * S),
        queues={"mail": TaskOptions(max_attempts=5, execution_timeout_us=60 * S)},
        types={"mail.send": TaskOptions(max_attempts=7, heartbeat_timeout_us=20 * S)},
    )
    # type beats queue beats broker; the task beats them all
    policy, timeouts = defaults.resolve(TaskOptions(), queue="mail", type_="mail.send")
    assert policy.max_attempts == 7 and policy.initial_backoff_us == 1 * S
    assert timeouts == Timeouts(execution_us=60 * S, heartbeat_us=20 * S)
    policy, _ = defaults.resolve(TaskOptions(max_attempts=2), queue="mail", type_="mail.send")
    assert policy.max_attempts == 2
    policy, timeouts = defaults.resolve(TaskOptions(), queue="mail", type_="other")
    assert policy.max_attempts == 5 and timeouts.heartbeat_us == 10 * S
    policy, timeouts = defaults.resolve(TaskOptions(), queue="other", type_="other")
    assert policy.max_attempts == 3 and timeouts.execution_us is None


def test_soft_timeout_must_come_before_the_execution_timeout() -> None:
    with pytest.raises(InvalidArgument) as info:
        Defaults().resolve(TaskOptions(soft_timeout_us=5 * S), queue="q", type_="t")
    assert info.value.reason == "INVALID_TIMEOUTS"
    Defaults().resolve(
        TaskOptions(soft_timeout_us=5 * S, execution_timeout_us=6 * S), queue="q", type_="t"
    )


def test_policies_round_trip_through_json() -> None:
    policy = RetryPolicy(
        max_attempts=9,
        strategy=BackoffStrategy.LINEAR,
        non_retryable_error_types=frozenset({"KeyError", "ValueError"}),
        retryable_error_types=frozenset({"HTTP_503"}),
    )
    assert RetryPolicy.from_json(policy.to_json()) == policy
    # A policy stored before the allowlist existed reads back with an empty one.
    old = RetryPolicy(max_attempts=4)
    assert "retryable_error_types" not in json.loads(old.to_json())
    assert RetryPolicy.from_json(old.to_json()) == old
