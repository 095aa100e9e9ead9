"""Lifecycle hooks and middleware in a real worker: order, outcomes, and contained failures."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests import typed_tasks as tt
from tests.helpers import Broker, WorkerProcess, read_record, start_worker
from worker_sdk import Client, Task, TaskState


async def typed_worker(broker: Broker, tmp_path: Path, **env: str) -> WorkerProcess:
    return await start_worker(
        broker, tmp_path, name="hooks", app="tests.typed_tasks:worker", env=env
    )


async def final(client: Client, task_id: str) -> Task:
    last = None
    async for last in client.watch(task_id, timeout=90):  # noqa: B007 - the last one is wanted
        pass
    assert last is not None
    return last


async def events_of(tmp_path: Path, task_id: str, count: int) -> list[str]:
    """The first `count` recorded events of a task, once the worker wrote them."""
    async with asyncio.timeout(60):
        while True:
            mine = [
                " ".join([line[0], *line[2:]])
                for line in read_record(tmp_path)
                if len(line) > 1 and line[1] == task_id
            ]
            if len(mine) >= count:
                return mine
            await asyncio.sleep(0.05)  # a file another process appends to: nothing to await


async def test_hooks_and_middleware_run_in_order_and_see_the_outcome(
    broker: Broker, client: Client, tmp_path: Path
) -> None:
    worker = await typed_worker(broker, tmp_path)
    assert read_record(tmp_path)[0][0] == "startup"
    added = await tt.add.submit(client, a=2, b=3)
    assert await added.result(timeout=60) == 5
    assert await events_of(tmp_path, added.id, 4) == [
        "before typed.add",
        "after returned 5",
        "definition-success 5",  # the definition's hooks first, then the worker's
        "success typed.add",
    ]
    failing = await tt.fail.submit(client)  # two attempts by its policy
    assert (await final(client, failing.id)).state is TaskState.DEAD
    # The broker's answer decides: the first failure is retried, the second is final.
    assert await events_of(tmp_path, failing.id, 7) == [
        "before typed.fail",
        "after raised ValueError",
        "definition-retry ValueError",
        "retry ValueError",
        "before typed.fail",
        "after raised ValueError",
        "failure ValueError",
    ]
    await worker.stop()
    assert read_record(tmp_path)[-1] == ["shutdown", "-", "a-pool"]


async def test_a_hook_that_raises_is_logged_with_the_task_id_and_changes_nothing(
    broker: Broker, client: Client, tmp_path: Path
) -> None:
    worker = await typed_worker(broker, tmp_path, TASKYARD_TEST_BROKEN_HOOK="1")
    added = await tt.add.submit(client, a=1)
    assert await added.result(timeout=60) == 2
    await worker.process.wait_for_line(
        rf"on_success hook _succeeded failed for task {added.id}; the task's outcome stands"
    )
    assert (await added.get()).state is TaskState.SUCCEEDED
    # The broken on_retry hook does not stop the retry either, and the worker goes on.
    failing = await tt.fail.submit(client)
    assert (await final(client, failing.id)).attempt == 2
    await worker.process.wait_for_line(rf"on_retry hook _failed_once failed for task {failing.id}")
    assert await (await tt.add.submit(client, a=10)).result(timeout=60) == 11
    assert await worker.stop() == 0


async def test_middleware_that_raises_fails_the_attempt_like_the_handler(
    broker: Broker, client: Client, tmp_path: Path
) -> None:
    worker = await typed_worker(broker, tmp_path, TASKYARD_TEST_BROKEN_MIDDLEWARE="1")
    handle = await tt.add.options(max_attempts=1).submit(client, a=1)
    ended = await final(client, handle.id)
    assert ended.state is TaskState.DEAD and ended.error is not None
    assert (ended.error.type, ended.error.message) == ("RuntimeError", "a broken middleware")
    assert await events_of(tmp_path, handle.id, 2) == ["before typed.add", "failure RuntimeError"]
    await worker.stop()


async def test_a_start_up_hook_that_raises_stops_the_worker(broker: Broker, tmp_path: Path) -> None:
    worker = await start_worker(
        broker, tmp_path, name="broken", app="tests.typed_tasks:worker",
        env={"TASKYARD_TEST_BROKEN_STARTUP": "1"}, wait_connected=False,
    )  # fmt: skip
    assert await worker.process.wait(60) != 0
    await worker.process.wait_for_line("the database is not there")
