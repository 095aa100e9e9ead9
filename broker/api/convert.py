"""Protobuf ↔ domain conversion for tasks and leases, in one place."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Sequence
from functools import lru_cache

from google.protobuf import timestamp_pb2

from broker.api import checks, options
from broker.config import Limits, Settings
from broker.core import task_logs, validation
from broker.core.models import (
    Claimed,
    Failure,
    LogLine,
    NewTask,
    ParentOutcome,
    Progress,
    TaskRecord,
)
from broker.core.options import Defaults, TaskOptions, Timeouts
from broker.core.queues import DEFAULT_QUEUE
from broker.core.retry import RetryPolicy
from broker.core.task_state import TaskState
from broker.errors import InvalidArgument
from broker.ids import is_ulid, new_ulid
from broker.store.task_logs import StoredLog
from taskyard.v1 import (
    payload_pb2,
    task_pb2,
    task_service_pb2,
    worker_service_pb2,
)


def _set_ts(ts: timestamp_pb2.Timestamp, us: int) -> None:
    ts.seconds, rem = divmod(us, 1_000_000)
    ts.nanos = rem * 1000


# TaskState as the proto's enum type (int at run time), bound once: asked per task.
_STATE = task_pb2.TaskState.ValueType


# --- Submission -----------------------------------------------------------------------------


def new_task(
    request: task_service_pb2.CreateTaskRequest,
    *,
    now: int,
    settings: Settings,
    defaults: Defaults,
    queue_options: Callable[[str], TaskOptions] | None = None,
    owner: str | None = None,
) -> NewTask:
    limits = settings.limits
    spec = request.task
    type_ = validation.name("task.type", spec.type, limits, reason="INVALID_TYPE")
    queue = validation.name(
        "task.queue", spec.queue or DEFAULT_QUEUE, limits, reason="INVALID_QUEUE"
    )
    payload = _payload_bytes("task.payload", spec, limits)
    # Reading a protobuf map costs even when it is empty; most tasks have none.
    labels = validation.labels(dict(spec.labels), limits) if spec.labels else None
    run_at = checks.instant_us("task.run_time", spec.run_time) if spec.HasField("run_time") else now
    if spec.HasField("retry_policy"):
        rp = spec.retry_policy
        for field, names in (
            ("non_retryable_error_types", rp.non_retryable_error_types),
            ("retryable_error_types", rp.retryable_error_types),
        ):
            for name in names:
                validation.name(
                    f"retry_policy.{field}[]", name, limits, reason="INVALID_RETRY_POLICY"
                )
    policy, timeouts = defaults.resolve(
        options.task_options(spec),
        queue=queue,
        type_=type_,
        queue_options=queue_options(queue) if queue_options else None,
    )
    key = spec.concurrency_key
    if len(key) > limits.max_string:
        raise InvalidArgument(
            f"task.concurrency_key is {len(key)} characters; the limit is {limits.max_string}",
            reason="INVALID_CONCURRENCY_KEY",
        )
    if key:
        validation.identifier("task.concurrency_key", key, reason="INVALID_CONCURRENCY_KEY")
    return NewTask(
        id=new_ulid(),
        type=type_,
        queue=queue,
        priority=spec.priority,
        payload=payload,
        labels=json.dumps(labels, separators=(",", ":")) if labels else None,
        run_at=max(run_at, now),
        created_at=now,
        max_attempts=policy.max_attempts,
        request_id=validation.request_id(request.request_id, limits),
        retry_policy=None
        if policy is defaults.retry or policy == defaults.retry
        else policy.to_json(),
        timeouts=timeouts,
        concurrency_key=key or None,
        trace_context=_trace_context(dict(spec.trace_context)) if spec.trace_context else None,
        owner=owner,
    )


_TRACE_KEYS = frozenset({"traceparent", "tracestate", "baggage"})


def _trace_context(headers: dict[str, str]) -> str | None:
    """W3C trace headers, kept as given; anything else is refused rather than stored."""
    if not headers:
        return None
    unknown = set(headers) - _TRACE_KEYS
    if unknown or any(len(v) > 1024 for v in headers.values()):
        raise InvalidArgument(
            f"task.trace_context takes traceparent, tracestate and baggage (each up to 1024 "
            f"characters); got {sorted(headers)}",
            reason="INVALID_TRACE_CONTEXT",
        )
    for key, value in headers.items():
        validation.identifier(f"task.trace_context[{key}]", value, reason="INVALID_TRACE_CONTEXT")
    return json.dumps(headers, separators=(",", ":"))


def _payload_bytes(field: str, spec: task_pb2.Task, limits: Limits) -> bytes | None:
    if not spec.HasField("payload"):
        return None
    return payload_bytes(field, spec.payload, limits)


def payload_bytes(field: str, payload: payload_pb2.Payload, limits: Limits) -> bytes | None:
    data = payload.SerializeToString()
    validation.payload_size(field, len(data), limits)
    kind = payload.WhichOneof("data")
    if kind == "json":
        checks.json_depth(f"{field}.json", payload.json)
    elif kind == "binary" and "json" in payload.content_type:
        validation.json_text(f"{field}.binary", payload.binary)
    return data or None


# A batch's tasks almost always share one policy and one set of timeouts:
# build each message once. Callers copy them (protobuf fields copy on assignment).
@lru_cache(maxsize=256)
def _policy_proto(policy: RetryPolicy) -> task_pb2.RetryPolicy:
    options.set_retry_policy(out := task_pb2.RetryPolicy(), policy)
    return out


@lru_cache(maxsize=256)
def _timeouts_proto(timeouts: Timeouts) -> task_pb2.TaskTimeouts:
    out = task_pb2.TaskTimeouts()
    if timeouts.execution_us is not None:
        out.execution.FromMicroseconds(timeouts.execution_us)
    out.heartbeat.FromMicroseconds(timeouts.heartbeat_us)
    if timeouts.soft_us is not None:
        out.soft.FromMicroseconds(timeouts.soft_us)
    if timeouts.expiry_us is not None:
        out.expiry.FromMicroseconds(timeouts.expiry_us)
    return out


def created_task(
    t: NewTask,
    spec: task_pb2.Task,
    default_policy: RetryPolicy,
    leased: Claimed | None = None,
    *,
    out: task_pb2.Task | None = None,
) -> task_pb2.Task:
    """The response for a task just inserted, built without reading it back.

    `leased` is set when the task went straight to an idle worker. `out`, when
    given, is filled in place (a batch response's item: no copy).
    """
    policy = RetryPolicy.from_json(t.retry_policy) if t.retry_policy else default_policy
    if out is None:
        out = task_pb2.Task()
    out.retry_policy.CopyFrom(_policy_proto(policy))
    out.timeouts.CopyFrom(_timeouts_proto(t.timeouts))
    out.id = t.id
    out.type = t.type
    out.queue = t.queue
    out.priority = t.priority
    out.state = _STATE(t.initial_state)
    out.max_attempts = t.max_attempts
    out.request_id = t.request_id or ""
    if spec.HasField("payload"):
        out.payload.CopyFrom(spec.payload)
    if spec.labels:
        out.labels.update(spec.labels)
    out.concurrency_key = spec.concurrency_key
    if spec.trace_context:
        out.trace_context.update(spec.trace_context)
    _set_ts(out.create_time, t.created_at)
    _set_ts(out.run_time, t.run_at)
    if t.expire_at is not None:
        _set_ts(out.expire_time, t.expire_at)
    if leased is not None:
        out.state = task_pb2.TASK_STATE_RUNNING
        out.attempt = 1
        out.worker_id = leased.worker_id
        _set_ts(out.start_time, t.created_at)
    return out


# --- Reads ----------------------------------------------------------------------------------


def task(record: TaskRecord, *, full: bool, default_policy: RetryPolicy) -> task_pb2.Task:
    out = task_pb2.Task(
        lease_losses=record.lost_count,
        id=record.id,
        type=record.type,
        queue=record.queue,
        priority=record.priority,
        state=_STATE(record.state),
        attempt=record.attempt,
        max_attempts=record.max_attempts,
        worker_id=record.worker_id or "",
        cancel_requested=record.cancel_requested,
        request_id=record.request_id or "",
        concurrency_key=record.concurrency_key or "",
    )
    if record.trace_context:
        out.trace_context.update(json.loads(record.trace_context))
    if record.workflow_id is not None:
        out.workflow_id = record.workflow_id
        out.workflow_node = record.node or ""
    _set_ts(out.create_time, record.created_at)
    _set_ts(out.run_time, record.run_at)
    if record.started_at is not None:
        _set_ts(out.start_time, record.started_at)
    if record.finished_at is not None:
        _set_ts(out.finish_time, record.finished_at)
    if record.labels:
        out.labels.update(json.loads(record.labels))
    if record.error is not None:
        e = record.error
        out.error.CopyFrom(
            task_pb2.TaskError(
                type=e.type,
                message=e.message,
                details=e.details,
                non_retryable=e.non_retryable,
                attempt=record.error_attempt or 0,
            )
        )
    if record.progress is not None:
        set_progress(out.progress, record.progress)
    policy = RetryPolicy.from_json(record.retry_policy) if record.retry_policy else default_policy
    options.set_retry_policy(out.retry_policy, policy)
    options.set_timeouts(out.timeouts, record.timeouts, record)
    if record.expire_at is not None:
        _set_ts(out.expire_time, record.expire_at)
    if full:
        if record.payload:
            out.payload.MergeFromString(record.payload)
        if record.result is not None:
            out.result.MergeFromString(record.result)
        elif record.state is TaskState.SUCCEEDED:
            out.result.SetInParent()
    return out


def set_progress(out: task_pb2.Progress, p: Progress) -> None:
    out.percent = p.percent
    out.message = p.message
    out.step = p.step
    out.total_steps = p.total_steps
    _set_ts(out.update_time, p.at_us)


def full_view(view: int, default_full: bool) -> bool:
    checks.enum("view", view, task_service_pb2.TaskView.DESCRIPTOR, reason="INVALID_VIEW")
    if view == task_service_pb2.TASK_VIEW_UNSPECIFIED:
        return default_full
    return view == task_service_pb2.TASK_VIEW_FULL


def state_filter(value: int) -> TaskState | None:
    if value == 0:
        return None
    try:
        return TaskState(value)
    except ValueError:
        raise InvalidArgument(f"state {value} is not a TaskState", reason="INVALID_STATE") from None


# --- Page tokens ----------------------------------------------------------------------------


def page_token(last_id: str, fingerprint: str) -> str:
    raw = json.dumps({"after": last_id, "f": fingerprint}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def parse_page_token(token: str, fingerprint: str) -> str | None:
    if not token:
        return None
    try:
        padded = token + "=" * (-len(token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded))
        last_id, expected = str(data["after"]), str(data["f"])
    except (ValueError, KeyError, TypeError):
        raise InvalidArgument(
            "page_token is not a token this broker issued; pass next_page_token unchanged",
            reason="INVALID_PAGE_TOKEN",
        ) from None
    if expected != fingerprint:
        raise InvalidArgument(
            "page_token belongs to a listing with different filters; keep the filters "
            "unchanged while paging",
            reason="INVALID_PAGE_TOKEN",
        )
    return last_id


def filter_fingerprint(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


# --- Leases ---------------------------------------------------------------------------------


def assignment(c: Claimed) -> worker_service_pb2.Assignment:
    out = worker_service_pb2.Assignment(
        task_id=c.id,
        lease_id=str(c.lease_id),
        type=c.type,
        queue=c.queue,
        priority=c.priority,
        attempt=c.attempt,
        max_attempts=c.max_attempts,
    )
    if c.payload:
        out.payload.MergeFromString(c.payload)
    if c.labels:
        out.labels.update(json.loads(c.labels))
    _set_ts(out.lease_expire_time, c.lease_expires_at)
    _set_ts(out.create_time, c.created_at)
    out.heartbeat_interval.FromMicroseconds(c.heartbeat_timeout_us // 3)
    if c.trace_context:
        out.trace_context.update(json.loads(c.trace_context))
    if c.deadline_at is not None:
        _set_ts(out.deadline, c.deadline_at)
    if c.soft_deadline_at is not None:
        _set_ts(out.soft_deadline, c.soft_deadline_at)
    if c.workflow_id is not None:
        _node_assignment(out, c)
    return out


def _node_assignment(out: worker_service_pb2.Assignment, c: Claimed) -> None:
    """A workflow node's assignment: where it belongs and how its parents ended."""
    out.workflow_id = c.workflow_id or ""
    out.workflow_node = c.node or ""
    for p in c.parents:
        parent_outcome(p, out.parents.add())
    out.parents_truncated = c.parents_truncated


def parent_outcome(
    p: ParentOutcome, out: worker_service_pb2.ParentOutcome | None = None
) -> worker_service_pb2.ParentOutcome:
    out = out if out is not None else worker_service_pb2.ParentOutcome()
    out.node = p.node
    out.task_id = p.task_id
    out.state = _STATE(p.state)
    out.result_omitted = p.omitted
    if p.result:
        out.result.MergeFromString(p.result)
    elif p.state is TaskState.SUCCEEDED and not p.omitted:
        out.result.SetInParent()
    if p.error is not None:
        e = p.error
        out.error.CopyFrom(
            task_pb2.TaskError(
                type=e.type, message=e.message, details=e.details, non_retryable=e.non_retryable
            )
        )
    return out


def lease_id(text: str) -> int | None:
    """A lease id as the worker quoted it; None if it cannot be one of ours."""
    if not (text.isascii() and text.isdigit()):
        return None  # int() would take "+1", " 1", "1_0" and other scripts' digits
    value = int(text)
    return value if value < 2**63 else None


def lease_ref(task_id: str, lease: str) -> int | None:
    """The lease id of a (task id, lease id) a worker quoted; None if it cannot be ours.

    A task id that is no ULID (a NUL byte, say) never reaches the database.
    """
    return lease_id(lease) if is_ulid(task_id) else None


def progress(p: task_pb2.Progress, now: int) -> Progress:
    percent = p.percent if p.percent == p.percent else 0.0  # NaN: no estimate
    return Progress(
        percent=min(max(percent, 0.0), 100.0),
        message=validation.printable(p.message[:1000]),
        step=p.step,
        total_steps=p.total_steps,
        at_us=now,
    )


def log_lines(records: Sequence[task_pb2.TaskLogRecord], now: int) -> list[LogLine]:
    """A heartbeat's log records; a record without a time gets the broker's, an unknown
    level is INFO, and a message is cut to 8 KiB."""
    return [
        LogLine(
            _log_time(r, now),
            r.level if r.level in _LOG_LEVELS else task_pb2.TASK_LOG_LEVEL_INFO,
            # Kept, never refused, like all a worker reports: control characters replaced.
            task_logs.clip(validation.printable(r.message)),
        )
        for r in records
    ]


def _log_time(r: task_pb2.TaskLogRecord, now: int) -> int:
    """A record's time as the worker gave it, or the broker's when it is unset or malformed."""
    if not r.HasField("time"):
        return now
    try:
        return checks.instant_us("log.time", r.time)
    except InvalidArgument:
        return now


_LOG_LEVELS = frozenset(task_pb2.TaskLogLevel.values()) - {task_pb2.TASK_LOG_LEVEL_UNSPECIFIED}


def log_record(stored: StoredLog) -> task_pb2.TaskLogRecord:
    out = task_pb2.TaskLogRecord(
        level=stored.level,  # type: ignore[arg-type]
        message=stored.message,
        attempt=stored.attempt,
    )
    _set_ts(out.time, stored.at_us)
    return out


def failure(f: worker_service_pb2.Failure) -> Failure:
    # What a worker reports is kept, never refused: control characters are replaced.
    return Failure(
        type=validation.printable((f.type or "Error")[:200]),
        message=validation.printable(f.message[:10_000]),
        details=validation.printable(f.details[:100_000]),
        non_retryable=f.non_retryable,
        retry_delay_us=_retry_delay(f) if f.HasField("retry_delay") else None,
    )


def _retry_delay(f: worker_service_pb2.Failure) -> int:
    d = f.retry_delay
    if d.seconds < 0 or not 0 <= d.nanos < 1_000_000_000:
        raise InvalidArgument(
            f"failure.retry_delay must be a duration of 0 or more, got {d.seconds}s {d.nanos}ns",
            reason="INVALID_RETRY_DELAY",
        )
    return int(d.seconds) * 1_000_000 + d.nanos // 1000


def set_timestamp(ts: timestamp_pb2.Timestamp, us: int) -> None:
    _set_ts(ts, us)


def micros(field: str, ts: timestamp_pb2.Timestamp) -> int:
    return checks.instant_us(field, ts)
