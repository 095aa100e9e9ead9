"""Every taskyard.v1 service: its servicer and its method handlers, built once.

The gRPC server (server.py) and the HTTP/JSON API (broker/http) serve the
same handlers, so a method cannot exist on one transport and not the other.
The handlers are what each generated `add_*Servicer_to_server` would
register; WatchEvents' keeps its batches pre-encoded (api/event_wire.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc

from broker.api import event_wire
from broker.api.event_service import EventService
from broker.api.queue_service import QueueService
from broker.api.runtime import Runtime
from broker.api.schedule_service import ScheduleService
from broker.api.stats_service import StatsService
from broker.api.system_service import SystemService
from broker.api.task_service import TaskService
from broker.api.worker_service import WorkerService
from taskyard.v1 import (
    event_service_pb2_grpc,
    queue_service_pb2_grpc,
    schedule_service_pb2_grpc,
    stats_service_pb2_grpc,
    system_service_pb2_grpc,
    task_service_pb2_grpc,
    worker_service_pb2_grpc,
)


@dataclass(frozen=True, slots=True)
class Service:
    name: str  # e.g. taskyard.v1.TaskService
    handlers: dict[str, Any]  # method name → grpc.RpcMethodHandler


class _Recorder:
    """Stands in for a grpc server to collect what `add_*Servicer_to_server` registers."""

    def __init__(self) -> None:
        self.registered: dict[str, dict[str, Any]] = {}

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        pass

    def add_registered_method_handlers(self, name: str, handlers: dict[str, Any]) -> None:
        self.registered[name] = dict(handlers)


_ADDERS: tuple[tuple[Callable[[Any, Any], None], Callable[[Runtime], Any]], ...] = (
    (task_service_pb2_grpc.add_TaskServiceServicer_to_server, TaskService),
    (worker_service_pb2_grpc.add_WorkerServiceServicer_to_server, WorkerService),
    (system_service_pb2_grpc.add_SystemServiceServicer_to_server, SystemService),
    (queue_service_pb2_grpc.add_QueueServiceServicer_to_server, QueueService),
    (stats_service_pb2_grpc.add_StatsServiceServicer_to_server, StatsService),
    (schedule_service_pb2_grpc.add_ScheduleServiceServicer_to_server, ScheduleService),
    (event_service_pb2_grpc.add_EventServiceServicer_to_server, EventService),
)


def build(runtime: Runtime) -> list[Service]:
    recorder = _Recorder()
    for add, make in _ADDERS:
        add(make(runtime), recorder)
    events = recorder.registered["taskyard.v1.EventService"]
    watch = events["WatchEvents"]
    events["WatchEvents"] = grpc.unary_stream_rpc_method_handler(
        watch.unary_stream,
        request_deserializer=watch.request_deserializer,
        response_serializer=event_wire.serialize,
    )
    return [Service(name, handlers) for name, handlers in recorder.registered.items()]
