"""The percentile rank every bench/ report uses (`make bench`'s latency p99 included)."""

from __future__ import annotations


def rank(ordered: list[float], q: float) -> float:
    """The ceil(q·n)-th smallest of sorted values, as int(n·q) - 1 indexes it (p99 of 500 is
    the 495th)."""
    return ordered[max(0, int(len(ordered) * q) - 1)]
