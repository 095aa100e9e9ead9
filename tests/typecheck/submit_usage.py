"""Typed submission as mypy --strict sees it (checked by `make lint`, never run).

Each `assert_type` states what mypy must infer; tests/unit/test_typed_submit_mypy.py checks
that wrong arguments are errors.
"""

from __future__ import annotations

from typing import Any, assert_type

from tests import typed_tasks as tt
from worker_sdk import Client, SyncClient, SyncTaskHandle, Task, TaskCall, TaskHandle


async def submits(client: Client) -> None:
    handle = await tt.add.submit(client, a=1, b=2)
    assert_type(handle, TaskHandle[int])
    assert_type(await handle.result(timeout=5), int)
    assert_type(await handle.cancel(), Task)
    async for update in handle.watch():
        assert_type(update, Task)
    later = await tt.add.options(priority=9, queue="other").submit(client, 1)
    assert_type(later, TaskHandle[int])
    everything = await tt.roundtrip.handle(client, "01M8ZZZZZZZZZZZZZZZZZZZZZZ").result()
    assert_type(everything, tuple[tt.Everything, bytes])
    call = tt.add.call(a=3)
    assert_type(call, TaskCall[int])
    assert_type(await tt.add.submit_many(client, [call]), list[TaskHandle[int]])
    # The context parameter is not an argument of submit.
    assert_type(await tt.with_context.submit(client, lines=2), TaskHandle[dict[str, Any]])


def submits_blocking(client: SyncClient) -> None:
    handle = tt.add.submit(client, a=1)
    assert_type(handle, SyncTaskHandle[int])
    assert_type(handle.result(timeout=5), int)
