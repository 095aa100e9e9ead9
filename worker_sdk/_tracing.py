"""Trace context and log fields for tasks; OpenTelemetry is optional.

Submitting injects the caller's W3C trace context into the task; running a
task continues it, so a handler's span is a child of the submitter's span
whichever language either side is written in (docs/observability.md).

Only `opentelemetry-api` is used, and only when it is importable. Spans are
started only when an application has installed a tracer provider; without
one, a context that arrived with a task is still made current (so tasks a
handler submits stay in the same trace), and a task without one costs a
dictionary lookup.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, MutableMapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from worker_sdk._errors import NonRetryableError

if TYPE_CHECKING:
    from worker_sdk._context import TaskContext

try:
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
except ImportError:  # pragma: no cover - exercised only without opentelemetry-api
    otel_context = propagate = trace = None  # type: ignore[assignment]

log = logging.getLogger("taskyard.worker")

TRACER = "taskyard.worker_sdk"

_fields: ContextVar[dict[str, Any] | None] = ContextVar("taskyard_task_fields", default=None)


def task_log_fields() -> dict[str, Any] | None:
    """The fields of the task running in this context (task_id, queue, ...), if any."""
    return _fields.get()


def task_fields(ctx: TaskContext, worker_id: str) -> dict[str, Any]:
    """The structured log fields of a task's attempt on this worker."""
    return {
        "task_id": ctx.task_id,
        "task_type": ctx.type,
        "queue": ctx.queue,
        "attempt": ctx.attempt,
        "worker": worker_id,
    }


def _tracing() -> bool:
    """Whether an application installed a real tracer provider."""
    if trace is None:
        return False
    provider = trace.get_tracer_provider()
    return not isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider)


# What the broker stores (W3C Trace Context and Baggage), and how long each may be.
HEADERS = frozenset({"traceparent", "tracestate", "baggage"})
MAX_HEADER = 1024


def inject(carrier: MutableMapping[str, str]) -> None:
    """Write the current trace context into a task's `trace_context` map.

    Only the W3C headers the broker accepts are kept, and none longer than it
    accepts: another propagator's headers or oversized baggage must cost the
    trace a field, never the submission its task.
    """
    if trace is None or not trace.get_current_span().get_span_context().is_valid:
        return
    headers: dict[str, str] = {}
    propagate.inject(headers)
    carrier.update((k, v) for k, v in headers.items() if k in HEADERS and len(v) <= MAX_HEADER)


@contextlib.contextmanager
def submit_span(type_: str, queue: str | None, count: int = 1) -> Iterator[Any]:
    """The producer span around CreateTask/BatchCreateTasks; yields it (or None)."""
    if not _tracing():
        yield None
        return
    name = f"submit {type_}" if count == 1 else "submit batch"
    attributes: dict[str, Any] = {
        "messaging.system": "taskyard",
        "messaging.operation.name": "submit",
        "messaging.operation.type": "send",
    }
    if count == 1:
        attributes["messaging.destination.name"] = queue or "default"
        attributes["taskyard.task.type"] = type_
    else:
        attributes["messaging.batch.message_count"] = count
    tracer = trace.get_tracer(TRACER)
    with tracer.start_as_current_span(
        name, kind=trace.SpanKind.PRODUCER, attributes=attributes
    ) as span:
        yield span


def submitted(span: Any, task_id: str) -> None:
    if span is not None:
        span.set_attribute("messaging.message.id", task_id)


@contextlib.contextmanager
def task_scope(ctx: TaskContext, worker_id: str, headers: dict[str, str]) -> Iterator[None]:
    """Run a handler inside its task's log fields and trace (an `execute {type}` span).

    Args:
        ctx: The handler's context.
        worker_id: This worker, for the logs and the span.
        headers: The task's `trace_context` (W3C traceparent, tracestate, baggage).
    """
    token = _fields.set(task_fields(ctx, worker_id))
    started = time.monotonic()
    log.debug("task %s started (attempt %d)", ctx.task_id, ctx.attempt)
    try:
        with _span(ctx, worker_id, headers):
            yield
    except Exception as exc:
        # The assignment's max_attempts is the number of the last attempt (the broker
        # moves it on past lost leases and a RetryTask), so "N of M" never reads 3 of 2.
        if isinstance(exc, NonRetryableError):
            outcome = "not retried"
        elif ctx.attempt >= ctx.max_attempts:
            outcome = "no attempts left"
        else:
            outcome = "retried unless the retry policy lists its type as non-retryable"
        log.warning(
            "task %s failed on attempt %d of %d: %s: %s (%s)",
            ctx.task_id,
            ctx.attempt,
            ctx.max_attempts,
            type(exc).__name__,
            exc,
            outcome,
            extra={"error_type": type(exc).__name__},
        )
        raise
    else:
        log.debug("task %s returned after %.3fs", ctx.task_id, time.monotonic() - started)
    finally:
        _fields.reset(token)


@contextlib.contextmanager
def _span(ctx: TaskContext, worker_id: str, headers: dict[str, str]) -> Iterator[None]:
    if trace is None or (not headers and not _tracing()):
        yield
        return
    parent = propagate.extract(headers) if headers else None
    if not _tracing():
        # No spans of ours, but tasks this handler submits continue the trace.
        assert parent is not None
        token = otel_context.attach(parent)
        try:
            yield
        finally:
            otel_context.detach(token)
        return
    tracer = trace.get_tracer(TRACER)
    with tracer.start_as_current_span(
        f"execute {ctx.type}",
        context=parent,
        kind=trace.SpanKind.CONSUMER,
        attributes={
            "messaging.system": "taskyard",
            "messaging.operation.name": "execute",
            "messaging.operation.type": "process",
            "messaging.destination.name": ctx.queue,
            "messaging.message.id": ctx.task_id,
            "taskyard.task.type": ctx.type,
            "taskyard.task.attempt": ctx.attempt,
            "taskyard.worker.id": worker_id,
        },
    ):
        yield
