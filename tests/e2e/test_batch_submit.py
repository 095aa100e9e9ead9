"""`submit_many` against a real broker: chunks, rate limits waited out, and an exact account
of what was created when a later chunk fails."""

from __future__ import annotations

import time

import pytest

from worker_sdk import BatchSubmitError, Client, TaskSpec, TaskyardError

# 200 tasks a second with bursts of 1,000: the first 1,000 go at once, then the bucket is dry.
pytestmark = pytest.mark.parametrize(
    "broker_args", [["--submit-rate", "200", "--submit-burst", "1000"]]
)


async def count(client: Client) -> int:
    return len([t async for t in client.list(page_size=1000)])


async def test_a_rate_limited_chunk_is_sent_again_after_the_brokers_hint(
    client: Client,
) -> None:
    specs = [TaskSpec("later", {"i": i}) for i in range(1200)]
    started = time.monotonic()
    created = await client.submit_many(specs, chunk_size=400)
    elapsed = time.monotonic() - started
    assert [t.payload["i"] for t in created] == list(range(1200))
    # The third chunk waited for the bucket: 200 tasks at 200/s is about a second.
    assert elapsed >= 0.9, elapsed
    assert await count(client) == 1200


async def test_a_later_chunk_that_fails_says_exactly_what_was_created(client: Client) -> None:
    specs = [TaskSpec("later", {"i": i}) for i in range(1600)]
    with pytest.raises(BatchSubmitError) as info:
        await client.submit_many(specs, chunk_size=400, rate_limit_wait=0.2)
    error = info.value
    assert [t.payload["i"] for t in error.created] == list(range(800))
    refused = error.results[800:1200]
    assert all(isinstance(r, TaskyardError) and r.reason == "RATE_LIMITED" for r in refused)
    unsent = error.results[1200:]
    assert all(isinstance(r, TaskyardError) and r.reason == "NOT_SENT" for r in unsent)
    assert error.uncertain == []  # a refused chunk created nothing: nothing is in doubt
    assert await count(client) == 800


async def test_items_the_broker_rejects_do_not_stop_the_other_chunks(client: Client) -> None:
    specs = [
        TaskSpec("later"),
        TaskSpec("later", queue="no spaces allowed"),
        TaskSpec("later"),
        TaskSpec("later"),
    ]
    with pytest.raises(BatchSubmitError) as info:
        await client.submit_many(specs, chunk_size=2)
    assert [type(r).__name__ for r in info.value.results] == [
        "Task",
        "TaskyardError",
        "Task",
        "Task",
    ]
    assert len(info.value.created) == 3 and await count(client) == 3
