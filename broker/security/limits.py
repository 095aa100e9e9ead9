"""Per-identity limits that no single request shows: submission rate and open streams.

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

from broker.security.roles import Principal


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


class SubmitRate:
    """A token bucket per identity: `rate` tasks per second, bursts up to `burst`."""

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
        """Spend `cost` tasks; None if allowed, else seconds until it would be."""
        if not self.enabled or cost <= 0:
            return None
        now = self._clock()
        bucket = self._buckets.get(identity)
        if bucket is None:
            bucket = self._buckets[identity] = _Bucket(float(self.burst), now)
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.at) * self.rate)
        bucket.at = now
        if bucket.tokens >= cost:
            bucket.tokens -= cost
            return None
        if len(self._buckets) > 10_000:
            self._forget_full(now)
        return (cost - bucket.tokens) / self.rate

    def _forget_full(self, now: float) -> None:
        """Drop buckets that have refilled: they hold nothing a fresh one would not."""
        for name, bucket in list(self._buckets.items()):
            if bucket.tokens + (now - bucket.at) * self.rate >= self.burst:
                del self._buckets[name]


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
