"""Per-task options and where their defaults come from.

Every option a task can set (its retry policy fields and its timeouts) may
also be given as a default for its task type, for its queue, and for the
whole broker. The most specific value wins, field by field: task, then type,
then queue, then broker. The result is resolved once, when the task is
created, and stored with it.
"""

from __future__ import annotations

from dataclasses import field, fields, replace
from functools import lru_cache
from typing import Any

from broker.core.record import record
from broker.core.retry import BackoffStrategy, RetryPolicy
from broker.errors import InvalidArgument

# The one minimum for every timeout: a heartbeat timeout shorter than this could not be
# met (the heartbeat interval is a third of it), and the others would pass before a
# worker even heard of its task.
MIN_TIMEOUT_US = 100_000


@record
class Timeouts:
    """Timeouts in microseconds; None means unlimited (heartbeat is always set)."""

    execution_us: int | None = None
    heartbeat_us: int = 10_000_000
    soft_us: int | None = None
    expiry_us: int | None = None

    def problems(self) -> list[str]:
        out = []
        for name in ("execution_us", "heartbeat_us", "soft_us", "expiry_us"):
            value = getattr(self, name)
            if value is not None and value < MIN_TIMEOUT_US:
                out.append(
                    f"timeouts.{name[:-3]} must be at least {MIN_TIMEOUT_US // 1000}ms, "
                    f"got {value}µs"
                )
        if self.soft_us is not None and (
            self.execution_us is None or self.soft_us >= self.execution_us
        ):
            out.append("timeouts.soft must be shorter than timeouts.execution")
        return out


@record
class TaskOptions:
    """A partial set of options: None means "not given here"."""

    max_attempts: int | None = None
    strategy: BackoffStrategy | None = None
    initial_backoff_us: int | None = None
    backoff_coefficient: float | None = None
    max_backoff_us: int | None = None
    jitter: float | None = None
    non_retryable_error_types: frozenset[str] | None = None
    max_lease_losses: int | None = None
    retryable_error_types: frozenset[str] | None = None
    execution_timeout_us: int | None = None
    heartbeat_timeout_us: int | None = None
    soft_timeout_us: int | None = None
    expiry_us: int | None = None

    def over(self, base: TaskOptions) -> TaskOptions:
        """These options, with the gaps filled from `base`."""
        updates = {
            f.name: getattr(base, f.name)
            for f in fields(self)
            if getattr(self, f.name) is None and getattr(base, f.name) is not None
        }
        return replace(self, **updates)


_RETRY_FIELDS = (
    "max_attempts",
    "strategy",
    "initial_backoff_us",
    "backoff_coefficient",
    "max_backoff_us",
    "jitter",
    "non_retryable_error_types",
    "max_lease_losses",
    "retryable_error_types",
)


@record
class Defaults:
    """The broker's defaults, with overrides per queue and per task type."""

    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeouts: Timeouts = field(default_factory=Timeouts)
    queues: dict[str, TaskOptions] = field(default_factory=dict)
    types: dict[str, TaskOptions] = field(default_factory=dict)

    def resolve(
        self,
        task: TaskOptions,
        *,
        queue: str,
        type_: str,
        queue_options: TaskOptions | None = None,
    ) -> tuple[RetryPolicy, Timeouts]:
        """The effective policy and timeouts of a task; INVALID_ARGUMENT if they are unusable.

        `queue_options` replaces the config file's defaults for the queue (the
        queue registry passes the queue's own, merged over the file's).
        """
        for_queue = queue_options if queue_options is not None else self.queues.get(queue)
        return _resolve(
            self.retry, self.timeouts, task, self.types.get(type_, _NONE), for_queue or _NONE
        )


_NONE = TaskOptions()


# Every input is a frozen value, and a batch of a thousand tasks usually shares
# one combination: resolving it once per combination keeps submission cheap.
@lru_cache(maxsize=1024)
def _resolve(
    retry: RetryPolicy,
    base_timeouts: Timeouts,
    task: TaskOptions,
    for_type: TaskOptions,
    for_queue: TaskOptions,
) -> tuple[RetryPolicy, Timeouts]:
    merged = task.over(for_type).over(for_queue)
    retry_updates: dict[str, Any] = {
        name: getattr(merged, name) for name in _RETRY_FIELDS if getattr(merged, name) is not None
    }
    policy = replace(retry, **retry_updates) if retry_updates else retry
    timeouts = Timeouts(
        execution_us=_first(merged.execution_timeout_us, base_timeouts.execution_us),
        heartbeat_us=_first(merged.heartbeat_timeout_us, base_timeouts.heartbeat_us) or 0,
        soft_us=_first(merged.soft_timeout_us, base_timeouts.soft_us),
        expiry_us=_first(merged.expiry_us, base_timeouts.expiry_us),
    )
    problems = policy.problems() + timeouts.problems()
    if problems:
        reason = "INVALID_RETRY_POLICY" if policy.problems() else "INVALID_TIMEOUTS"
        raise InvalidArgument("; ".join(problems), reason=reason)
    return policy, timeouts


def _first(*values: int | None) -> int | None:
    return next((v for v in values if v is not None), None)
