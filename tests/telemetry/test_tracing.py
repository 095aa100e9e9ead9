"""Trace context from the submitter to the handler, through a real broker.

The Client and a Worker run in this process with an in-memory exporter; the
broker is a real process. The handler's span must be a child of the submit
span, in the same trace, and spans the handler starts must be its children.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from opentelemetry import baggage, trace
from opentelemetry import context as otel_context
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from taskyard.v1 import task_service_pb2
from tests.helpers import Broker, stubs
from worker_sdk import Client, SyncClient, TaskContext, TaskFailed, TaskSpec, Worker

tracer = trace.get_tracer("tests.telemetry")


def make_worker(broker: Broker) -> Worker:
    worker = Worker(target=broker.target, concurrency=4, worker_id="traced-worker")

    @worker.task("traced.async")
    async def traced_async(ctx: TaskContext) -> str:
        with tracer.start_as_current_span("inside async handler"):
            return "ok"

    @worker.task("traced.sync")
    def traced_sync(ctx: TaskContext) -> str:
        with tracer.start_as_current_span("inside sync handler"):
            return "ok"

    @worker.task("traced.fail")
    async def traced_fail(ctx: TaskContext) -> None:
        raise ValueError("no luck")

    return worker


@pytest.fixture
async def worker(broker: Broker) -> AsyncIterator[Worker]:
    worker = make_worker(broker)
    running = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(running, 30)


def one(spans: InMemorySpanExporter, name: str, task_id: str | None = None) -> ReadableSpan:
    found = [
        s
        for s in spans.get_finished_spans()
        if s.name == name
        and (task_id is None or (s.attributes or {}).get("messaging.message.id") == task_id)
    ]
    assert len(found) == 1, [s.name for s in spans.get_finished_spans()]
    return found[0]


def assert_child(child: ReadableSpan, parent: ReadableSpan) -> None:
    assert child.parent is not None
    assert child.context is not None and parent.context is not None
    assert child.context.trace_id == parent.context.trace_id
    assert child.parent.span_id == parent.context.span_id


async def test_execute_span_is_a_child_of_the_submit_span(
    broker: Broker, client: Client, worker: Worker, spans: InMemorySpanExporter
) -> None:
    with tracer.start_as_current_span("request") as request:
        task = await client.submit("traced.async", {"x": 1}, queue="default")
    assert await client.wait(task.id, timeout=30) == "ok"

    submit = one(spans, "submit traced.async")
    execute = one(spans, "execute traced.async")
    inner = one(spans, "inside async handler")
    assert submit.kind is SpanKind.PRODUCER and execute.kind is SpanKind.CONSUMER
    assert submit.parent is not None and submit.parent.span_id == request.get_span_context().span_id
    assert_child(execute, submit)
    assert_child(inner, execute)
    attributes = dict(execute.attributes or {})
    assert attributes["messaging.message.id"] == task.id
    assert attributes["messaging.destination.name"] == "default"
    assert attributes["taskyard.task.attempt"] == 1
    assert attributes["taskyard.worker.id"] == "traced-worker"
    assert dict(submit.attributes or {})["messaging.message.id"] == task.id
    # The broker stored what the client injected: the submit span's context.
    async with stubs(broker) as stub:
        stored = (await stub.tasks.GetTask(task_service_pb2.GetTaskRequest(id=task.id))).task
    assert submit.context is not None
    _, trace_id, span_id, _ = stored.trace_context["traceparent"].split("-")
    assert (trace_id, span_id) == (
        format(submit.context.trace_id, "032x"),
        format(submit.context.span_id, "016x"),
    )


async def test_thread_handlers_and_sync_clients_continue_the_trace(
    broker: Broker, worker: Worker, spans: InMemorySpanExporter
) -> None:
    def submit() -> str:
        # The SyncClient runs the submission on its own thread, in the caller's context.
        with tracer.start_as_current_span("script"), SyncClient(broker.target) as sync:
            task = sync.submit("traced.sync")
            assert sync.wait(task.id, timeout=30) == "ok"
            return task.id

    task_id = await asyncio.to_thread(submit)
    submit_span = one(spans, "submit traced.sync")
    execute = one(spans, "execute traced.sync", task_id)
    assert_child(submit_span, one(spans, "script"))
    assert_child(execute, submit_span)
    assert_child(one(spans, "inside sync handler"), execute)


async def test_each_task_of_a_batch_continues_the_batch_span(
    client: Client, worker: Worker, spans: InMemorySpanExporter
) -> None:
    tasks = await client.submit_many([TaskSpec(type="traced.async") for _ in range(3)])
    for t in tasks:
        await client.wait(t.id, timeout=30)
    batch = one(spans, "submit batch")
    assert dict(batch.attributes or {})["messaging.batch.message_count"] == 3
    for t in tasks:
        assert_child(one(spans, "execute traced.async", t.id), batch)


async def test_a_failing_handler_marks_its_span_as_an_error(
    client: Client, worker: Worker, spans: InMemorySpanExporter
) -> None:
    task = await client.submit("traced.fail", max_attempts=1)
    with pytest.raises(TaskFailed):
        await client.wait(task.id, timeout=30)
    execute = one(spans, "execute traced.fail", task.id)
    assert execute.status.status_code is StatusCode.ERROR
    assert [e.name for e in execute.events] == ["exception"]
    assert_child(execute, one(spans, "submit traced.fail"))


async def test_baggage_too_large_for_the_broker_is_dropped_not_the_task(
    broker: Broker, client: Client, spans: InMemorySpanExporter
) -> None:
    # The broker refuses headers over 1024 characters; the SDK must not send them.
    small = baggage.set_baggage("tenant", "acme")
    for name, ctx, expected in (
        ("small", small, {"traceparent", "baggage"}),
        ("big", baggage.set_baggage("blob", "x" * 2000, small), {"traceparent"}),
    ):
        token = otel_context.attach(ctx)
        try:
            task = await client.submit("echo", {"case": name})
        finally:
            otel_context.detach(token)
        async with stubs(broker) as stub:
            stored = (await stub.tasks.GetTask(task_service_pb2.GetTaskRequest(id=task.id))).task
        assert set(stored.trace_context) == expected, name
