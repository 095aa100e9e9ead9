"""When a failed attempt runs again: exponential backoff with jitter.

The broker owns retries because workers in other languages cannot share
exception classes; a worker reports only an error type, a message and whether
retrying can help.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from broker.clock import MICROS


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 3
    initial_backoff_us: int = 1 * MICROS
    backoff_coefficient: float = 2.0
    max_backoff_us: int = 60 * MICROS
    # Each delay is drawn uniformly from [delay * (1 - jitter), delay].
    jitter: float = 0.2
    non_retryable_error_types: frozenset[str] = field(default_factory=frozenset)
    # Lost leases (dead or disconnected workers) have their own cap, so that a
    # flapping worker pool does not burn the handler's attempts.
    max_lost_leases: int = 10

    def backoff_us(self, failures: int, rng: random.Random | None = None) -> int:
        """The delay before the attempt that follows the `failures`-th failure."""
        delay = self.initial_backoff_us * self.backoff_coefficient ** max(failures - 1, 0)
        delay = min(delay, self.max_backoff_us)
        if self.jitter:
            delay *= 1 - self.jitter * (rng or random).random()
        return int(delay)
