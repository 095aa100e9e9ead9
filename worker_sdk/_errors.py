"""The SDK's exceptions: one for broker errors, and the ones handlers and waiters meet."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
from google.rpc import error_details_pb2, status_pb2

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
    """A handler in a process-pool child raised; this carries what it raised, by name.

    Attributes:
        type: The exception's class name (the task's error type).
        details: Its traceback, as the child formatted it.
        non_retryable: Whether it was a `NonRetryableError`.
    """

    def __init__(self, type_: str, message: str, details: str, non_retryable: bool) -> None:
        super().__init__(message)
        self.type = type_
        self.message = message
        self.details = details
        self.non_retryable = non_retryable


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
    """A batch submission was not created in full; says exactly what was.

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
            f"{len(self.created)} of {len(results)} tasks created{extra}; first error: {first}"
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
