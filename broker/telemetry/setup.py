"""Wiring: the exporters the settings and OTEL_* environment ask for, and their shutdown.

Nothing is built unless asked for: without `--metrics-listen`, `--otlp-endpoint`
or an OTLP endpoint in the environment the broker keeps `NoMetrics` and records
no spans. Metrics go to a Prometheus scrape endpoint and/or OTLP; dispatch
spans go to OTLP only (a scrape endpoint has no place for them).

Two steps, because the dispatcher sits between them: `tracing` first, whose
delivery hook the dispatcher is built with, then `start`, whose gauges read
the dispatcher. The result of `start` shuts both down.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, overload
from wsgiref.simple_server import WSGIServer

from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from broker.core.models import Claimed
from broker.engine.dispatcher import Dispatcher
from broker.engine.metrics import MetricsSink, NoMetrics
from broker.engine.queue_registry import QueueRegistry
from broker.engine.storage import StorageHealth
from broker.errors import ConfigError
from broker.store import queues as store
from broker.store.database import Database
from broker.telemetry import scrape
from broker.telemetry.labels import KnownNames
from broker.telemetry.metrics import BrokerMetrics, QueueCounts
from broker.telemetry.tracing import Dispatched

log = logging.getLogger("taskyard.broker")

SCOPE = "taskyard.broker"
QUEUE_COUNTS_TIMEOUT_S = 5.0
SHUTDOWN_TIMEOUT_MS = 2000


@dataclass
class Tracing:
    """What `tracing` built; `on_deliver` is None when nothing would observe a delivery."""

    on_deliver: Callable[[str, Sequence[Claimed]], None] | None = None
    _tracer_provider: TracerProvider | None = None
    _span_exporter: SpanExporter | None = None

    async def shutdown(self) -> None:
        if self._tracer_provider is None:
            return
        flush = asyncio.to_thread(self._tracer_provider.force_flush, SHUTDOWN_TIMEOUT_MS)
        try:
            await asyncio.wait_for(flush, SHUTDOWN_TIMEOUT_MS / 1000)
        except TimeoutError:
            # An export is still retrying: stop it, or shutting down would wait on it.
            if self._span_exporter is not None:
                self._span_exporter.shutdown()
        await asyncio.to_thread(self._tracer_provider.shutdown)


@dataclass
class Telemetry:
    """What `start` built; `metrics` is None when no metrics exporter is configured."""

    tracing: Tracing = field(default_factory=Tracing)
    metrics: BrokerMetrics | None = None
    metrics_port: int | None = None
    _meter_provider: MeterProvider | None = None
    _http: WSGIServer | None = None

    @property
    def sink(self) -> MetricsSink:
        return self.metrics if self.metrics is not None else NoMetrics()

    async def shutdown(self) -> None:
        """Stop serving scrapes and flush OTLP (off the loop: a final collection reads the db)."""
        if self._http is not None:
            await asyncio.to_thread(self._http.shutdown)  # waits out a poll interval
            self._http.server_close()
        # Both at once, each bounded: an unreachable collector must not hold up the exit.
        await asyncio.gather(self.tracing.shutdown(), self._stop_metrics())

    async def _stop_metrics(self) -> None:
        if self._meter_provider is not None:
            shutdown = self._meter_provider.shutdown
            await asyncio.to_thread(shutdown, timeout_millis=SHUTDOWN_TIMEOUT_MS)


def tracing(*, otlp_endpoint: str | None, env: Mapping[str, str] | None = None) -> Tracing:
    """Build the span exporter, if wanted; the dispatcher is built with `result.on_deliver`."""
    env = os.environ if env is None else env
    out = Tracing()
    tracer = None
    if _otlp_wanted("traces", otlp_endpoint, env):
        out._span_exporter = _otlp_exporter("traces", otlp_endpoint, env)
        out._tracer_provider = TracerProvider(resource=_resource(env))
        out._tracer_provider.add_span_processor(BatchSpanProcessor(out._span_exporter))
        tracer = out._tracer_provider.get_tracer(SCOPE)
    dispatched = Dispatched(tracer)
    if dispatched.wanted:
        out.on_deliver = dispatched.delivered
    return out


def start(
    *,
    metrics_listen: str | None,
    otlp_endpoint: str | None,
    db: Database,
    dispatcher: Dispatcher,
    tracing: Tracing,
    storage: StorageHealth | None = None,
    queues: QueueRegistry | None = None,
    configured_queues: Collection[str] = (),
    metrics_token: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Telemetry:
    """Build the metrics exporters; the caller hands `result.sink` to the committer's Env.

    With `queues`, only known queue and type names are labels of their own
    (telemetry/labels.py); `metrics_token` guards the scrape endpoint.
    """
    env = os.environ if env is None else env
    out = Telemetry(tracing)
    resource = _resource(env)
    readers: list[MetricReader] = []
    if metrics_listen:
        reader, out._http, out.metrics_port = _prometheus(metrics_listen, metrics_token)
        readers.append(reader)
    if _otlp_wanted("metrics", otlp_endpoint, env):
        exporter = _otlp_exporter("metrics", otlp_endpoint, env)
        readers.append(PeriodicExportingMetricReader(exporter))
    if readers:
        out._meter_provider = MeterProvider(
            metric_readers=readers, resource=resource, exemplar_filter=AlwaysOffExemplarFilter()
        )
        out.metrics = BrokerMetrics(
            out._meter_provider.get_meter(SCOPE),
            queue_counts=_queue_counts_reader(db, asyncio.get_running_loop()),
            leases_in_flight=lambda: dispatcher.leases_in_flight,
            sessions=lambda: dispatcher.sessions,
            storage=None if storage is None else storage.problem,
            labels=None
            if queues is None
            else KnownNames(dispatcher=dispatcher, queues=queues, configured=configured_queues),
        )
    return out


def _resource(env: Mapping[str, str]) -> Resource:
    named = env.get("OTEL_SERVICE_NAME") or "service.name=" in env.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    )
    return Resource.create({} if named else {"service.name": "taskyard-broker"})


def metrics_address(listen: str) -> tuple[str, int]:
    """`--metrics-listen` as (host, port): `PORT` and `:PORT` mean 127.0.0.1."""
    host, _, port = listen.rpartition(":")
    if not port.isdigit():
        raise ConfigError(f"--metrics-listen takes PORT or HOST:PORT, got {listen!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _prometheus(listen: str, token: str | None = None) -> tuple[MetricReader, WSGIServer, int]:
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from prometheus_client import CollectorRegistry, GCCollector, ProcessCollector

    host, port = metrics_address(listen)
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    # python_gc_*: how often the collector ran (worker_sdk/_collector.py).
    GCCollector(registry=registry)
    reader = PrometheusMetricReader(scope_info_enabled=False, registry=registry)
    try:
        http = scrape.serve(host, port, registry, token=token)
    except OSError as exc:
        raise ConfigError(f"cannot serve metrics on {listen}: {exc}") from None
    bound = int(http.server_port)
    shown = f"[{host}]" if ":" in host else host
    log.info(
        "metrics on http://%s:%d/metrics%s",
        shown,
        bound,
        " (scrape token required)" if token else "",
    )
    if not token and not scrape.is_loopback(host):
        log.warning(
            "metrics on %s:%d are open to anyone who can reach that address: queue and task "
            "type names, schedule names, counts, timings and the process's memory (never "
            "payloads). Set --metrics-token, or listen on 127.0.0.1 (docs/observability.md).",
            shown,
            bound,
        )
    return reader, http, bound


def _otlp_wanted(signal: str, endpoint: str | None, env: Mapping[str, str]) -> bool:
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    if env.get(f"OTEL_{signal.upper()}_EXPORTER", "otlp").lower() == "none":
        return False
    return bool(
        endpoint
        or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or env.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT")
    )


@overload
def _otlp_exporter(
    signal: Literal["metrics"], endpoint: str | None, env: Mapping[str, str]
) -> MetricExporter: ...


@overload
def _otlp_exporter(
    signal: Literal["traces"], endpoint: str | None, env: Mapping[str, str]
) -> SpanExporter: ...


def _otlp_exporter(
    signal: Literal["metrics", "traces"], endpoint: str | None, env: Mapping[str, str]
) -> MetricExporter | SpanExporter:
    """An OTLP exporter; with no --otlp-endpoint it reads its endpoint from OTEL_* itself."""
    protocol = (
        env.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL")
        or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "grpc"
    )
    if protocol == "grpc":
        if signal == "metrics":
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

            return OTLPMetricExporter(endpoint=endpoint)
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(endpoint=endpoint)
    if protocol == "http/protobuf":
        # Given explicitly, the HTTP exporters take the full URL of the signal.
        url = f"{endpoint.rstrip('/')}/v1/{signal}" if endpoint else None
        if signal == "metrics":
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
                OTLPMetricExporter as HttpMetricExporter,
            )

            return HttpMetricExporter(endpoint=url)
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter as HttpSpanExporter,
        )

        return HttpSpanExporter(endpoint=url)
    raise ConfigError(f"OTLP protocol {protocol!r} is not supported (grpc or http/protobuf)")


def _queue_counts_reader(db: Database, loop: asyncio.AbstractEventLoop) -> QueueCounts:
    """Reads the counts from a collector's thread, on the broker's loop."""

    async def read() -> dict[tuple[str, int], int]:
        # The ledger keeps queue_count exact in every transaction; the table is tiny.
        async with db.reader.connect() as conn:
            return await store.all_counts(conn)

    def get() -> dict[tuple[str, int], int]:
        if _on(loop) or loop.is_closed():
            # A collection on the loop itself (none is planned) must not block it.
            raise RuntimeError("queue depths cannot be read on the event loop thread")
        return asyncio.run_coroutine_threadsafe(read(), loop).result(QUEUE_COUNTS_TIMEOUT_S)

    return get


def _on(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
