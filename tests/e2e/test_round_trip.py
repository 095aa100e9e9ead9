"""Tasks flow from a client through the broker to real worker processes and back."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.helpers import Broker, read_record, start_worker
from worker_sdk import Client, TaskSpec, TaskState


async def test_submitted_task_returns_the_workers_result(
    broker: Broker, client: Client, tmp_path: Path
) -> None:
    worker = await start_worker(broker, tmp_path, name="w1")
    task = await client.submit("echo", {"greeting": "hello", "n": 3, "items": [1, 2.5, None]})
    assert task.state in (TaskState.PENDING, TaskState.RUNNING)

    result = await client.wait(task.id, timeout=20)

    assert result == {"greeting": "hello", "n": 3, "items": [1, 2.5, None]}
    done = await client.get(task.id)
    assert done.state is TaskState.SUCCEEDED
    assert done.attempt == 1
    assert done.worker_id == "w1"
    assert done.start_time is not None and done.finish_time is not None
    await worker.stop()


async def test_thousand_tasks_across_three_workers_each_succeed_exactly_once(
    broker: Broker, client: Client, tmp_path: Path
) -> None:
    workers = [await start_worker(broker, tmp_path, name=f"w{i}", concurrency=8) for i in range(3)]
    tasks = await client.submit_many(TaskSpec("record", {"i": i}) for i in range(1000))
    ids = {t.id for t in tasks}
    assert len(ids) == 1000

    await asyncio.gather(*(client.wait(t.id, timeout=60) for t in tasks))

    runs = Counter(line[1] for line in read_record(tmp_path) if line[0] == "run")
    assert set(runs) == ids
    assert set(runs.values()) == {1}, "some task ran more than once"
    finished = [t async for t in client.list(state=TaskState.SUCCEEDED, page_size=1000)]
    assert {t.id for t in finished} == ids
    assert all(t.attempt == 1 for t in finished)
    assert len({t.worker_id for t in finished}) == 3, "all three workers should have taken work"
    for w in workers:
        await w.stop()


async def test_higher_priority_runs_first_and_fifo_within_a_priority(
    broker: Broker, client: Client, tmp_path: Path
) -> None:
    # Submitted before any worker exists, so dispatch order is the queue's order.
    low = [await client.submit("record", priority=0) for _ in range(3)]
    high = [await client.submit("record", priority=10) for _ in range(3)]
    mid = await client.submit("record", priority=5)
    worker = await start_worker(broker, tmp_path, name="w1", concurrency=1)

    for t in [*low, *high, mid]:
        await client.wait(t.id, timeout=20)

    order = [line[1] for line in read_record(tmp_path) if line[0] == "run"]
    assert order == [t.id for t in [*high, mid, *low]]
    await worker.stop()


async def test_delayed_task_does_not_start_before_its_run_time(
    broker: Broker, client: Client, tmp_path: Path
) -> None:
    worker = await start_worker(broker, tmp_path, name="w1")
    run_at = datetime.now(UTC) + timedelta(seconds=3)
    delayed = await client.submit("record", run_at=run_at)
    immediate = await client.submit("record")
    assert delayed.state is TaskState.SCHEDULED  # as created: its run time was 3 s away

    # Whether it is still SCHEDULED once the other finished depends on the machine's
    # speed; when it started does not.
    await client.wait(immediate.id, timeout=20)
    await client.wait(delayed.id, timeout=20)

    started = (await client.get(delayed.id)).start_time
    assert started is not None and started >= run_at
    assert started - run_at < timedelta(seconds=2), "the delayed task started late"
    await worker.stop()


async def test_worker_never_runs_more_than_its_concurrency(
    broker: Broker, client: Client, tmp_path: Path
) -> None:
    worker = await start_worker(broker, tmp_path, name="w1", concurrency=3)
    tasks = await client.submit_many(TaskSpec("sleep", {"seconds": 0.2}) for _ in range(15))

    results = await asyncio.gather(*(client.wait(t.id, timeout=30) for t in tasks))

    peak = max(r["peak"] for r in results)
    assert peak == 3, f"expected the worker to fill exactly its 3 slots, saw {peak}"
    await worker.stop()


async def test_progress_reaches_a_watcher_while_the_task_runs(
    broker: Broker, client: Client, tmp_path: Path
) -> None:
    worker = await start_worker(broker, tmp_path, name="w1")
    task = await client.submit("progress", {"steps": 3, "pause": 0.3})

    seen = [t async for t in client.watch(task.id)]

    steps = [t.progress.step for t in seen if t.progress and t.state is TaskState.RUNNING]
    assert steps == sorted(steps) and {1, 2, 3} <= set(steps)
    running = next(t for t in seen if t.progress and t.progress.step == 2)
    assert running.progress is not None
    assert running.progress.total_steps == 3 and running.progress.message == "step 2"
    assert seen[-1].state is TaskState.SUCCEEDED
    await worker.stop()


async def test_cancelling_a_pending_task_means_it_never_runs(
    broker: Broker, client: Client, tmp_path: Path
) -> None:
    task = await client.submit("record")
    cancelled = await client.cancel(task.id, reason="changed my mind")
    assert cancelled.state is TaskState.CANCELLED

    worker = await start_worker(broker, tmp_path, name="w1")
    marker = await client.submit("record")
    await client.wait(marker.id, timeout=20)

    assert [line[1] for line in read_record(tmp_path)] == [marker.id]
    final = await client.get(task.id)
    assert final.state is TaskState.CANCELLED
    assert final.error is not None and final.error.message == "changed my mind"
    again = await client.cancel(task.id)
    assert again.state is TaskState.CANCELLED
    await worker.stop()


async def test_a_worker_process_freezes_what_start_up_left_alive(
    broker: Broker, client: Client, tmp_path: Path
) -> None:
    """`run_forever` owns its process: what start-up left alive is frozen out of GC's way."""
    worker = await start_worker(broker, tmp_path, name="w1")
    task = await client.submit("gc.pacing")
    pacing = await client.wait(task.id, timeout=20)
    assert pacing["frozen"] > 10_000  # the modules, classes and functions start-up made
    await worker.stop()
