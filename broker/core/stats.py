"""Statistics arithmetic: minute buckets, log-histogram slots, percentiles, time series.

The ledger (`engine/ledger.py`) files events into per-minute rollups and
histogram slots with these functions; the statistics reads (`store/stats.py`,
`api/stats_service.py`) turn the rollups back into figures with the same ones.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

MINUTE_US = 60_000_000
# Histogram kinds: how long attempts ran, and how long tasks waited to start.
RUN, WAIT = 1, 2
FINISHED = ("succeeded", "failed", "cancelled", "expired")


def minute(us: int) -> int:
    """The minute bucket an instant (µs) falls in."""
    return us - us % MINUTE_US


def slot(us: int) -> int:
    """The histogram slot of a duration: 4 slots per doubling from 1 ms (about ±9%)."""
    if us < 1000:
        return 0
    return min(1 + int(4 * math.log2(us / 1000)), 127)


def slot_bounds(index: int) -> tuple[float, float]:
    """The range of durations (µs) a slot holds."""
    if index == 0:
        return 0.0, 1000.0
    return 1000 * 2 ** ((index - 1) / 4), 1000 * 2 ** (index / 4)


@dataclass(frozen=True, slots=True)
class Distribution:
    count: int
    mean_us: float
    p50_us: float
    p95_us: float
    p99_us: float


def distribution(total_us: int, histogram: Mapping[int, int]) -> Distribution:
    count = sum(histogram.values())
    if count == 0:
        return Distribution(0, 0.0, 0.0, 0.0, 0.0)
    return Distribution(
        count,
        total_us / count,
        percentile(histogram, 0.50),
        percentile(histogram, 0.95),
        percentile(histogram, 0.99),
    )


def percentile(histogram: Mapping[int, int], q: float) -> float:
    """The q-th quantile, interpolated geometrically within its slot."""
    total = sum(histogram.values())
    rank = q * total
    seen = 0
    for slot in sorted(histogram):
        n = histogram[slot]
        if seen + n >= rank:
            low, high = slot_bounds(slot)
            within = (rank - seen) / n if n else 0.0
            if low <= 0:
                return high * within
            return float(low * (high / low) ** within)
        seen += n
    return slot_bounds(max(histogram))[1]


@dataclass
class Group:
    """Rollups summed for one (queue, type), or for everything."""

    queue: str = ""
    type: str = ""
    counters: Counter[str] = field(default_factory=Counter)
    run: Counter[int] = field(default_factory=Counter)
    wait: Counter[int] = field(default_factory=Counter)
    per_minute: Counter[int] = field(default_factory=Counter)

    @property
    def success_rate(self) -> float:
        done = self.counters["succeeded"] + self.counters["failed"]
        return self.counters["succeeded"] / done if done else 0.0

    def add(self, bucket: int, counters: Mapping[str, int]) -> None:
        self.counters.update(counters)
        self.per_minute[bucket] += sum(counters.get(name, 0) for name in FINISHED)

    def absorb(self, other: Group) -> None:
        """Add another group's counts and histograms to this one."""
        self.counters.update(other.counters)
        self.run.update(other.run)
        self.wait.update(other.wait)
        self.per_minute.update(other.per_minute)


def series(per_minute: Mapping[int, int], start: int, end: int, step_us: int) -> list[int]:
    """Counts per step from start to end (µs), oldest first, empty steps as zero."""
    first = start - start % step_us
    steps = max(1, -(-(end - first) // step_us))
    out = [0] * steps
    for bucket, n in per_minute.items():
        index = (bucket - first) // step_us
        if 0 <= index < steps:
            out[index] += n
    return out


def recent(per_minute: Mapping[int, int], now: int, window_us: int) -> int:
    """Finished in the last `window_us`, counting the oldest minute by its overlap."""
    since = now - window_us
    total = 0.0
    for bucket, n in per_minute.items():
        end = bucket + MINUTE_US
        if end <= since or bucket > now:
            continue
        overlap = (min(end, now) - max(bucket, since)) / max(min(end, now) - bucket, 1)
        total += n * overlap
    return round(total)


def merge(groups: Iterable[Group]) -> Group:
    total = Group()
    for g in groups:
        total.absorb(g)
    return total


def minute_starts(start: int, end: int) -> list[int]:
    """The minute buckets from the one holding `start` up to `end` (µs), oldest first."""
    return list(range(minute(start), end, MINUTE_US))
