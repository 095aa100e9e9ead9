"""Whether and when a failed attempt runs again: error-type lists, backoff with jitter.

The broker owns retries because workers in other languages cannot share
exception classes; a worker reports only an error type, a message, whether
retrying can help and, optionally, the delay it wants (an upstream's
Retry-After). A policy is snapshotted onto each task when it is created, so
changing defaults later never changes what queued tasks were promised.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from enum import Enum

from broker.clock import MICROS


class BackoffStrategy(Enum):
    FIXED = "fixed"
    LINEAR = "linear"
    EXPONENTIAL = "exponential"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 3
    strategy: BackoffStrategy = BackoffStrategy.EXPONENTIAL
    initial_backoff_us: int = 1 * MICROS
    backoff_coefficient: float = 2.0
    max_backoff_us: int = 5 * 60 * MICROS
    # Each delay is drawn uniformly from [delay * (1 - jitter), delay].
    jitter: float = 0.2
    non_retryable_error_types: frozenset[str] = field(default_factory=frozenset)
    # Lost leases (dead or disconnected workers) have their own cap, so that a
    # flapping worker pool does not burn the handler's attempts.
    max_lease_losses: int = 10
    # When not empty, the only error types retried (an allowlist).
    retryable_error_types: frozenset[str] = field(default_factory=frozenset)

    def problems(self) -> list[str]:
        """Why this policy is invalid, as messages naming the field; empty if valid."""
        out = []
        if not 1 <= self.max_attempts <= 1000:
            out.append(f"max_attempts must be between 1 and 1000, got {self.max_attempts}")
        if self.initial_backoff_us < 0:
            out.append(f"initial_backoff must not be negative, got {self.initial_backoff_us}µs")
        if self.max_backoff_us < self.initial_backoff_us:
            out.append(
                f"max_backoff ({self.max_backoff_us}µs) must not be below initial_backoff "
                f"({self.initial_backoff_us}µs)"
            )
        if self.backoff_coefficient < 1:
            out.append(f"backoff_coefficient must be at least 1, got {self.backoff_coefficient}")
        if not 0 <= self.jitter <= 1:
            out.append(f"jitter must be between 0 and 1, got {self.jitter}")
        if not 1 <= self.max_lease_losses <= 1000:
            out.append(f"max_lease_losses must be between 1 and 1000, got {self.max_lease_losses}")
        both = self.retryable_error_types & self.non_retryable_error_types
        if both:
            out.append(
                f"error type(s) {sorted(both)} are in both retryable_error_types and "
                "non_retryable_error_types; keep each on one list"
            )
        return out

    def retries(self, error_type: str) -> bool:
        """Whether a failure of this type may be retried (attempts permitting).

        The denylist wins; an empty allowlist allows every other type.
        """
        if error_type in self.non_retryable_error_types:
            return False
        return not self.retryable_error_types or error_type in self.retryable_error_types

    def requested_us(self, requested_us: int) -> int:
        """A handler's own retry delay, bounded by `max_backoff` and not jittered."""
        return min(max(requested_us, 0), self.max_backoff_us)

    def backoff_us(self, failures: int, rng: random.Random | None = None) -> int:
        """The delay before the attempt that follows the `failures`-th failure."""
        n = max(failures, 1)
        if self.strategy is BackoffStrategy.FIXED:
            delay = float(self.initial_backoff_us)
        elif self.strategy is BackoffStrategy.LINEAR:
            delay = float(self.initial_backoff_us * n)
        else:
            delay = self.initial_backoff_us * self.backoff_coefficient ** (n - 1)
        delay = min(delay, self.max_backoff_us)
        if self.jitter:
            delay *= 1 - self.jitter * (rng or random).random()
        return int(delay)

    def to_json(self) -> str:
        data = asdict(self)
        data["strategy"] = self.strategy.value
        data["non_retryable_error_types"] = sorted(self.non_retryable_error_types)
        if self.retryable_error_types:
            data["retryable_error_types"] = sorted(self.retryable_error_types)
        else:  # policies stored before the allowlist existed read back equal
            del data["retryable_error_types"]
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> RetryPolicy:
        data = json.loads(text)
        data["strategy"] = BackoffStrategy(data["strategy"])
        data["non_retryable_error_types"] = frozenset(data["non_retryable_error_types"])
        data["retryable_error_types"] = frozenset(data.get("retryable_error_types", ()))
        return cls(**data)
