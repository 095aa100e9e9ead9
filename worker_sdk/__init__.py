"""Taskyard's Python SDK: run task handlers (`Worker`) and submit tasks (`Client`)."""

from __future__ import annotations

from worker_sdk._admin import Distribution, Queue, QueueStats, TaskStats, WorkerInfo
from worker_sdk._client import Client, SyncClient
from worker_sdk._context import TaskContext
from worker_sdk._errors import BatchSubmitError, NonRetryableError, TaskFailed, TaskyardError
from worker_sdk._node_context import NodeContext
from worker_sdk._schedules import Schedule, ScheduleFire
from worker_sdk._types import (
    Attempt,
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
from worker_sdk._workflows import (
    NodeInfo,
    ParentResult,
    TemplateParam,
    TemplateStart,
    Workflow,
    WorkflowInfo,
    WorkflowState,
    WorkflowTemplate,
    chain,
    chord,
    group,
)

__all__ = [
    "Attempt",
    "BatchSubmitError",
    "Client",
    "Distribution",
    "NodeContext",
    "NodeInfo",
    "NonRetryableError",
    "ParentResult",
    "Progress",
    "Queue",
    "QueueStats",
    "RetryPolicy",
    "Schedule",
    "ScheduleFire",
    "SyncClient",
    "Task",
    "TaskContext",
    "TaskError",
    "TaskFailed",
    "TaskSpec",
    "TaskState",
    "TaskStats",
    "TaskyardError",
    "TemplateParam",
    "TemplateStart",
    "Timeouts",
    "Worker",
    "WorkerInfo",
    "Workflow",
    "WorkflowInfo",
    "WorkflowState",
    "WorkflowTemplate",
    "__version__",
    "chain",
    "chord",
    "group",
]
