"""The queue rate limit's token bucket, as pure arithmetic."""

from __future__ import annotations

from broker.core.queues import Bucket, next_token_at, refill

SECOND = 1_000_000


def test_a_new_bucket_starts_full() -> None:
    assert refill(None, limit=20, interval_us=SECOND, now=5) == Bucket(20.0, 5)


def test_a_bucket_refills_at_limit_per_interval_and_never_past_full() -> None:
    empty = Bucket(0.0, 0)
    assert refill(empty, limit=20, interval_us=SECOND, now=SECOND // 4).tokens == 5.0
    assert refill(empty, limit=20, interval_us=SECOND, now=10 * SECOND).tokens == 20.0


def test_a_claim_reading_an_older_clock_does_not_rewind_the_bucket() -> None:
    # Two claims read the clock at t1 < t2; the one at t2 takes the lock first.
    after_later_claim = Bucket(0.0, 2 * SECOND)
    stale = refill(after_later_claim, limit=20, interval_us=SECOND, now=SECOND)
    assert stale == Bucket(0.0, 2 * SECOND)
    # Time between t1 and t2 is not counted a second time afterwards.
    assert refill(stale, limit=20, interval_us=SECOND, now=2 * SECOND + SECOND // 10).tokens == (
        2.0
    )


def test_the_next_token_arrives_when_the_missing_fraction_has_refilled() -> None:
    half = Bucket(0.5, 0)
    assert next_token_at(half, limit=20, interval_us=SECOND) == SECOND // 40 + 1
    assert next_token_at(Bucket(1.0, 7), limit=20, interval_us=SECOND) == 7
