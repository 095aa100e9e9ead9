"""A broker whose OTLP collector is unreachable still serves, and stops promptly."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.helpers import Broker, start_worker
from worker_sdk import Client

# Nothing listens on port 1; each export fails and retries with backoff for
# up to the exporter's 10 s deadline.
pytestmark = pytest.mark.sqlite_only


@pytest.fixture
def broker_args() -> list[str]:
    return ["--otlp-endpoint", "http://127.0.0.1:1", "--shutdown-grace", "0.5"]


async def test_an_unreachable_collector_delays_shutdown_by_at_most_seconds(
    broker: Broker, client: Client, tmp_path: Path, spans: InMemorySpanExporter
) -> None:
    worker = await start_worker(broker, tmp_path, name="w")
    # A traced task, so that a dispatch span is stuck in export when the broker stops.
    task = await client.submit("echo", {"n": 1})
    assert await client.wait(task.id, timeout=30) == {"n": 1}
    await worker.stop()
    started = time.monotonic()
    assert await broker.stop() == 0
    # Unbounded, span and metric exports would each retry for up to 10 s.
    assert time.monotonic() - started < 7.0
