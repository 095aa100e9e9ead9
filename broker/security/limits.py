"""Per-identity limits that no single request shows: submission rates and open streams.

Both live in the memory of one broker process: with several replicas, each
enforces its own share (docs/security.md). The clock is injected so that the
bucket arithmetic is testable without waiting.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from broker.config import Limits
from broker.errors import ConfigError, ResourceExhausted
from broker.security.roles import Principal


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


class SubmitRate:
    """A token bucket per identity: `rate` units (tasks, bytes) per second, bursts up to `burst`."""

    def __init__(
        self, *, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def take(self, identity: str, cost: int) -> float | None:
        """Spend `cost`; None if allowed, else seconds until it would be (nothing spent)."""
        wait = self.shortfall(identity, cost)
        if wait is None:
            self.spend(identity, cost)
        return wait

    def shortfall(self, identity: str, cost: int) -> float | None:
        """None if `cost` could be spent now, else seconds until it could; spends nothing."""
        if not self.enabled or cost <= 0:
            return None
        bucket = self._refilled(identity)
        if bucket.tokens >= cost:
            return None
        if len(self._buckets) > 10_000:
            self._forget_full(bucket.at)
        return (cost - bucket.tokens) / self.rate

    def spend(self, identity: str, cost: int) -> None:
        """Take `cost` from the bucket (after `shortfall` said it may)."""
        if self.enabled and cost > 0:
            self._refilled(identity).tokens -= cost

    def _refilled(self, identity: str) -> _Bucket:
        now = self._clock()
        bucket = self._buckets.get(identity)
        if bucket is None:
            bucket = self._buckets[identity] = _Bucket(float(self.burst), now)
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.at) * self.rate)
        bucket.at = now
        return bucket

    def _forget_full(self, now: float) -> None:
        """Drop buckets that have refilled: they hold nothing a fresh one would not."""
        for name, bucket in list(self._buckets.items()):
            if bucket.tokens + (now - bucket.at) * self.rate >= self.burst:
                del self._buckets[name]


@dataclass(frozen=True, slots=True)
class OverBudget:
    """Why a submission must wait: which rate, and for how long."""

    what: str  # "tasks" or "bytes"
    wait_s: float
    rate: float
    burst: int


class SubmitBudget:
    """What one identity may submit: tasks per second and request bytes per second.

    Both buckets are checked before either is spent, so a submission refused
    by one rate costs nothing from the other. Submissions through the API and
    the tasks its schedules fire draw from the same buckets.
    """

    def __init__(self, *, tasks: SubmitRate, size: SubmitRate) -> None:
        self.tasks = tasks
        self.size = size

    def take(self, identity: str, *, tasks: int, size: int) -> OverBudget | None:
        """Spend `tasks` and `size` bytes, or say which rate refuses and for how long."""
        for what, rate, cost in (("tasks", self.tasks, tasks), ("bytes", self.size, size)):
            wait = rate.shortfall(identity, cost)
            if wait is not None:
                return OverBudget(what, wait, rate.rate, rate.burst)
        self.tasks.spend(identity, tasks)
        self.size.spend(identity, size)
        return None


def budget_of(limits: Limits, clock: Callable[[], float] = time.monotonic) -> SubmitBudget:
    """The submission budget the limits describe; a burst below one legal request is an error."""
    if 0 < limits.submit_burst < limits.max_batch and limits.submit_rate > 0:
        raise ConfigError(
            f"--submit-burst {limits.submit_burst} is below --max-batch {limits.max_batch}: "
            "a full batch could never be accepted"
        )
    if 0 < limits.submit_bytes_burst < limits.receive_bytes and limits.submit_bytes_rate > 0:
        raise ConfigError(
            f"--submit-bytes-burst {limits.submit_bytes_burst} is below the largest request, "
            f"{limits.receive_bytes} bytes (the gRPC receive limit): it could never be accepted"
        )
    tasks = SubmitRate(rate=limits.submit_rate, burst=limits.submit_burst, clock=clock)
    size = SubmitRate(rate=limits.submit_bytes_rate, burst=limits.submit_bytes_burst, clock=clock)
    return SubmitBudget(tasks=tasks, size=size)


class RateLimited(ResourceExhausted):
    reason = "RATE_LIMITED"


def rate_limited(identity: str, over: OverBudget) -> RateLimited:
    """RESOURCE_EXHAUSTED with a retry delay, naming the rate that refused."""
    unit = "tasks" if over.what == "tasks" else "bytes of requests"
    error = RateLimited(
        f"{identity} may submit {over.rate:g} {unit} per second (bursts of {over.burst}); "
        f"retry in {over.wait_s:.3f}s"
    )
    error.retry_after_s = over.wait_s
    return error


@dataclass(eq=False, slots=True)
class OpenStream:
    principal: Principal
    task: asyncio.Task[Any] | None
    revoked: bool = False


class Streams:
    """The streaming calls (Lease, WatchTask) each identity holds open, at most `limit`."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: dict[str, set[OpenStream]] = {}

    def count(self, identity: str) -> int:
        return len(self._open.get(identity, ()))

    def open(self, principal: Principal) -> OpenStream | None:
        """Register the running call's stream; None when the identity is at its limit."""
        held = self._open.setdefault(principal.name, set())
        if self.limit > 0 and len(held) >= self.limit:
            return None
        stream = OpenStream(principal, asyncio.current_task())
        held.add(stream)
        return stream

    def close(self, stream: OpenStream) -> None:
        held = self._open.get(stream.principal.name)
        if held is not None:
            held.discard(stream)
            if not held:
                del self._open[stream.principal.name]

    def revoke(self, still_valid: Callable[[Principal], bool]) -> int:
        """End the streams of callers whose credentials are gone or changed."""
        ended = 0
        for held in list(self._open.values()):
            for stream in list(held):
                if stream.revoked or still_valid(stream.principal):
                    continue
                stream.revoked = True
                if stream.task is not None:
                    stream.task.cancel()
                ended += 1
        return ended
