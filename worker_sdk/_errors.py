"""The SDK's exceptions: one for broker errors, and the ones handlers and waiters meet."""

from __future__ import annotations

import math
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
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


class WorkerProcessCrashed(Exception):
    """The process-pool child running a task died (a segfault, ``os._exit``, a kill).

    The task fails with this error type and is retried per its policy.
    """


class MemoryLimitExceeded(Exception):
    """The process-pool child running a task passed its memory ceiling and was killed.

    The task fails with this error type and is retried per its policy (list it in the
    policy's ``non_retryable_error_types`` to stop that).
    """


class ProcessTaskError(Exception):
    """A handler in a process-pool child raised; this carries how the child reported it.

    Attributes:
        failure: The `Failure` the child built with `failure_of` (type, message,
            traceback, non_retryable, a requested retry delay), sent on as it is.
    """

    def __init__(self, failure: worker_service_pb2.Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


@dataclass(frozen=True, slots=True)
class FieldError:
    """One problem a validation found: where (``point.x``, ``items[2]``) and what."""

    path: str
    message: str


class ValidationError(NonRetryableError, ValueError):
    """Arguments or a result that do not match a typed task's type hints.

    Raised by ``.submit()`` before anything is sent, and by ``handle.result()`` for a result
    that does not match the return type. In a worker, a payload that does not match (sent
    by grpcurl or another language, say) fails the task at once with error type
    ``ValidationError``, without retries.

    Attributes:
        errors: Each problem with its field path.
    """

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.errors = [FieldError(path, message) for path, message in problems]
        super().__init__("; ".join(f"{e.path}: {e.message}" for e in self.errors))


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
    if isinstance(exc, ProcessTaskError):
        return exc.failure
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


class BatchSubmitError(TaskyardError):
    """A batch submission was not created in full; says exactly what was.

    It is a TaskyardError whose code, reason and retry hint are those of the first
    failure, so code that catches TaskyardError around `submit_many` keeps working.

    `submit_many` sends its items in chunks, one call after another. An item the broker
    rejects (say, an invalid queue name) does not stop the others. A chunk the broker
    refuses as a whole, or that fails in transit, stops the batch: later chunks are not
    sent, and this error says which items exist.

    Attributes:
        results: One entry per submitted item, in order: the created Task, or the
            TaskyardError that kept it from being created — the item's own rejection, its
            chunk's failure, or reason ``NOT_SENT`` for items after a failed chunk.
        created: The tasks that were created, in order.
        uncertain: Indexes of items whose chunk failed after it may have reached the
            broker (the connection broke, the call timed out): they may exist or not.
            Items given a ``request_id`` can be submitted again safely to find out.
    """

    def __init__(
        self, results: list[Task | TaskyardError], *, uncertain: Sequence[int] = ()
    ) -> None:
        from worker_sdk._types import Task

        self.results = results
        self.created = [r for r in results if isinstance(r, Task)]
        self.uncertain = list(uncertain)
        failed = [r for r in results if not isinstance(r, Task)]
        first = failed[0] if failed else None
        extra = f", {len(self.uncertain)} uncertain" if self.uncertain else ""
        super().__init__(
            first.code if first else grpc.StatusCode.UNKNOWN,
            first.reason if first else "UNKNOWN",
            f"{len(self.created)} of {len(results)} tasks created{extra}; first error: {first}",
            first.retry_after if first else None,
        )


# A chunk that failed with one of these never created anything: the broker refused it
# before its transaction (or could not parse it). Any other failure may have come after.
REFUSED_WHOLE = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.OUT_OF_RANGE,
    }
)


def maybe_applied(error: TaskyardError) -> bool:
    """Whether a failed call may still have taken effect in the broker."""
    if error.reason == "SHUTTING_DOWN":
        return False
    return error.code not in REFUSED_WHOLE
