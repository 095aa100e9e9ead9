"""Inputs the SDK refuses instead of quietly changing them."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest

from taskyard.v1 import worker_service_pb2
from worker_sdk import Retry, TaskContext
from worker_sdk._context import TaskContextError
from worker_sdk._errors import NonRetryableError, failure_of
from worker_sdk._payload import to_payload
from worker_sdk._requests import spec_of


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan, float("1e400")])
def test_a_number_json_cannot_hold_is_refused(value: float) -> None:
    with pytest.raises(TypeError, match="JSON cannot represent"):
        to_payload({"x": [value]})


@pytest.mark.parametrize("attempts", [0, -1])
def test_max_attempts_below_one_is_refused_not_turned_into_the_default(attempts: int) -> None:
    with pytest.raises(ValueError, match="max_attempts must be at least 1"):
        spec_of("echo", max_attempts=attempts)
    assert spec_of("echo", max_attempts=None).max_attempts is None


async def test_context_offers_id_and_names_the_closest_attribute() -> None:
    assignment = worker_service_pb2.Assignment(task_id="01ARZ3NDEKTSV4RRFFQ69G5FAV", type="t")
    ctx = TaskContext(assignment, lambda _id, _progress: None)
    assert ctx.id == ctx.task_id == "01ARZ3NDEKTSV4RRFFQ69G5FAV"
    with pytest.raises(TaskContextError, match=r"did you mean ctx\.payload\?") as info:
        ctx.paylod  # type: ignore[attr-defined]  # noqa: B018 - the typo under test
    assert isinstance(info.value, AttributeError) and isinstance(info.value, NonRetryableError)
    assert getattr(ctx, "nothing_like_it", "fallback") == "fallback"  # getattr defaults work
    with pytest.raises(AttributeError) as private:
        ctx._private  # type: ignore[attr-defined]  # noqa: B018
    assert not isinstance(private.value, TaskContextError)


async def test_a_retry_request_carries_its_delay_and_type_to_the_failure() -> None:
    ctx = TaskContext(worker_service_pb2.Assignment(task_id="t", type="t"), lambda _i, _p: None)
    with pytest.raises(Retry) as raised:
        ctx.retry(timedelta(seconds=1.5), "slow down", type="HTTP_429")
    failure = failure_of(raised.value)
    assert (failure.type, failure.message, failure.non_retryable) == (
        "HTTP_429",
        "slow down",
        False,
    )
    assert failure.retry_delay.ToMicroseconds() == 1_500_000
    assert failure_of(Retry(delay=0)).HasField("retry_delay")  # 0: retry at once
    assert failure_of(Retry(delay=2)).type == "Retry"

    class RateLimited(Exception):
        retry_delay = 30  # any exception may ask for a delay

    assert failure_of(RateLimited()).retry_delay.ToSeconds() == 30
    assert failure_of(RateLimited()).type == "RateLimited"
    assert not failure_of(ValueError("x")).HasField("retry_delay")
    assert failure_of(NonRetryableError("x")).non_retryable


@pytest.mark.parametrize("delay", [-1, math.nan, math.inf])
def test_a_retry_delay_that_is_not_a_duration_is_refused(delay: float) -> None:
    with pytest.raises(ValueError, match="must be 0 or more seconds"):
        Retry(delay=delay)
