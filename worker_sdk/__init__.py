"""Taskyard's Python SDK: run task handlers (`Worker`) and submit tasks (`Client`)."""

from __future__ import annotations

from worker_sdk._client import Client, SyncClient
from worker_sdk._context import TaskContext
from worker_sdk._errors import BatchSubmitError, NonRetryableError, TaskFailed, TaskyardError
from worker_sdk._types import Progress, Task, TaskError, TaskSpec, TaskState
from worker_sdk._version import __version__
from worker_sdk._worker import Worker

__all__ = [
    "BatchSubmitError",
    "Client",
    "NonRetryableError",
    "Progress",
    "SyncClient",
    "Task",
    "TaskContext",
    "TaskError",
    "TaskFailed",
    "TaskSpec",
    "TaskState",
    "TaskyardError",
    "Worker",
    "__version__",
]
