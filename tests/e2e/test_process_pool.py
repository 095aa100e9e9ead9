"""The process executor against a real broker: crashes, the memory ceiling, cancellation,
replacement of children, and progress and logs from a child."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from tests import typed_tasks as tt
from tests.helpers import Broker, WorkerProcess, read_record, start_worker
from worker_sdk import Client, Task, TaskState


async def typed_worker(broker: Broker, tmp_path: Path, **env: str) -> WorkerProcess:
    return await start_worker(
        broker, tmp_path, name="pool", app="tests.typed_tasks:worker", env=env
    )


async def final(client: Client, task_id: str) -> Task:
    last = None
    async for last in client.watch(task_id, timeout=90):  # noqa: B007 - the last one is wanted
        pass
    assert last is not None
    return last


async def recorded(tmp_path: Path, event: str, task_id: str) -> list[str]:
    """The record line of `event` for the task, once the worker wrote it."""
    async with asyncio.timeout(60):
        while True:
            for line in read_record(tmp_path):
                if line[:2] == [event, task_id]:
                    return line
            await asyncio.sleep(0.05)  # a file another process appends to: nothing to await


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize(
    ("how", "says"), [("segfault", "was killed by SIGSEGV"), ("exit", "exited with status 3")]
)
async def test_a_child_that_dies_fails_only_its_attempt_which_is_retried(
    broker: Broker, client: Client, tmp_path: Path, how: str, says: str
) -> None:
    worker = await typed_worker(broker, tmp_path)
    handle = await tt.crash.submit(client, how=how)
    neighbour = await tt.cpu_process.submit(client, seconds=0.3)  # shares the pool meanwhile
    pid = await handle.result(timeout=90)
    assert await neighbour.result(timeout=90) > 0.29
    first, second = await client.attempts(handle.id)
    assert first.outcome == "failed" and first.error is not None
    assert first.error.type == "WorkerProcessCrashed"
    assert says in first.error.message
    assert second.outcome == "succeeded"
    crashed_pid = int((await recorded(tmp_path, "crash-start", handle.id))[3])
    assert pid != crashed_pid and not alive(crashed_pid)
    await worker.stop()


async def test_a_child_over_the_memory_ceiling_is_killed_and_replaced(
    broker: Broker, client: Client, tmp_path: Path
) -> None:
    worker = await typed_worker(broker, tmp_path, TASKYARD_TEST_MAX_MEMORY_MB="150")
    hog = await tt.hog.submit(client, megabytes=400)
    ended = await final(client, hog.id)
    assert ended.state is TaskState.DEAD and ended.error is not None
    assert ended.error.type == "MemoryLimitExceeded"
    # The pool is whole again: both children take work.
    handles = [await tt.pid.submit(client) for _ in "ab"]
    results = await asyncio.gather(*(h.result(timeout=60) for h in handles))
    assert all(r["pid"] != r["worker"] for r in results)
    await worker.stop()


async def test_cancelling_a_task_kills_a_child_that_does_not_listen(
    broker: Broker, client: Client, tmp_path: Path
) -> None:
    worker = await typed_worker(broker, tmp_path)
    handle = await tt.spin.submit(client)
    child = int((await recorded(tmp_path, "spin-start", handle.id))[2])
    started = time.monotonic()
    await handle.cancel("enough")
    ended = await final(client, handle.id)
    while alive(child):  # a process's end cannot be awaited from here
        assert time.monotonic() - started < 5, "the child still runs"
        await asyncio.sleep(0.02)
    elapsed = time.monotonic() - started
    assert ended.state is TaskState.CANCELLED
    # The worker gives a handler 0.5 s to notice ctx.cancelled, then kills its child; the
    # rest is the cancel's round trip. Generous for a loaded machine, well short of forever.
    assert elapsed < 4.0, elapsed
    # The pool replaced the child: another process task runs.
    assert (await (await tt.pid.submit(client)).result(timeout=60))["pid"] != child
    await worker.stop()


async def test_a_child_that_listens_stops_by_itself_and_keeps_serving(
    broker: Broker, client: Client, tmp_path: Path
) -> None:
    worker = await typed_worker(broker, tmp_path, TASKYARD_TEST_POOL_SIZE="1")
    handle = await tt.spin.submit(client, cooperative=True)
    child = int((await recorded(tmp_path, "spin-start", handle.id))[2])
    await handle.cancel()
    assert (await final(client, handle.id)).state is TaskState.CANCELLED
    after = await (await tt.pid.submit(client)).result(timeout=60)
    assert after["pid"] == child  # not killed: it returned within the grace period
    await worker.stop()


async def test_children_are_replaced_after_max_tasks_per_child(
    broker: Broker, client: Client, tmp_path: Path
) -> None:
    worker = await typed_worker(
        broker, tmp_path, TASKYARD_TEST_POOL_SIZE="1", TASKYARD_TEST_MAX_TASKS="2"
    )
    pids = [(await (await tt.pid.submit(client)).result(timeout=60))["pid"] for _ in range(4)]
    assert pids[0] == pids[1] != pids[2] == pids[3], pids
    await worker.stop()


async def test_progress_and_log_records_travel_from_the_child(
    broker: Broker, client: Client, tmp_path: Path
) -> None:
    worker = await typed_worker(broker, tmp_path)
    handle = await tt.pid.submit(client, note="hello")
    result = await handle.result(timeout=60)
    assert result["pid"] != result["worker"]
    # Sent before the result, so the finished task carries them.
    progress = (await handle.get()).progress
    assert progress is not None and (progress.percent, progress.message) == (50, "half")
    assert [r.message async for r in handle.logs()] == ["in the child hello"]
    await worker.stop()


async def test_cpu_bound_tasks_run_side_by_side_in_the_pool(
    broker: Broker, client: Client, tmp_path: Path
) -> None:
    # The mechanism: two CPU-bound tasks run at the same time in two child processes, each
    # with its own GIL. How much faster that is than threads needs idle cores to measure:
    # that is the benchmark's (bench/executors.py), not a test's on a shared machine.
    worker = await typed_worker(broker, tmp_path)
    handles = [await tt.window.submit(client, seconds=0.5) for _ in range(2)]
    (start_a, end_a, pid_a), (start_b, end_b, pid_b) = await asyncio.gather(
        *(h.result(timeout=60) for h in handles)
    )
    assert pid_a != pid_b
    assert max(start_a, start_b) < min(end_a, end_b)  # their runs overlap
    await worker.stop()
