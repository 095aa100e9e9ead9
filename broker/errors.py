"""Domain errors and the one table that maps them to gRPC status codes.

Servicers raise these; `broker/status.py` turns them into a `google.rpc.Status`
with an `ErrorInfo(reason, domain="taskyard")` detail, so that clients can
match on code and reason rather than on message text.
"""

from __future__ import annotations

import grpc

DOMAIN = "taskyard"


class TaskyardError(Exception):
    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    reason: str = "INTERNAL"
    # Sent as google.rpc.RetryInfo: when the call may succeed if repeated.
    retry_after_s: float | None = None

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason


class ConfigError(Exception):
    """The broker cannot start with the settings or database it was given."""


class InvalidArgument(TaskyardError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "INVALID_ARGUMENT"


class Unauthenticated(TaskyardError):
    code = grpc.StatusCode.UNAUTHENTICATED
    reason = "UNAUTHENTICATED"


class PermissionDenied(TaskyardError):
    code = grpc.StatusCode.PERMISSION_DENIED
    reason = "PERMISSION_DENIED"


class NotFound(TaskyardError):
    code = grpc.StatusCode.NOT_FOUND
    reason = "NOT_FOUND"


class TaskNotFound(NotFound):
    reason = "TASK_NOT_FOUND"

    def __init__(self, task_id: str) -> None:
        super().__init__(f"no task with id {task_id!r}; it may never have existed or been purged")


class AlreadyExists(TaskyardError):
    code = grpc.StatusCode.ALREADY_EXISTS
    reason = "ALREADY_EXISTS"


class FailedPrecondition(TaskyardError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "FAILED_PRECONDITION"


class LeaseLost(FailedPrecondition):
    reason = "LEASE_LOST"


class ResourceExhausted(TaskyardError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "RESOURCE_EXHAUSTED"


class QueueFull(ResourceExhausted):
    reason = "QUEUE_FULL"

    def __init__(self, queue: str, max_depth: int | None) -> None:
        super().__init__(
            f"queue {queue!r} holds its maximum of {max_depth} waiting tasks; retry when it has "
            "drained, or raise its max_depth (taskyard queue update)"
        )


class Unavailable(TaskyardError):
    code = grpc.StatusCode.UNAVAILABLE
    reason = "UNAVAILABLE"


class ShuttingDown(Unavailable):
    reason = "SHUTTING_DOWN"

    def __init__(self) -> None:
        super().__init__("the broker is shutting down; retry against another replica or later")


class StorageFull(ResourceExhausted):
    """The database refuses to grow: its disk (or SQLite's size cap) is full."""

    reason = "STORAGE_FULL"
    retry_after_s = 5.0


class StorageUnavailable(Unavailable):
    """The database cannot take this broker's connection or request now (too many connections)."""

    reason = "STORAGE_UNAVAILABLE"
    retry_after_s = 1.0


class StorageReadOnly(Unavailable):
    """The database accepts no writes (a read-only standby, a read-only file or mount)."""

    reason = "STORAGE_READ_ONLY"
    retry_after_s = 5.0


class ScheduleNotFound(NotFound):
    reason = "SCHEDULE_NOT_FOUND"

    def __init__(self, name: str) -> None:
        super().__init__(f"no schedule named {name!r}; list them with ListSchedules")
