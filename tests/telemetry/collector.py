"""A minimal OTLP receiver for tests: gRPC and HTTP (protobuf), spans and metrics.

What the broker exports lands in `spans` and `metrics`; tests await a
predicate over them instead of sleeping.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import grpc
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)
from opentelemetry.proto.collector.trace.v1 import (
    trace_service_pb2,
    trace_service_pb2_grpc,
)
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric
from opentelemetry.proto.trace.v1.trace_pb2 import Span


class Collector:
    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.metrics: list[Metric] = []
        self.paths: set[str] = set()
        self.port = 0
        self._changed = asyncio.Condition()
        self._grpc: grpc.aio.Server | None = None
        self._http: asyncio.Server | None = None

    async def start_grpc(self) -> int:
        self._grpc = grpc.aio.server()
        # The generated *_grpc modules carry no types.
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(  # type: ignore[no-untyped-call]
            _Traces(self), self._grpc
        )
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(  # type: ignore[no-untyped-call]
            _Metrics(self), self._grpc
        )
        self.port = self._grpc.add_insecure_port("127.0.0.1:0")
        await self._grpc.start()
        return self.port

    async def start_http(self) -> int:
        self._http = await asyncio.start_server(self._serve_http, "127.0.0.1", 0)
        self.port = int(self._http.sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        if self._grpc is not None:
            await self._grpc.stop(None)
        if self._http is not None:
            self._http.close()
            await self._http.wait_closed()

    async def wait_for(self, found: Callable[[], Any], timeout: float = 30.0) -> Any:
        async with asyncio.timeout(timeout), self._changed:
            while not (result := found()):
                await self._changed.wait()
        return result

    def metric(self, name: str) -> list[Metric]:
        return [m for m in self.metrics if m.name == name]

    async def add_spans(self, request: Any) -> None:
        async with self._changed:
            for resource in request.resource_spans:
                for scope in resource.scope_spans:
                    self.spans.extend(scope.spans)
            self._changed.notify_all()

    async def add_metrics(self, request: Any) -> None:
        async with self._changed:
            for resource in request.resource_metrics:
                for scope in resource.scope_metrics:
                    self.metrics.extend(scope.metrics)
            self._changed.notify_all()

    async def _serve_http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while request_line := await reader.readline():
                _, path, _ = request_line.decode().split(" ", 2)
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.decode().partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                body = await reader.readexactly(length)
                self.paths.add(path)
                if path == "/v1/traces":
                    spans = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
                    await self.add_spans(spans)
                    data = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                else:
                    request = metrics_service_pb2.ExportMetricsServiceRequest.FromString(body)
                    await self.add_metrics(request)
                    data = metrics_service_pb2.ExportMetricsServiceResponse().SerializeToString()
                head = (
                    "HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\n"
                    f"Content-Length: {len(data)}\r\n\r\n"
                )
                writer.write(head.encode() + data)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


class _Traces(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, collector: Collector) -> None:
        self._collector = collector

    async def Export(self, request: Any, context: Any) -> Any:
        await self._collector.add_spans(request)
        return trace_service_pb2.ExportTraceServiceResponse()


class _Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, collector: Collector) -> None:
        self._collector = collector

    async def Export(self, request: Any, context: Any) -> Any:
        await self._collector.add_metrics(request)
        return metrics_service_pb2.ExportMetricsServiceResponse()
