"""Conformance: a handler chooses its own retry delay, and a policy chooses which errors retry.

Each case runs against the Python SDK worker (`ctx.retry`, i.e. `raise Retry(...)`) and the
Node.js worker (`ctx.retry`, i.e. `throw new Retry(...)`): both put the delay in
`Failure.retry_delay`, and the broker decides (docs/protocol.md §6 and §11).
"""

from __future__ import annotations

from datetime import timedelta

from tests.conformance.conftest import Workers
from tests.conformance.test_lease_protocol import wait_for
from worker_sdk import Client, RetryPolicy, TaskState

HOUR = 3600.0


async def test_the_handlers_retry_delay_replaces_the_policys_backoff(
    client: Client, workers: Workers
) -> None:
    # The policy alone would wait an hour before attempt 2; the handler asks for 1.5 s.
    await workers.start("w1")
    policy = RetryPolicy(max_attempts=3, initial_backoff=HOUR, max_backoff=2 * HOUR)

    task = await client.submit("conformance.retry_after", {"delay": 1.5}, retry_policy=policy)

    assert await client.wait(task.id, timeout=60) == {"attempt": 2}
    first, second = await client.attempts(task.id)
    assert first.outcome == "failed" and first.error is not None
    assert (first.error.type, first.error.message) == ("RateLimited", "rate limited on attempt 1")
    assert first.end_time is not None and second.start_time is not None
    # The broker made the task due exactly 1.5 s after the failure, and no sooner.
    assert second.start_time - first.end_time >= timedelta(seconds=1.5)
    assert len(workers.records("start", task.id)) == 2


async def test_a_requested_delay_is_capped_and_still_uses_up_the_attempts(
    client: Client, workers: Workers
) -> None:
    # The handler asks for an hour every time; max_backoff caps each wait at 1 s, and
    # after max_attempts the task is dead like any failing task.
    await workers.start("w1")
    policy = RetryPolicy(max_attempts=2, initial_backoff=0.1, max_backoff=1)

    task = await client.submit(
        "conformance.retry_after", {"delay": HOUR, "succeed_on": 99}, retry_policy=policy
    )

    await wait_for(client, task.id, state=TaskState.DEAD)
    done = await client.get(task.id)
    assert done.attempt == 2 and done.error is not None and done.error.type == "RateLimited"
    first, second = await client.attempts(task.id)
    assert first.end_time is not None and second.start_time is not None
    gap = second.start_time - first.end_time
    assert timedelta(seconds=1) <= gap < timedelta(minutes=30), gap


async def test_an_allowlist_retries_only_the_error_types_it_names(
    client: Client, workers: Workers
) -> None:
    await workers.start("w1")
    policy = RetryPolicy(
        max_attempts=3, initial_backoff=0.1, retryable_error_types=("RateLimited",)
    )

    listed = await client.submit("conformance.retry_after", {"delay": 0.1}, retry_policy=policy)
    unlisted = await client.submit("conformance.fail", retry_policy=policy)

    assert await client.wait(listed.id, timeout=60) == {"attempt": 2}
    await wait_for(client, unlisted.id, state=TaskState.FAILED)
    done = await client.get(unlisted.id)
    # ConformanceError is retryable in itself; the allowlist alone stopped it after one attempt.
    assert done.attempt == 1 and done.error is not None
    assert (done.error.type, done.error.non_retryable) == ("ConformanceError", False)
    assert done.retry_policy is not None
    assert done.retry_policy.retryable_error_types == ("RateLimited",)
