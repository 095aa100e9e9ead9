"""Request building and response reading shared by the async and the sync client."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import grpc

from taskyard.v1 import task_pb2, task_service_pb2
from worker_sdk import _tracing
from worker_sdk._errors import TaskyardError
from worker_sdk._payload import to_payload
from worker_sdk._types import RetryPolicy, Task, TaskSpec, TaskState, Timeouts

DEFAULT_TARGET = "127.0.0.1:50051"
MAX_BATCH = 1000
# Bytes per batched message (BatchCreateTasks, a Lease message's completions):
# half the broker's default --max-batch-bytes, so batches of large payloads fit
# its receive limit. One item larger than this goes in a message of its own.
MAX_BATCH_BYTES = 2 * 1024 * 1024

CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 32 * 1024 * 1024),
    ("grpc.max_send_message_length", 32 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    # Reconnect quickly after a broker restart; the SDK adds its own backoff
    # with jitter on top while a broker stays away.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
]


def spec_of(
    type: str,
    payload: Any = None,
    *,
    queue: str | None = None,
    priority: int = 0,
    run_at: datetime | None = None,
    delay: float | timedelta | None = None,
    labels: dict[str, str] | None = None,
    max_attempts: int | None = None,
    request_id: str | None = None,
    retry_policy: RetryPolicy | None = None,
    timeouts: Timeouts | None = None,
    concurrency_key: str | None = None,
) -> TaskSpec:
    if run_at is not None and delay is not None:
        raise ValueError("pass run_at or delay, not both")
    if max_attempts is not None and max_attempts < 1:
        # On the wire 0 means "the default": refuse it here rather than let an
        # explicit 0 quietly become 3.
        raise ValueError(f"max_attempts must be at least 1, got {max_attempts}; None = default")
    if delay is not None:
        seconds = delay.total_seconds() if isinstance(delay, timedelta) else float(delay)
        run_at = datetime.now().astimezone() + timedelta(seconds=seconds)
    if run_at is not None and run_at.tzinfo is None:
        raise ValueError("run_at must be time-zone aware, e.g. datetime.now(UTC)")
    return TaskSpec(
        type=type,
        payload=payload,
        queue=queue,
        priority=priority,
        run_at=run_at,
        labels=dict(labels or {}),
        max_attempts=max_attempts,
        request_id=request_id,
        retry_policy=retry_policy,
        timeouts=timeouts,
        concurrency_key=concurrency_key,
    )


def create_request(spec: TaskSpec) -> task_service_pb2.CreateTaskRequest:
    task = task_pb2.Task(
        type=spec.type,
        queue=spec.queue or "",
        priority=spec.priority,
        labels=spec.labels,
        max_attempts=spec.max_attempts or 0,
    )
    if spec.payload is not None:
        task.payload.CopyFrom(to_payload(spec.payload))
    if spec.run_at is not None:
        task.run_time.FromDatetime(spec.run_at)
    if spec.retry_policy is not None:
        task.retry_policy.CopyFrom(spec.retry_policy.to_proto())
    if spec.timeouts is not None:
        task.timeouts.CopyFrom(spec.timeouts.to_proto())
    if spec.concurrency_key:
        task.concurrency_key = spec.concurrency_key
    _tracing.inject(task.trace_context)
    return task_service_pb2.CreateTaskRequest(task=task, request_id=spec.request_id or "")


def batch_request(specs: Sequence[TaskSpec]) -> task_service_pb2.BatchCreateTasksRequest:
    return task_service_pb2.BatchCreateTasksRequest(requests=[create_request(s) for s in specs])


def chunk_ranges(specs: Sequence[TaskSpec], chunk_size: int) -> list[tuple[int, int]]:
    """[start, end) of each call: at most `chunk_size` tasks and MAX_BATCH_BYTES of requests
    (the broker's receive limit is a few MiB); a larger task goes alone."""
    ranges: list[tuple[int, int]] = []
    start, size = 0, 0
    for index, spec in enumerate(specs):
        item_size = create_request(spec).ByteSize() + 8  # the field's tag and length
        if index > start and (index - start == chunk_size or size + item_size > MAX_BATCH_BYTES):
            ranges.append((start, index))
            start, size = index, 0
        size += item_size
    if start < len(specs):
        ranges.append((start, len(specs)))
    return ranges


def batch_items(
    response: task_service_pb2.BatchCreateTasksResponse,
) -> list[Task | TaskyardError]:
    """One entry per item of a BatchCreateTasks answer: its task, or why it was rejected."""
    results: list[Task | TaskyardError] = []
    for item in response.results:
        if item.HasField("task"):
            results.append(Task.from_proto(item.task))
        else:
            code = next(
                (c for c in grpc.StatusCode if c.value[0] == item.error.code),
                grpc.StatusCode.UNKNOWN,
            )
            results.append(TaskyardError(code, item.error.reason, item.error.message))
    return results


def not_sent(error: TaskyardError) -> TaskyardError:
    return TaskyardError(
        grpc.StatusCode.CANCELLED,
        "NOT_SENT",
        f"not sent: an earlier chunk of the batch failed ({error.reason})",
    )


def list_request(
    *,
    queue: str | None,
    state: TaskState | str | None,
    type: str | None,
    page_size: int,
    page_token: str,
    full: bool,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    labels: Mapping[str, str] | None = None,
) -> task_service_pb2.ListTasksRequest:
    request = task_service_pb2.ListTasksRequest(
        labels=dict(labels or {}),
        queue=queue or "",
        state=TaskState(state).to_proto() if state else 0,  # type: ignore[arg-type]
        type=type or "",
        page_size=page_size,
        page_token=page_token,
        view=task_service_pb2.TASK_VIEW_FULL if full else task_service_pb2.TASK_VIEW_BASIC,
    )
    for field, when in (
        ("create_time_after", created_after),
        ("create_time_before", created_before),
    ):
        if when is not None:
            if when.tzinfo is None:
                raise ValueError(f"{field} must be time-zone aware, e.g. datetime.now(UTC)")
            getattr(request, field).FromDatetime(when)
    return request


def purge_request(
    *,
    queue: str | None,
    states: Iterable[TaskState | str],
    finished_before: datetime | None,
) -> task_service_pb2.PurgeTasksRequest:
    request = task_service_pb2.PurgeTasksRequest(
        queue=queue or "",
        states=[TaskState(s).to_proto() for s in states],
    )
    if finished_before is not None:
        request.finish_time_before.FromDatetime(finished_before)
    return request
