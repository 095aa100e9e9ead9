"""Inputs the SDK refuses instead of quietly changing them."""

from __future__ import annotations

import math

import pytest

from taskyard.v1 import worker_service_pb2
from worker_sdk import TaskContext
from worker_sdk._context import TaskContextError
from worker_sdk._errors import NonRetryableError
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
