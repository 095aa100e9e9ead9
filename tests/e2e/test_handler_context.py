"""The handler context: `ctx.id` as on `Task`, and a name it lacks fails loudly, once."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import Broker, read_record, start_worker
from worker_sdk import Client, TaskFailed, TaskState


async def test_ctx_id_is_the_task_id(broker: Broker, client: Client, tmp_path: Path) -> None:
    worker = await start_worker(broker, tmp_path, name="w")
    task = await client.submit("context.id")
    assert await client.wait(task.id, timeout=30) == {"id": task.id, "task_id": task.id}
    await worker.stop()


async def test_an_unknown_context_attribute_fails_the_task_once_and_names_the_fix(
    broker: Broker, client: Client, tmp_path: Path
) -> None:
    worker = await start_worker(broker, tmp_path, name="w")
    task = await client.submit("context.typo", {"name": "taskid"}, max_attempts=3)
    with pytest.raises(TaskFailed) as info:
        await client.wait(task.id, timeout=30)
    await worker.stop()
    final = info.value.task
    # A typo is a bug: retrying cannot help, so the first attempt is the last.
    assert (final.state, final.attempt) == (TaskState.FAILED, 1)
    assert final.error is not None and final.error.type == "TaskContextError"
    assert "'taskid'" in final.error.message and "did you mean ctx.task_id?" in final.error.message
    assert [r[0] for r in read_record(tmp_path)] == ["run"]
