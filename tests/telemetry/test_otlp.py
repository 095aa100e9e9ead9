"""OTLP export from a real broker: dispatch spans in the submitter's trace, and metrics.

A receiver in the test process plays the collector, over gRPC (--otlp-endpoint)
and over HTTP (the standard OTEL_EXPORTER_OTLP_* variables alone).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from taskyard.v1 import task_pb2, task_service_pb2
from tests.helpers import Broker, start_worker, stubs
from tests.telemetry.collector import Collector
from worker_sdk import Client

FAST_EXPORT = {
    "OTEL_BSP_SCHEDULE_DELAY": "50",  # ms between span batches
    "OTEL_METRIC_EXPORT_INTERVAL": "200",  # ms between metric exports
}


@pytest.fixture(params=["grpc", "http/protobuf"])
def protocol(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def collector(protocol: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Collector]:
    collector = Collector()
    for name, value in FAST_EXPORT.items():
        monkeypatch.setenv(name, value)
    if protocol == "http/protobuf":
        port = await collector.start_http()
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
    else:
        await collector.start_grpc()
    try:
        yield collector
    finally:
        await collector.stop()


@pytest.fixture
def broker_args(collector: Collector, protocol: str) -> list[str]:
    if protocol == "grpc":
        return ["--otlp-endpoint", f"http://127.0.0.1:{collector.port}"]
    return []  # the environment says where


@pytest.mark.sqlite_only  # export does not depend on the database
async def test_dispatch_span_joins_the_submitters_trace_and_metrics_arrive(
    broker: Broker,
    client: Client,
    collector: Collector,
    spans: InMemorySpanExporter,
    protocol: str,
    tmp_path: Path,
) -> None:
    worker = await start_worker(broker, tmp_path, name="otlp-worker")
    # First a task without trace context (a plain gRPC call): it must get no span.
    async with stubs(broker) as stub:
        request = task_service_pb2.CreateTaskRequest(task=task_pb2.Task(type="echo"))
        untraced = (await stub.tasks.CreateTask(request)).task
    await client.wait(untraced.id, timeout=30)
    task = await client.submit("echo", {"n": 1})
    await client.wait(task.id, timeout=30)

    [submit] = [s for s in spans.get_finished_spans() if s.name == "submit echo"]
    assert submit.context is not None
    # Spans leave in order: had the untraced task got one, it would come first.
    dispatch = await collector.wait_for(
        lambda: [s for s in collector.spans if s.name == "dispatch echo"]
    )
    assert len(dispatch) == 1
    span = dispatch[0]
    assert span.trace_id == submit.context.trace_id.to_bytes(16, "big")
    assert span.parent_span_id == submit.context.span_id.to_bytes(8, "big")
    attributes = {a.key: a.value for a in span.attributes}
    assert attributes["messaging.message.id"].string_value == task.id
    assert attributes["taskyard.worker.id"].string_value == "otlp-worker"
    assert attributes["taskyard.task.attempt"].int_value == 1

    def submitted() -> float:
        points = [
            p.as_int
            for m in collector.metric("taskyard.tasks.submitted")
            for p in m.sum.data_points
            if {a.key: a.value.string_value for a in p.attributes}
            == {"queue": "default", "type": "echo"}
        ]
        return max(points, default=0)

    assert await collector.wait_for(lambda: submitted() >= 2) and submitted() == 2  # both tasks
    if protocol == "http/protobuf":
        assert collector.paths == {"/v1/traces", "/v1/metrics"}
    await worker.stop()
