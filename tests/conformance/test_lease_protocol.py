"""Protocol conformance: each case runs against the Python and the Node.js worker.

The cases drive real worker processes through a real broker and observe them only
from outside: task states (WatchTask), the workers' log lines and the record file their
handlers append to.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.conformance.conftest import Workers
from tests.helpers import Broker
from worker_sdk import Client, TaskSpec, TaskState, Timeouts


async def wait_for(client: Client, task_id: str, *, state: TaskState, **fields: Any) -> None:
    """Follow WatchTask until the task is in `state` with the given field values."""
    async for task in client.watch(task_id):
        if task.state is state and all(getattr(task, k) == v for k, v in fields.items()):
            return
    raise AssertionError(f"task {task_id} finished without reaching {state} {fields}")


async def test_task_completes_with_the_handlers_result(client: Client, workers: Workers) -> None:
    await workers.start("w1")
    payload = {"text": "héllo", "n": 3, "ratio": 2.5, "flags": [True, False, None], "o": {}}

    task = await client.submit("conformance.echo", payload)

    assert await client.wait(task.id, timeout=30) == payload
    done = await client.get(task.id)
    assert done.state is TaskState.SUCCEEDED
    assert (done.attempt, done.worker_id) == (1, "w1")


async def test_waiting_tasks_arrive_in_batches_within_credits_and_each_runs_once(
    client: Client, workers: Workers
) -> None:
    # 40 tasks wait before the worker connects; its hello grants 10 credits, so the
    # first Assignments message carries 10 and later ones whatever credits came back.
    tasks = await client.submit_many(
        TaskSpec("conformance.sleep", {"seconds": 0.05}) for _ in range(40)
    )
    await workers.start("w1", concurrency=10)

    for task in tasks:
        assert (await client.wait(task.id, timeout=60))["attempt"] == 1

    sizes = workers.batch_sizes()
    assert sizes[0] == 10, sizes
    assert sum(sizes) == 40 and max(sizes) <= 10, sizes
    starts = sorted(line[1] for line in workers.records("start"))
    assert starts == sorted(t.id for t in tasks), "a task ran twice or not at all"


@pytest.mark.parametrize(
    ("non_retryable", "final", "attempts"),
    [
        (False, TaskState.DEAD, 2),  # retried once (max_attempts=2), then out of attempts
        (True, TaskState.FAILED, 1),  # never retried
    ],
)
async def test_failures_are_reported_and_the_broker_applies_the_retry_policy(
    client: Client, workers: Workers, non_retryable: bool, final: TaskState, attempts: int
) -> None:
    await workers.start("w1")

    task = await client.submit("conformance.fail", {"non_retryable": non_retryable}, max_attempts=2)

    await wait_for(client, task.id, state=final)
    done = await client.get(task.id)
    assert done.attempt == attempts
    assert done.error is not None
    assert done.error.type == "ConformanceError"
    assert done.error.message == f"failure on attempt {attempts}"
    assert done.error.non_retryable is non_retryable
    assert [line[2] for line in workers.records("start", task.id)] == [
        str(n) for n in range(1, attempts + 1)
    ]


async def test_cancelling_a_running_task_stops_its_handler(
    client: Client, workers: Workers
) -> None:
    await workers.start("w1")
    task = await client.submit("conformance.wait_cancel")
    await wait_for(client, task.id, state=TaskState.RUNNING)

    requested = await client.cancel(task.id, reason="conformance")
    # RUNNING with the request noted — or already CANCELLED, if the worker stopped before
    # the response read the task back.
    assert (requested.state is TaskState.RUNNING and requested.cancel_requested) or (
        requested.state is TaskState.CANCELLED
    )

    await wait_for(client, task.id, state=TaskState.CANCELLED)
    done = await client.get(task.id)
    assert done.error is not None and done.error.type == "Cancelled"
    # The handler saw the cancellation and returned; it was not left running.
    assert len(workers.records("stopped", task.id)) == 1
    assert len(workers.records("start", task.id)) == 1


# The sweep runs often so that a lease left without a heartbeat is surely taken back.
@pytest.mark.parametrize("broker_args", [["--sweep-interval", "0.2"]])
async def test_heartbeats_follow_the_tasks_own_heartbeat_timeout(
    client: Client, workers: Workers, request: pytest.FixtureRequest
) -> None:
    # The broker's default lease is 10 s, so Welcome.heartbeat_interval is 3.3 s; this
    # task's 1 s heartbeat timeout makes Assignment.heartbeat_interval 1/3 s. A worker
    # that heartbeats at the session's pace loses the lease and runs the task twice.
    await workers.start("w1")

    task = await client.submit(
        "conformance.sleep", {"seconds": 2.5}, timeouts=Timeouts(heartbeat=1)
    )

    assert await client.wait(task.id, timeout=30) == {"attempt": 1, "worker": "w1"}
    assert (await client.get(task.id)).attempt == 1
    assert len(workers.records("start", task.id)) == 1


async def test_an_attempt_past_its_execution_timeout_is_stopped_and_reports_nothing(
    client: Client, workers: Workers
) -> None:
    await workers.start("w1")

    task = await client.submit(
        "conformance.wait_cancel", max_attempts=1, timeouts=Timeouts(execution=1)
    )

    # The broker records the timeout (a retryable failure; no attempts left here)
    # and sends TIMED_OUT; the worker stops the handler and reports nothing.
    await wait_for(client, task.id, state=TaskState.DEAD)
    done = await client.get(task.id)
    assert done.error is not None and done.error.type == "ExecutionTimeout"
    await workers.started[0].wait_for_line(f"task {task.id} ran past its execution timeout")
    assert len(workers.records("start", task.id)) == 1


async def test_worker_reconnects_after_a_broker_restart_and_delivers_its_result_once(
    broker: Broker, workers: Workers
) -> None:
    worker = await workers.start("w1")
    async with Client(broker.target) as client:
        task = await client.submit("conformance.sleep", {"seconds": 0.5})
        await wait_for(client, task.id, state=TaskState.RUNNING)

    await broker.kill()
    # The handler finishes while the broker is down: its result must be kept...
    await worker.wait_for_line(f"finished task {task.id}")
    seen = worker.process.line_count
    await broker.start()  # same port, same database
    # ...and delivered after the reconnect, with the lease re-adopted, not re-run.
    await worker.connected(after=seen)
    async with Client(broker.target) as client:
        assert await client.wait(task.id, timeout=30) == {"attempt": 1, "worker": "w1"}
        assert (await client.get(task.id)).attempt == 1
        later = await client.submit("conformance.echo", "after the restart")
        assert await client.wait(later.id, timeout=30) == "after the restart"
    assert len(workers.records("start", task.id)) == 1
