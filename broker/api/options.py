"""Protobuf ↔ domain conversion for retry policies, timeouts and attempts."""

from __future__ import annotations

from google.protobuf import duration_pb2
from google.protobuf.message import Message

from broker.api import checks
from broker.core.models import Attempt, TaskRecord
from broker.core.options import TaskOptions, Timeouts
from broker.core.retry import BackoffStrategy, RetryPolicy
from taskyard.v1 import task_pb2

_STRATEGY_IN = {
    task_pb2.BACKOFF_STRATEGY_FIXED: BackoffStrategy.FIXED,
    task_pb2.BACKOFF_STRATEGY_LINEAR: BackoffStrategy.LINEAR,
    task_pb2.BACKOFF_STRATEGY_EXPONENTIAL: BackoffStrategy.EXPONENTIAL,
}
_STRATEGY_OUT = {v: k for k, v in _STRATEGY_IN.items()}


def _us(message: Message, name: str) -> int | None:
    if not message.HasField(name):
        return None
    value: duration_pb2.Duration = getattr(message, name)
    return checks.span_us(f"{message.DESCRIPTOR.name}.{name}", value)


def _duration(us: int) -> duration_pb2.Duration:
    out = duration_pb2.Duration()
    out.FromMicroseconds(us)
    return out


_NOTHING_SET = TaskOptions()


def _strategy(value: int) -> task_pb2.BackoffStrategy.ValueType:
    checks.enum(
        "retry_policy.strategy",
        value,
        task_pb2.BackoffStrategy.DESCRIPTOR,
        reason="INVALID_RETRY_POLICY",
    )
    return task_pb2.BackoffStrategy.ValueType(value)


def task_options(spec: task_pb2.Task) -> TaskOptions:
    """The options a CreateTask request sets; unset fields stay None (defaults apply)."""
    if not (spec.max_attempts or spec.HasField("retry_policy") or spec.HasField("timeouts")):
        return _NOTHING_SET  # the common case, and a hot path: batches of a thousand
    rp = spec.retry_policy
    timeouts = spec.timeouts
    return TaskOptions(
        max_attempts=rp.max_attempts or spec.max_attempts or None,
        strategy=_STRATEGY_IN.get(_strategy(rp.strategy)),
        initial_backoff_us=_us(rp, "initial_backoff"),
        backoff_coefficient=rp.backoff_coefficient or None,
        max_backoff_us=_us(rp, "max_backoff"),
        jitter=rp.jitter if rp.HasField("jitter") else None,
        non_retryable_error_types=frozenset(rp.non_retryable_error_types) or None,
        max_lease_losses=rp.max_lease_losses or None,
        retryable_error_types=frozenset(rp.retryable_error_types) or None,
        execution_timeout_us=_us(timeouts, "execution"),
        heartbeat_timeout_us=_us(timeouts, "heartbeat"),
        soft_timeout_us=_us(timeouts, "soft"),
        expiry_us=_us(timeouts, "expiry"),
    )


def set_retry_policy(out: task_pb2.RetryPolicy, policy: RetryPolicy) -> None:
    out.max_attempts = policy.max_attempts
    out.strategy = _STRATEGY_OUT[policy.strategy]
    out.initial_backoff.CopyFrom(_duration(policy.initial_backoff_us))
    out.backoff_coefficient = policy.backoff_coefficient
    out.max_backoff.CopyFrom(_duration(policy.max_backoff_us))
    out.jitter = policy.jitter
    out.non_retryable_error_types[:] = sorted(policy.non_retryable_error_types)
    out.max_lease_losses = policy.max_lease_losses
    out.retryable_error_types[:] = sorted(policy.retryable_error_types)


def set_timeouts(out: task_pb2.TaskTimeouts, timeouts: Timeouts, record: TaskRecord) -> None:
    if timeouts.execution_us is not None:
        out.execution.CopyFrom(_duration(timeouts.execution_us))
    out.heartbeat.CopyFrom(_duration(timeouts.heartbeat_us))
    if timeouts.soft_us is not None:
        out.soft.CopyFrom(_duration(timeouts.soft_us))
    if record.expire_at is not None and record.attempt_base == 0:
        out.expiry.CopyFrom(_duration(record.expire_at - record.run_at))


def attempt(a: Attempt) -> task_pb2.TaskAttempt:
    out = task_pb2.TaskAttempt(
        attempt=a.attempt,
        worker_id=a.worker_id or "",
        outcome=task_pb2.AttemptOutcome.ValueType(a.outcome.value),
    )
    if a.started_at is not None:
        out.start_time.FromMicroseconds(a.started_at)
    if a.ended_at is not None:
        out.end_time.FromMicroseconds(a.ended_at)
    if a.error is not None:
        out.error.CopyFrom(
            task_pb2.TaskError(
                type=a.error.type,
                message=a.error.message,
                details=a.error.details,
                non_retryable=a.error.non_retryable,
                attempt=a.attempt,
            )
        )
    return out
