"""Structured logs: JSON lines from real broker and worker processes, and the human format."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from broker import logs
from tests.helpers import Broker, start_worker
from worker_sdk import Client, TaskFailed


@pytest.fixture
def broker_args() -> list[str]:
    return ["--log-json", "--log-level", "DEBUG"]


def json_lines(path: Path) -> list[dict[str, Any]]:
    """Every line of the file, each of which must be a JSON object."""
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    assert lines
    return [json.loads(line) for line in lines]


def find(records: list[dict[str, Any]], message: str) -> dict[str, Any]:
    found = [r for r in records if message in r["message"]]
    assert len(found) == 1, [r["message"] for r in records]
    return found[0]


async def test_broker_and_worker_write_json_lines_with_task_fields(
    broker: Broker, client: Client, tmp_path: Path, spans: InMemorySpanExporter
) -> None:
    worker = await start_worker(
        broker,
        tmp_path,
        name="json-worker",
        app="tests.telemetry.log_worker:worker",
        env={"TASKYARD_WORKER_LOG_JSON": "1"},  # the --log-json flag, through its variable
    )
    ok_async = await client.submit("log.async", queue="default")
    ok_sync = await client.submit("log.sync")
    failing = await client.submit("log.fail", max_attempts=1)
    await client.wait(ok_async.id, timeout=30)
    await client.wait(ok_sync.id, timeout=30)
    with pytest.raises(TaskFailed):
        await client.wait(failing.id, timeout=30)
    await worker.stop()
    assert broker.process is not None
    await broker.stop()

    expected = {"queue": "default", "attempt": 1, "worker": "json-worker"}
    records = json_lines(tmp_path / "json-worker.log")
    for task, message in ((ok_async, "an async handler"), (ok_sync, "a thread handler")):
        line = find(records, f"hello from {message}")
        assert line["logger"] == "tests.handler" and line["level"] == "INFO"
        assert line | {"task_id": task.id, **expected} == line
        # The worker has no tracer provider, yet the submitter's trace is current.
        [submit] = [s for s in spans.get_finished_spans() if s.name == f"submit {task.type}"]
        assert submit.context is not None
        assert line["trace_id"] == format(submit.context.trace_id, "032x")
    failure = find(records, f"task {failing.id} failed")
    assert failure["level"] == "WARNING"
    assert failure | {"task_id": failing.id, "error_type": "ValueError", **expected} == failure

    broker_records = json_lines(tmp_path / "broker.log")
    leased = find(broker_records, f"task {ok_async.id} leased")
    assert leased["level"] == "DEBUG"
    assert leased | {"task_id": ok_async.id, "task_type": "log.async", **expected} == leased
    assert any("listening on" in r["message"] for r in broker_records)


def test_human_lines_keep_their_format_and_append_the_fields() -> None:
    stream = io.StringIO()
    logs.configure("INFO", stream=stream)
    try:
        logging.getLogger("t").warning("lease %s lost", "L1", extra={"task_id": "T1", "attempt": 2})
        try:
            raise KeyError("k")
        except KeyError:
            logging.getLogger("t").exception("broken")
    finally:
        logs.configure("WARNING", stream=io.StringIO())
    first, second, *traceback = stream.getvalue().splitlines()
    assert first.endswith(" WARNING t: lease L1 lost [task_id=T1 attempt=2]")
    assert second.endswith(" ERROR t: broken")
    assert traceback[0] == "Traceback (most recent call last):"


def test_json_lines_carry_exceptions_and_unserialisable_extras() -> None:
    stream = io.StringIO()
    logs.configure("INFO", json_lines=True, stream=stream)
    try:
        try:
            raise KeyError("k")
        except KeyError:
            logging.getLogger("t").exception("broken", extra={"worker": object()})
    finally:
        logs.configure("WARNING", stream=io.StringIO())
    record = json.loads(stream.getvalue())
    assert record["message"] == "broken" and record["level"] == "ERROR"
    assert "KeyError: 'k'" in record["exception"]
    assert record["worker"].startswith("<object object")
