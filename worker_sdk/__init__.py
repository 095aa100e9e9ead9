"""Taskyard's Python SDK: run task handlers (`Worker`) and submit tasks (`Client`)."""

from __future__ import annotations

from worker_sdk._admin import Caller, Distribution, Queue, QueueStats, TaskStats, WorkerInfo
from worker_sdk._client import Client, SyncClient
from worker_sdk._context import CONTEXT, TaskContext
from worker_sdk._definition import SyncTaskHandle, TaskCall, TaskDefinition, TaskHandle, task
from worker_sdk._errors import (
    BatchSubmitError,
    FieldError,
    MemoryLimitExceeded,
    NonRetryableError,
    Retry,
    TaskFailed,
    TaskyardError,
    ValidationError,
    WorkerProcessCrashed,
)
from worker_sdk._events import Event
from worker_sdk._lifecycle import Resources
from worker_sdk._process_pool import ProcessPool
from worker_sdk._schedules import Schedule, ScheduleFire
from worker_sdk._types import (
    Attempt,
    LogRecord,
    Progress,
    RetryPolicy,
    Task,
    TaskError,
    TaskSpec,
    TaskState,
    Timeouts,
)
from worker_sdk._version import __version__
from worker_sdk._worker import Worker

__all__ = [
    "CONTEXT",
    "Attempt",
    "BatchSubmitError",
    "Caller",
    "Client",
    "Distribution",
    "Event",
    "FieldError",
    "LogRecord",
    "MemoryLimitExceeded",
    "NonRetryableError",
    "ProcessPool",
    "Progress",
    "Queue",
    "QueueStats",
    "Resources",
    "Retry",
    "RetryPolicy",
    "Schedule",
    "ScheduleFire",
    "SyncClient",
    "SyncTaskHandle",
    "Task",
    "TaskCall",
    "TaskContext",
    "TaskDefinition",
    "TaskError",
    "TaskFailed",
    "TaskHandle",
    "TaskSpec",
    "TaskState",
    "TaskStats",
    "TaskyardError",
    "Timeouts",
    "ValidationError",
    "Worker",
    "WorkerInfo",
    "WorkerProcessCrashed",
    "__version__",
    "task",
]
