"""Queue settings and the arithmetic of flow control, free of I/O."""

from __future__ import annotations

from dataclasses import dataclass, field

from broker.core.options import TaskOptions
from broker.errors import InvalidArgument

# Where a task that names no queue goes, and what a worker that names none serves.
DEFAULT_QUEUE = "default"


@dataclass(frozen=True, slots=True)
class RetentionSettings:
    """Per-queue retention overrides (µs); None takes the broker's."""

    succeeded_us: int | None = None
    failed_us: int | None = None
    cancelled_us: int | None = None


@dataclass(frozen=True, slots=True)
class QueueSettings:
    name: str
    paused: bool = False
    pause_note: str = ""
    max_concurrency: int | None = None
    rate_limit: int | None = None
    rate_interval_us: int | None = None
    concurrency_key_limit: int | None = None
    max_depth: int | None = None
    options: TaskOptions = field(default_factory=TaskOptions)
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    explicit: bool = False
    created_at: int = 0
    updated_at: int = 0

    @property
    def limited(self) -> bool:
        """Whether dispatch must consult the database before leasing this queue's tasks."""
        return (
            self.max_concurrency is not None
            or self.rate_limit is not None
            or self.concurrency_key_limit is not None
        )

    def problems(self) -> list[str]:
        out = []
        for name in ("max_concurrency", "concurrency_key_limit", "rate_limit"):
            value = getattr(self, name)
            if value is not None and not 1 <= value <= 1_000_000:
                out.append(f"{name} must be between 1 and 1000000, got {value}")
        if self.max_depth is not None and self.max_depth < 1:
            out.append(f"max_depth must be at least 1, got {self.max_depth}")
        if (self.rate_limit is None) != (self.rate_interval_us is None):
            out.append("rate_limit needs both a limit and an interval")
        if self.rate_interval_us is not None and self.rate_interval_us < 1000:
            out.append(f"rate_limit.interval must be at least 1ms, got {self.rate_interval_us}µs")
        return out

    def check(self) -> QueueSettings:
        problems = self.problems()
        if problems:
            raise InvalidArgument("; ".join(problems), reason="INVALID_QUEUE_SETTINGS")
        return self


@dataclass(frozen=True, slots=True)
class Bucket:
    """A token bucket's state: tokens available as of `at` (µs)."""

    tokens: float
    at: int


def refill(bucket: Bucket | None, *, limit: int, interval_us: int, now: int) -> Bucket:
    """The bucket at `now`: full when new, refilled continuously at limit per interval."""
    if bucket is None:
        return Bucket(float(limit), now)
    rate = limit / interval_us
    # A claim whose clock reading is older than the stored one (it waited for the
    # row lock behind a later claim) must not move the bucket's time backwards,
    # or the next refill would count the same interval twice.
    at = max(now, bucket.at)
    return Bucket(min(float(limit), bucket.tokens + (at - bucket.at) * rate), at)


def next_token_at(bucket: Bucket, *, limit: int, interval_us: int) -> int:
    """When the bucket next holds a whole token."""
    missing = 1.0 - bucket.tokens
    if missing <= 0:
        return bucket.at
    return bucket.at + int(missing * interval_us / limit) + 1


def within_key_limit(
    candidates: list[tuple[str, str | None]], running: dict[str, int], *, key_limit: int, want: int
) -> list[str]:
    """Pick, in order, up to `want` of (task id, key) without any key passing `key_limit`."""
    counts = dict(running)
    chosen: list[str] = []
    for task_id, key in candidates:
        if len(chosen) >= want:
            break
        if key is not None:
            if counts.get(key, 0) >= key_limit:
                continue
            counts[key] = counts.get(key, 0) + 1
        chosen.append(task_id)
    return chosen
