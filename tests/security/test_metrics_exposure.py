"""Metrics cannot be blinded by made-up names, /metrics listens on loopback unless told
otherwise, and a scrape token guards it."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import Broker, start_worker
from tests.telemetry.test_metrics import Samples, scrape, value
from worker_sdk import Client, TaskSpec

JUNK = 2100  # more distinct names than the exporter's 2,000 series per metric


async def _port(broker: Broker) -> int:
    assert broker.process is not None
    match = await broker.process.wait_for_line(r"metrics on http://[^:]+:(\d+)/metrics")
    return int(match.group(1))


def _series(samples: Samples, name: str) -> int:
    return sum(1 for metric, _ in samples if metric == name)


@pytest.fixture
def broker_args() -> list[str]:
    return ["--metrics-listen", "127.0.0.1:0"]


async def test_made_up_queues_and_types_do_not_push_out_a_real_queue(
    broker: Broker, client: Client, tmp_path: Path
) -> None:
    """Before: after 2,100 made-up names, a new queue showed only in the overflow series."""
    port = await _port(broker)
    await client.submit_many(TaskSpec(f"type-{i}", queue=f"queue-{i}") for i in range(JUNK))
    worker = await start_worker(broker, tmp_path, name="w", queues="fresh")
    task = await client.submit("echo", queue="fresh")
    await client.wait(task.id, timeout=30)
    m = await scrape(port)
    await worker.stop()
    assert value(m, "taskyard_tasks_submitted_total", queue="fresh", type="echo") == 1
    assert value(m, "taskyard_tasks_succeeded_total", queue="fresh", type="echo") == 1
    assert value(m, "taskyard_tasks_submitted_total", queue="_other", type="_other") == JUNK
    assert _series(m, "taskyard_tasks_submitted_total") == 2
    # The depth gauge sums the made-up queues too.
    assert value(m, "taskyard_queue_depth", queue="_other", state="pending") == JUNK
    assert _series(m, "taskyard_queue_depth") < 10


async def _start(db_url: str, tmp_path: Path, *args: str) -> Broker:
    broker = Broker(db_url=db_url, workdir=tmp_path, extra_args=list(args))
    await broker.start()
    return broker


def _get(port: int, token: str | None = None) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


async def test_a_bare_port_listens_on_loopback(db_url: str, tmp_path: Path) -> None:
    broker = await _start(db_url, tmp_path, "--metrics-listen", "0")
    try:
        assert broker.process is not None
        match = await broker.process.wait_for_line(r"metrics on http://([^:]+):(\d+)/metrics")
        assert match.group(1) == "127.0.0.1"
        assert await asyncio.to_thread(_get, int(match.group(2))) == 200
    finally:
        await broker.stop()


async def test_another_address_without_a_token_says_what_it_exposes(
    db_url: str, tmp_path: Path
) -> None:
    broker = await _start(db_url, tmp_path, "--metrics-listen", "0.0.0.0:0")
    try:
        assert broker.process is not None
        await broker.process.wait_for_line("WARNING .*metrics on 0.0.0.0:\\d+ are open to anyone")
    finally:
        await broker.stop()


async def test_a_scrape_token_is_required_when_set(db_url: str, tmp_path: Path) -> None:
    secret = tmp_path / "metrics-token"
    secret.write_text("s3cret-scrape\n")
    args = ["--metrics-listen", "127.0.0.1:0", "--metrics-token-file", str(secret)]
    broker = await _start(db_url, tmp_path, *args)
    try:
        port = await _port(broker)
        assert await asyncio.to_thread(_get, port) == 401
        assert await asyncio.to_thread(_get, port, "wrong") == 401
        assert await asyncio.to_thread(_get, port, "s3cret-scrape") == 200
    finally:
        await broker.stop()
    assert "s3cret-scrape" not in (tmp_path / "broker.log").read_text()
