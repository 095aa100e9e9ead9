"""Finished-in-the-last-window figures, from per-minute rollups."""

from __future__ import annotations

from broker.core.stats import recent

MINUTE = 60_000_000


def test_minutes_inside_the_window_count_whole() -> None:
    per_minute = {0: 7, MINUTE: 5}
    assert recent(per_minute, now=MINUTE + MINUTE // 2, window_us=60 * MINUTE) == 12


def test_the_current_minute_counts_whole_however_little_of_it_has_passed() -> None:
    assert recent({MINUTE: 9}, now=MINUTE + 1_000_000, window_us=MINUTE) == 9


def test_the_oldest_minute_counts_by_its_overlap_with_the_window() -> None:
    # The window [30 s, 90 s) covers the second half of minute 0.
    assert recent({0: 40, MINUTE: 10}, now=MINUTE + MINUTE // 2, window_us=MINUTE) == 30


def test_minutes_before_the_window_and_in_the_future_do_not_count() -> None:
    assert recent({0: 5, 3 * MINUTE: 5}, now=2 * MINUTE, window_us=MINUTE) == 0
