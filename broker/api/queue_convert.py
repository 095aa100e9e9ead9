"""Protobuf ↔ domain conversion for queues."""

from __future__ import annotations

from dataclasses import replace
from typing import TypedDict

from google.protobuf import duration_pb2

from broker.api import checks, options
from broker.core.options import Defaults, TaskOptions
from broker.core.queues import QueueSettings, RetentionSettings
from broker.errors import InvalidArgument
from taskyard.v1 import queue_pb2, task_pb2

SETTABLE = (
    "max_concurrency",
    "rate_limit",
    "concurrency_key_limit",
    "max_depth",
    "retry_policy",
    "timeouts",
    "retention",
)


class _Changes(TypedDict, total=False):
    """The QueueSettings fields an update may set (checked against `replace`)."""

    max_concurrency: int | None
    concurrency_key_limit: int | None
    max_depth: int | None
    rate_limit: int | None
    rate_interval_us: int | None
    options: TaskOptions
    retention: RetentionSettings


def _us(field: str, d: duration_pb2.Duration) -> int:
    return checks.span_us(field, d)


def _duration(us: int) -> duration_pb2.Duration:
    out = duration_pb2.Duration()
    out.FromMicroseconds(us)
    return out


def settings_from(q: queue_pb2.Queue, base: QueueSettings, paths: set[str]) -> QueueSettings:
    """`base` with the fields named in `paths` taken from `q`."""
    unknown = paths - set(SETTABLE)
    if unknown:
        raise InvalidArgument(
            f"update_mask names fields that cannot be set: {sorted(unknown)}; settable: "
            f"{', '.join(SETTABLE)}",
            reason="INVALID_UPDATE_MASK",
        )
    changes: _Changes = {}
    if "max_concurrency" in paths:
        changes["max_concurrency"] = _positive_or_none("max_concurrency", q.max_concurrency)
    if "concurrency_key_limit" in paths:
        changes["concurrency_key_limit"] = _positive_or_none(
            "concurrency_key_limit", q.concurrency_key_limit
        )
    if "max_depth" in paths:
        changes["max_depth"] = _positive_or_none("max_depth", q.max_depth)
    if "rate_limit" in paths:
        has = q.HasField("rate_limit")
        changes["rate_limit"] = q.rate_limit.limit if has else None
        changes["rate_interval_us"] = (
            _us("rate_limit.interval", q.rate_limit.interval) if has else None
        )
    if "retry_policy" in paths or "timeouts" in paths:
        spec = task_pb2.Task(retry_policy=q.retry_policy, timeouts=q.timeouts)
        given = options.task_options(spec)
        merged = base.options
        if "retry_policy" in paths:
            merged = _take(merged, given, _RETRY_OPTION_FIELDS)
        if "timeouts" in paths:
            merged = _take(merged, given, _TIMEOUT_OPTION_FIELDS)
        changes["options"] = merged
    if "retention" in paths:
        r = q.retention
        changes["retention"] = RetentionSettings(
            succeeded_us=_us("retention.succeeded", r.succeeded)
            if r.HasField("succeeded")
            else None,
            failed_us=_us("retention.failed", r.failed) if r.HasField("failed") else None,
            cancelled_us=_us("retention.cancelled", r.cancelled)
            if r.HasField("cancelled")
            else None,
        )
    return replace(base, **changes)


_RETRY_OPTION_FIELDS = (
    "max_attempts", "strategy", "initial_backoff_us", "backoff_coefficient", "max_backoff_us",
    "jitter", "non_retryable_error_types", "max_lease_losses", "retryable_error_types",
)  # fmt: skip


_TIMEOUT_OPTION_FIELDS = (
    "execution_timeout_us", "heartbeat_timeout_us", "soft_timeout_us", "expiry_us",
)  # fmt: skip


def _take(keep: TaskOptions, given: TaskOptions, names: tuple[str, ...]) -> TaskOptions:
    """`keep` with the named fields replaced by `given`'s (None included)."""
    return replace(keep, **{name: getattr(given, name) for name in names})


def _positive_or_none(field: str, value: int) -> int | None:
    if value < 0:
        raise InvalidArgument(
            f"{field} must be 0 (no limit) or more, got {value}", reason="INVALID_QUEUE_SETTINGS"
        )
    return value or None


def check_defaults(settings: QueueSettings, defaults: Defaults) -> None:
    """The queue's task defaults must resolve to a usable policy (INVALID_ARGUMENT if not)."""
    defaults.resolve(TaskOptions(), queue=settings.name, type_="", queue_options=settings.options)


def queue(settings: QueueSettings, defaults: Defaults) -> queue_pb2.Queue:
    out = queue_pb2.Queue(
        name=settings.name,
        paused=settings.paused,
        pause_note=settings.pause_note,
        max_concurrency=settings.max_concurrency or 0,
        concurrency_key_limit=settings.concurrency_key_limit or 0,
        max_depth=settings.max_depth or 0,
    )
    if settings.rate_limit is not None and settings.rate_interval_us is not None:
        out.rate_limit.limit = settings.rate_limit
        out.rate_limit.interval.CopyFrom(_duration(settings.rate_interval_us))
    policy, _ = defaults.resolve(
        TaskOptions(), queue=settings.name, type_="", queue_options=settings.options
    )
    options.set_retry_policy(out.retry_policy, policy)
    _set_timeouts(out.timeouts, settings.options)
    r = settings.retention
    for name in ("succeeded", "failed", "cancelled"):
        value = getattr(r, f"{name}_us")
        if value is not None:
            getattr(out.retention, name).CopyFrom(_duration(value))
    out.create_time.FromMicroseconds(settings.created_at)
    out.update_time.FromMicroseconds(settings.updated_at)
    return out


def _set_timeouts(out: task_pb2.TaskTimeouts, o: TaskOptions) -> None:
    for name, value in (
        ("execution", o.execution_timeout_us),
        ("heartbeat", o.heartbeat_timeout_us),
        ("soft", o.soft_timeout_us),
        ("expiry", o.expiry_us),
    ):
        if value is not None:
            getattr(out, name).CopyFrom(_duration(value))
