"""The SDK's exceptions: one for broker errors, and the ones handlers and waiters meet."""

from __future__ import annotations

import math
import traceback
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import grpc
from google.rpc import error_details_pb2, status_pb2

from taskyard.v1 import worker_service_pb2

if TYPE_CHECKING:
    from worker_sdk._types import Task


class TaskyardError(Exception):
    """A call to the broker failed.

    Attributes:
        code: The gRPC status code.
        reason: The broker's machine-readable reason (e.g. ``TASK_NOT_FOUND``),
            or the code's name when the broker gave none.
        message: What went wrong, for people.
        retry_after: Seconds after which the broker expects a retry to succeed
            (a rate limit's hint), or None.
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        reason: str,
        message: str,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.reason = reason
        self.message = message
        self.retry_after = retry_after

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError, target: str = "") -> TaskyardError:
        code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
        message = error.details() if hasattr(error, "details") else str(error)
        reason = code.name
        retry_after = None
        metadata: Any = error.trailing_metadata() if hasattr(error, "trailing_metadata") else ()
        for key, value in metadata or ():
            if key == "grpc-status-details-bin":
                reason = _reason(value) or reason
                retry_after = _retry_after(value)
        if code is grpc.StatusCode.UNAVAILABLE and reason == "UNAVAILABLE":
            message = f"cannot reach the Taskyard broker at {target or 'the target'}: {message}"
        return cls(code, reason, message or code.name, retry_after)


def _reason(raw: bytes) -> str | None:
    status = status_pb2.Status.FromString(raw)
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return str(info.reason)
    return None


def _retry_after(raw: bytes) -> float | None:
    status = status_pb2.Status.FromString(raw)
    for detail in status.details:
        info = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            return float(info.retry_delay.ToMicroseconds()) / 1_000_000
    return None


class NonRetryableError(Exception):
    """Raise from a handler to fail the task without further attempts."""


class Retry(Exception):
    """Raise from a handler to fail this attempt and have the next one run after `delay`.

    For a delay the handler knows better than the retry policy, e.g. an
    upstream API's ``Retry-After`` (Celery's ``self.retry(countdown=...)``;
    ``ctx.retry(...)`` raises this). The broker waits exactly `delay`, without
    jitter, but never longer than the policy's ``max_backoff``. It is still a
    failed attempt: it counts against ``max_attempts``, and the policy's error
    type lists apply to its `type`.

    Any exception with a ``retry_delay`` attribute (seconds or timedelta) asks
    for a delay the same way, under its own class name as the error type.

    Args:
        message: The error message recorded with the attempt.
        delay: Seconds (or a timedelta) before the next attempt; 0 means at once.
        type: The error type reported to the broker (default ``"Retry"``), which
            ``retryable_error_types`` and ``non_retryable_error_types`` match.

    Raises:
        ValueError: `delay` is negative or not finite.
    """

    def __init__(
        self, message: str = "", *, delay: float | timedelta, type: str | None = None
    ) -> None:
        seconds = delay.total_seconds() if isinstance(delay, timedelta) else float(delay)
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"Retry(delay=...) must be 0 or more seconds, got {delay!r}")
        super().__init__(message or f"retry requested in {seconds:g}s")
        self.retry_delay = seconds
        self.type = type or "Retry"


def failure_of(exc: BaseException) -> worker_service_pb2.Failure:
    """How a handler's exception is reported: type, message, traceback, retry hints."""
    out = worker_service_pb2.Failure(
        type=exc.type if isinstance(exc, Retry) else type(exc).__name__,
        message=str(exc),
        details="".join(traceback.format_exception(exc)),
        non_retryable=isinstance(exc, NonRetryableError),
    )
    delay: Any = getattr(exc, "retry_delay", None)
    if isinstance(delay, timedelta):
        delay = delay.total_seconds()
    usable = isinstance(delay, int | float) and not isinstance(delay, bool)
    if usable and math.isfinite(delay) and delay >= 0:
        out.retry_delay.FromMicroseconds(round(delay * 1_000_000))
    return out


class TaskFailed(Exception):
    """The awaited task ended without a result (failed, dead, cancelled or expired).

    Attributes:
        task: The task as it ended; ``task.error`` says why.
    """

    def __init__(self, task: Task) -> None:
        error = task.error
        detail = f"{error.type}: {error.message}" if error else "no error recorded"
        super().__init__(f"task {task.id} ended {task.state.value}: {detail}")
        self.task = task


class BatchSubmitError(Exception):
    """Some items of a batch submission were rejected; the others were created.

    Attributes:
        results: One entry per submitted item, in order: the created Task or
            the TaskyardError that rejected it.
    """

    def __init__(self, results: list[Task | TaskyardError]) -> None:
        failed = [r for r in results if isinstance(r, TaskyardError)]
        super().__init__(f"{len(failed)} of {len(results)} tasks rejected; first: {failed[0]}")
        self.results = results
