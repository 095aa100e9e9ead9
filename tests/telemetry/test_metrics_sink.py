"""BrokerMetrics in process: ledger events and schedule/expiry reports become data points."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from broker.core.task_state import TaskState
from broker.engine.metrics import MetricEvent, MetricsSink, NoMetrics, fires_committed
from broker.errors import ConfigError
from broker.telemetry import setup
from broker.telemetry.metrics import BrokerMetrics

Points = dict[tuple[str, frozenset[tuple[str, str]]], Any]


@pytest.fixture
def reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture
def sink(reader: InMemoryMetricReader) -> Iterator[BrokerMetrics]:
    counts = {
        ("default", int(TaskState.PENDING)): 4,
        ("default", int(TaskState.RUNNING)): 2,
        ("default", int(TaskState.SUCCEEDED)): 9,
        ("mail", int(TaskState.RETRYING)): 1,
    }
    provider = MeterProvider(metric_readers=[reader])
    sink = BrokerMetrics(
        provider.get_meter("test"),
        queue_counts=lambda: counts,
        leases_in_flight=lambda: 2,
        sessions=lambda: 1,
    )
    yield sink
    provider.shutdown()


def points(reader: InMemoryMetricReader) -> Points:
    data = reader.get_metrics_data()
    assert data is not None
    out: Points = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for p in metric.data.data_points:
                    labels = frozenset((k, str(v)) for k, v in (p.attributes or {}).items())
                    out[(metric.name, labels)] = p
    return out


def labels(**kv: str) -> frozenset[tuple[str, str]]:
    return frozenset(kv.items())


def test_events_are_summed_per_queue_and_type(
    sink: BrokerMetrics, reader: InMemoryMetricReader
) -> None:
    sink.record([MetricEvent("submitted", "default", "a", count=3), MetricEvent("lost", "q", "b")])
    sink.record([MetricEvent("submitted", "default", "a"), MetricEvent("succeeded", "q", "b")])
    p = points(reader)
    assert p[("taskyard.tasks.submitted", labels(queue="default", type="a"))].value == 4
    assert p[("taskyard.leases.lost", labels(queue="q", type="b"))].value == 1
    assert p[("taskyard.tasks.succeeded", labels(queue="q", type="b"))].value == 1
    assert ("taskyard.tasks.failed", labels(queue="q", type="b")) not in p


def test_durations_go_to_the_wait_or_the_run_histogram(
    sink: BrokerMetrics, reader: InMemoryMetricReader
) -> None:
    sink.record(
        [
            MetricEvent("started", "default", "a", seconds=0.002),
            MetricEvent("succeeded", "default", "a", seconds=0.5),
            MetricEvent("retried", "default", "a", seconds=1.5),
            MetricEvent("lost", "default", "a"),  # no run time for a lost lease
        ]
    )
    p = points(reader)
    key = labels(queue="default", type="a")
    wait, run = p[("taskyard.task.queue_wait", key)], p[("taskyard.task.run_time", key)]
    assert (wait.count, wait.sum) == (1, 0.002)
    assert (run.count, run.sum) == (2, 2.0)
    # Buckets are in seconds: 0.5 falls in (0.25, 0.5], 1.5 in (1, 2.5].
    bounds = list(run.explicit_bounds)
    counts = list(run.bucket_counts)
    assert counts[bounds.index(0.5)] == 1 and counts[bounds.index(2.5)] == 1


def test_gauges_read_depths_leases_and_sessions(
    sink: BrokerMetrics, reader: InMemoryMetricReader
) -> None:
    p = points(reader)
    assert p[("taskyard.queue.depth", labels(queue="default", state="pending"))].value == 4
    assert p[("taskyard.queue.depth", labels(queue="mail", state="retrying"))].value == 1
    assert ("taskyard.queue.depth", labels(queue="default", state="succeeded")) not in p
    assert p[("taskyard.queue.running", labels(queue="default"))].value == 2
    assert p[("taskyard.leases.in_flight", labels())].value == 2
    assert p[("taskyard.workers.connected", labels())].value == 1


def test_schedule_and_expiry_reports_become_data_points(
    sink: BrokerMetrics, reader: InMemoryMetricReader
) -> None:
    sink.schedule_fired("nightly", 0.2)
    sink.schedule_fired("nightly", -1.0)  # early counts as on time
    sink.schedule_missed("nightly", 3, "missed")
    sink.schedule_missed("nightly", 0, "skipped")  # nothing missed: no data point
    sink.leases_expired(2)
    sink.leases_expired(0)
    p = points(reader)
    nightly = labels(schedule="nightly")
    assert p[("taskyard.schedule.fires", nightly)].value == 2
    assert p[("taskyard.schedule.misses", labels(schedule="nightly", reason="missed"))].value == 3
    lag = p[("taskyard.schedule.lag", nightly)]
    assert (lag.count, lag.sum) == (2, 0.2)
    assert ("taskyard.schedule.misses", labels(schedule="nightly", reason="skipped")) not in p
    assert p[("taskyard.leases.expired", labels())].value == 2


def test_both_sinks_implement_the_engines_protocol() -> None:
    # What the engine is handed when telemetry is off, and when it is on.
    sinks: list[MetricsSink] = [NoMetrics()]
    sinks.append(BrokerMetrics(MeterProvider().get_meter("test")))
    for s in sinks:
        s.record([MetricEvent("submitted", "q", "t")])
        s.schedule_fired("s", 1.0)
        s.schedule_missed("s", 1, "missed")
        s.leases_expired(1)


@pytest.mark.parametrize(
    ("env", "endpoint", "wanted"),
    [
        ({}, None, False),
        ({}, "http://collector:4317", True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}, None, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4317/t"}, None, True),
        ({"OTEL_TRACES_EXPORTER": "none"}, "http://collector:4317", False),
        ({"OTEL_SDK_DISABLED": "true"}, "http://collector:4317", False),
    ],
)
def test_otlp_traces_are_wanted_only_when_configured(
    env: dict[str, str], endpoint: str | None, wanted: bool
) -> None:
    assert setup._otlp_wanted("traces", endpoint, env) is wanted


def test_otlp_protocol_picks_the_exporter_and_the_http_paths() -> None:
    grpc_exporter = setup._otlp_exporter("metrics", "http://c:4317", {})
    assert type(grpc_exporter).__module__.startswith("opentelemetry.exporter.otlp.proto.grpc")
    env = {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}
    http_exporter = setup._otlp_exporter("traces", "http://c:4318/", env)
    assert isinstance(http_exporter, HttpSpanExporter)
    assert http_exporter._endpoint == "http://c:4318/v1/traces"
    with pytest.raises(ConfigError, match="http/json"):
        setup._otlp_exporter("traces", None, {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"})


def test_metrics_listen_is_a_port_on_loopback_or_host_and_port() -> None:
    assert setup.metrics_address("9464") == ("127.0.0.1", 9464)
    assert setup.metrics_address(":9464") == ("127.0.0.1", 9464)
    assert setup.metrics_address("[::1]:0") == ("::1", 0)
    with pytest.raises(ConfigError, match="HOST:PORT"):
        setup._prometheus("host:port")


class Result(Enum):  # the names of broker.core.schedules.FireResult
    STARTED = 1
    SKIPPED = 2
    MISSED = 3
    BUFFERED = 4
    FAILED = 5


@dataclass(frozen=True)
class Fire:
    fire_time: int
    recorded_at: int
    result: Result
    count: int = 1


def test_committed_fire_records_count_as_fires_with_lag_or_misses_by_reason(
    sink: BrokerMetrics, reader: InMemoryMetricReader
) -> None:
    fires_committed(
        sink,
        "hourly",
        [
            Fire(fire_time=10_000_000, recorded_at=10_500_000, result=Result.STARTED),  # 0.5 s late
            Fire(fire_time=0, recorded_at=10_500_000, result=Result.MISSED, count=4),
            Fire(fire_time=0, recorded_at=10_500_000, result=Result.SKIPPED),
            Fire(fire_time=0, recorded_at=10_500_000, result=Result.FAILED),
            Fire(fire_time=0, recorded_at=10_500_000, result=Result.BUFFERED),  # not yet either
        ],
    )
    p = points(reader)
    lag = p[("taskyard.schedule.lag", labels(schedule="hourly"))]
    assert (lag.count, lag.sum) == (1, 0.5)
    assert p[("taskyard.schedule.fires", labels(schedule="hourly"))].value == 1
    for reason, n in (("missed", 4), ("skipped", 1), ("failed", 1)):
        assert p[("taskyard.schedule.misses", labels(schedule="hourly", reason=reason))].value == n
