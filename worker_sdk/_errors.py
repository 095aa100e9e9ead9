"""The SDK's exceptions: one for broker errors, and the ones handlers and waiters meet."""

from __future__ import annotations

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
