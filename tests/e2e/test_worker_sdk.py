"""The Python worker SDK: handlers of both kinds, failures, draining, reconnecting."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.helpers import Broker, read_record, start_worker, wait_for_record
from worker_sdk import Client, TaskFailed, TaskState


async def test_plain_function_handlers_run_in_threads(
    broker: Broker, client: Client, tmp_path: Path
) -> None:
    worker = await start_worker(broker, tmp_path, name="w1")
    task = await client.submit("record.sync", {"x": 1})
    assert await client.wait(task.id, timeout=20) == {"x": 1}
    await worker.stop()


async def test_handler_exceptions_are_retried_until_the_task_is_dead(
    broker: Broker, client: Client, tmp_path: Path
) -> None:
    worker = await start_worker(broker, tmp_path, name="w1")
    task = await client.submit("fail", max_attempts=2)
    with pytest.raises(TaskFailed) as info:
        await client.wait(task.id, timeout=30)
    dead = info.value.task
    assert dead.state is TaskState.DEAD and dead.attempt == 2
    assert dead.error is not None
    assert (dead.error.type, dead.error.message) == ("ValueError", "failure on attempt 2")
    assert "Traceback" in dead.error.details
    await worker.stop()


async def test_non_retryable_error_fails_the_task_at_once(
    broker: Broker, client: Client, tmp_path: Path
) -> None:
    worker = await start_worker(broker, tmp_path, name="w1")
    task = await client.submit("fail", {"permanent": True}, max_attempts=5)
    with pytest.raises(TaskFailed) as info:
        await client.wait(task.id, timeout=20)
    assert info.value.task.state is TaskState.FAILED and info.value.task.attempt == 1
    assert info.value.task.error is not None
    assert info.value.task.error.type == "NonRetryableError"
    await worker.stop()


async def test_a_result_that_is_not_json_is_a_clear_failure(
    broker: Broker, client: Client, tmp_path: Path
) -> None:
    worker = await start_worker(broker, tmp_path, name="w1")
    task = await client.submit("bad.result")
    with pytest.raises(TaskFailed) as info:
        await client.wait(task.id, timeout=20)
    error = info.value.task.error
    assert info.value.task.state is TaskState.FAILED
    assert error is not None and error.type == "ResultNotSerializable"
    assert "not JSON-serialisable" in error.message
    await worker.stop()


async def test_sigterm_lets_running_tasks_finish_then_exits(
    broker: Broker, client: Client, tmp_path: Path
) -> None:
    worker = await start_worker(broker, tmp_path, name="w1")
    task = await client.submit("sleep", {"seconds": 1.0})
    # Its handler runs, not only its lease: an assignment still on its way when SIGTERM
    # arrives is released unstarted, as it should be (a loaded machine widens that window).
    await wait_for_record(tmp_path, "start", task.id, 1)
    await worker.process.signal(signal.SIGTERM)
    assert await worker.process.wait(timeout=20) == 0
    final = await client.get(task.id)
    assert final.state is TaskState.SUCCEEDED and final.attempt == 1


async def test_worker_keeps_its_task_across_a_broker_restart(
    broker: Broker, client: Client, tmp_path: Path
) -> None:
    worker = await start_worker(broker, tmp_path, name="w1")
    task = await client.submit("sleep", {"seconds": 2.0})
    async for seen in client.watch(task.id):
        if seen.state is TaskState.RUNNING:
            break
    mark = worker.process.line_count
    await broker.stop()
    await broker.start()
    await worker.connected(after=mark)

    async with Client(broker.target) as fresh:
        result = await fresh.wait(task.id, timeout=30)
        final = await fresh.get(task.id)
    assert result == {"peak": 1}
    # Same attempt: the worker re-adopted its lease and reported to the new broker.
    assert final.state is TaskState.SUCCEEDED and final.attempt == 1
    starts = [line for line in read_record(tmp_path) if line[1] == task.id]
    assert len(starts) == 1
    await worker.stop()


@pytest.mark.sqlite_only
async def test_a_second_broker_on_the_same_sqlite_file_is_refused(
    broker: Broker, tmp_path: Path
) -> None:
    second = Broker(db_url=broker.db_url, workdir=tmp_path / "second")
    second.workdir.mkdir()
    with pytest.raises(RuntimeError, match="exited"):
        await second.start()
    log = (second.workdir / "broker.log").read_text()
    assert "another broker is using" in log


async def test_a_newer_schema_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    import sqlite3

    db_path = tmp_path / "future.db"
    broker = Broker(db_url=f"sqlite+aiosqlite:///{db_path}", workdir=tmp_path)
    await broker.start()
    await broker.stop()
    with sqlite3.connect(db_path) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
    with pytest.raises(RuntimeError, match="exited"):
        await broker.start()
    assert "newer than this broker knows" in (tmp_path / "broker.log").read_text()
