"""Per-task logs end to end: ctx.log in a real worker, stored by the broker with the attempt,
read through ListTaskLogs/FollowTaskLogs, the SDK and `taskyard logs`, bounded, and deleted
with the task."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import grpc
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from broker.store.database import normalize_url
from taskyard.v1 import task_service_pb2 as ts
from tests import typed_tasks as tt
from tests.cli import taskyard
from tests.helpers import Broker, WorkerProcess, start_worker, stubs
from worker_sdk import Client, TaskyardError


async def typed_worker(broker: Broker, tmp_path: Path, **env: str) -> WorkerProcess:
    return await start_worker(
        broker, tmp_path, name="logs", app="tests.typed_tasks:worker", env=env
    )


async def stored_rows(db_url: str, task_id: str) -> int:
    engine = create_async_engine(normalize_url(db_url))
    try:
        async with engine.connect() as conn:
            query = sa.text("SELECT count(*) FROM task_log WHERE task_id = :id")
            return int((await conn.execute(query, {"id": task_id})).scalar_one())
    finally:
        await engine.dispose()


async def test_records_are_stored_with_their_attempt_and_read_back_in_pages(
    broker: Broker, client: Client, tmp_path: Path
) -> None:
    worker = await typed_worker(broker, tmp_path)
    handle = await tt.chatty.submit(client, lines=25)
    assert await handle.result(timeout=60) == 25
    records = [r async for r in client.logs(handle.id)]
    assert [r.message for r in records] == [f"record {i}" for i in range(1, 26)]
    assert [r.level for r in records][8:11] == ["INFO", "WARNING", "INFO"]
    assert {r.attempt for r in records} == {1}
    assert all(r.time is not None for r in records)
    async with stubs(broker) as s:
        pages, token = [], ""
        while True:
            page = await s.tasks.ListTaskLogs(
                ts.ListTaskLogsRequest(id=handle.id, page_size=10, page_token=token)
            )
            pages.append(len(page.records))
            token = page.next_page_token
            if not token:
                break
        assert pages == [10, 10, 5]
        only = await s.tasks.ListTaskLogs(ts.ListTaskLogsRequest(id=handle.id, attempt=2))
        assert list(only.records) == []
    await worker.stop()


@pytest.mark.parametrize(
    ("request_", "code", "reason"),
    [
        (ts.ListTaskLogsRequest(id="01M8ZZZZZZZZZZZZZZZZZZZZZZ"), "NOT_FOUND", "TASK_NOT_FOUND"),
        (ts.ListTaskLogsRequest(id="x", page_size=-1), "INVALID_ARGUMENT", "INVALID_ID"),
        (
            ts.ListTaskLogsRequest(id="01M8ZZZZZZZZZZZZZZZZZZZZZZ", page_size=-1),
            "INVALID_ARGUMENT",
            "INVALID_PAGE_SIZE",
        ),
        (
            ts.ListTaskLogsRequest(id="01M8ZZZZZZZZZZZZZZZZZZZZZZ", page_token="bogus"),
            "INVALID_ARGUMENT",
            "INVALID_PAGE_TOKEN",
        ),
    ],
)
async def test_list_task_logs_refuses_bad_requests_with_a_reason(
    broker: Broker, request_: ts.ListTaskLogsRequest, code: str, reason: str
) -> None:
    async with stubs(broker) as s:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await s.tasks.ListTaskLogs(request_)
    error = TaskyardError.from_rpc_error(info.value)
    assert (error.code.name, error.reason) == (code, reason)


async def test_follow_streams_records_as_they_come_and_ends_with_the_task(
    broker: Broker, client: Client, tmp_path: Path
) -> None:
    worker = await typed_worker(broker, tmp_path)
    handle = await tt.chatty.submit(client, lines=6, pause=0.3)
    followed = [r.message async for r in client.logs(handle.id, follow=True)]
    assert followed == [f"record {i}" for i in range(1, 7)]
    # It ended because the task did: nothing was left to wait for.
    assert (await handle.get()).done
    await worker.stop()


async def test_the_worker_bounds_an_attempt_and_says_so(
    broker: Broker, client: Client, tmp_path: Path
) -> None:
    worker = await typed_worker(broker, tmp_path, TASKYARD_TEST_LOG_LINES="5")
    handle = await tt.chatty.submit(client, lines=50)
    await handle.result(timeout=60)
    records = [r async for r in client.logs(handle.id)]
    assert [r.message for r in records[:5]] == [f"record {i}" for i in range(1, 6)]
    assert len(records) == 6 and records[-1].level == "WARNING"
    assert records[-1].message.startswith("[log truncated: this attempt reached the limit")
    await worker.stop()


@pytest.mark.parametrize("broker_args", [["--task-log-lines", "3"]])
async def test_the_broker_bounds_an_attempt_whatever_the_worker_sends(
    broker: Broker, client: Client, tmp_path: Path
) -> None:
    worker = await typed_worker(broker, tmp_path)
    handle = await tt.chatty.submit(client, lines=12, pause=0.05)  # several heartbeats' worth
    await handle.result(timeout=60)
    records = [r async for r in client.logs(handle.id)]
    assert [r.message for r in records[:3]] == ["record 1", "record 2", "record 3"]
    assert len(records) == 4 and records[-1].level == "WARNING"
    assert records[-1].message.startswith("[log truncated by the broker")
    await worker.stop()


async def test_taskyard_logs_prints_and_follows(
    broker: Broker, client: Client, tmp_path: Path
) -> None:
    worker = await typed_worker(broker, tmp_path)
    handle = await tt.chatty.submit(client, lines=3, pause=0.3)
    followed = await taskyard("logs", handle.id, "--follow", target=broker.target)
    assert followed.code == 0, followed.err
    lines = followed.out.splitlines()
    assert [line.split("  ", 1)[1].split() for line in lines] == [
        ["INFO", "#1", "record", str(i)] for i in (1, 2, 3)
    ]
    as_json = await taskyard("logs", handle.id, "--json", target=broker.target)
    rows = [json.loads(line) for line in as_json.out.splitlines()]
    assert [(r["level"], r["attempt"], r["message"]) for r in rows] == [
        ("INFO", 1, f"record {i}") for i in (1, 2, 3)
    ]
    missing = await taskyard("logs", "01M8ZZZZZZZZZZZZZZZZZZZZZZ", target=broker.target)
    assert missing.code == 1 and "01M8ZZZZZZZZZZZZZZZZZZZZZZ" in missing.err
    await worker.stop()


async def test_records_go_with_their_task(
    broker: Broker, client: Client, tmp_path: Path, db_url: str
) -> None:
    worker = await typed_worker(broker, tmp_path)
    handle = await tt.chatty.submit(client, lines=4)
    await handle.result(timeout=60)
    await worker.stop()
    assert await stored_rows(db_url, handle.id) == 4
    # Purging is what retention does, in the background, to tasks past their period.
    assert await client.purge() == 1
    assert await stored_rows(db_url, handle.id) == 0
    with pytest.raises(TaskyardError) as info:
        await asyncio.wait_for(client.logs(handle.id).__anext__(), 30)
    assert info.value.reason == "TASK_NOT_FOUND"
