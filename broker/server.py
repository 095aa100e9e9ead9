"""The gRPC server: our services (api/services.py), health and reflection on one port."""

from __future__ import annotations

import asyncio
import contextlib

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from broker.api import services
from broker.api.runtime import Runtime
from broker.api.services import Service
from broker.engine.storage import StorageHealth
from broker.errors import ConfigError
from broker.security.interceptor import Guard
from broker.security.tls import add_port
from taskyard.v1 import (
    event_service_pb2,
    queue_service_pb2,
    schedule_service_pb2,
    stats_service_pb2,
    system_service_pb2,
    task_service_pb2,
    worker_service_pb2,
    workflow_service_pb2,
)

SERVICE_NAMES = (
    task_service_pb2.DESCRIPTOR.services_by_name["TaskService"].full_name,
    worker_service_pb2.DESCRIPTOR.services_by_name["WorkerService"].full_name,
    system_service_pb2.DESCRIPTOR.services_by_name["SystemService"].full_name,
    queue_service_pb2.DESCRIPTOR.services_by_name["QueueService"].full_name,
    stats_service_pb2.DESCRIPTOR.services_by_name["StatsService"].full_name,
    schedule_service_pb2.DESCRIPTOR.services_by_name["ScheduleService"].full_name,
    event_service_pb2.DESCRIPTOR.services_by_name["EventService"].full_name,
    workflow_service_pb2.DESCRIPTOR.services_by_name["WorkflowService"].full_name,
)


def build_server(
    runtime: Runtime, *, guard: Guard | None = None, served: list[Service] | None = None
) -> tuple[grpc.aio.Server, health.aio.HealthServicer, int]:
    limits = runtime.settings.limits
    # Authentication, authorization and per-identity limits (broker/security).
    guard = guard or Guard(settings=runtime.settings, db=runtime.db)
    server = grpc.aio.server(
        interceptors=[guard],
        options=[
            # The largest legal request and reply (config.Limits), not more: a
            # caller cannot make the broker buffer a bigger message.
            ("grpc.max_receive_message_length", limits.receive_bytes),
            ("grpc.max_send_message_length", limits.send_bytes),
            # HTTP/2 streams one connection may have open at once; more wait
            # in the client for a free one.
            ("grpc.max_concurrent_streams", limits.max_streams_per_connection),
            # Workers keep their streams alive with pings; let them.
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
            ("grpc.keepalive_time_ms", 20_000),
            ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.so_reuseport", 0),
        ],
    )
    for service in served if served is not None else services.build(runtime):
        handlers = service.handlers
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service.name, handlers),)
        )
        server.add_registered_method_handlers(service.name, handlers)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (
            *SERVICE_NAMES,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    try:
        port = add_port(server, runtime.settings.listen, runtime.settings.security)
    except RuntimeError as exc:
        raise ConfigError(f"cannot listen on {runtime.settings.listen}: {exc}") from None
    if port == 0:
        raise ConfigError(f"cannot listen on {runtime.settings.listen}: the address is in use")
    return server, health_servicer, port


async def watch_storage(
    health_servicer: health.aio.HealthServicer, storage: StorageHealth, runtime: Runtime
) -> None:
    """Health says NOT_SERVING while the database refuses writes, SERVING when it takes them.

    The condition (engine/storage.py) ends on a successful write or after a quiet
    window, so a broker whose disk filled up recovers without a restart.
    """
    serving = True
    while True:
        storage.changed.clear()
        wanted = storage.problem() is None
        if wanted != serving and not runtime.shutting_down:
            await set_serving(health_servicer, wanted)
            serving = wanted
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(storage.changed.wait(), storage.seconds_left() or None)


async def set_serving(health_servicer: health.aio.HealthServicer, serving: bool) -> None:
    status = (
        health_pb2.HealthCheckResponse.SERVING
        if serving
        else health_pb2.HealthCheckResponse.NOT_SERVING
    )
    for name in ("", *SERVICE_NAMES):
        await health_servicer.set(name, status)
