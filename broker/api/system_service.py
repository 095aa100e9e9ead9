"""SystemService: what this broker is and supports."""

from __future__ import annotations

from typing import Any

import broker
from broker.api import convert
from broker.api.runtime import Runtime
from broker.api.status import maps_errors
from taskyard.v1 import system_service_pb2, system_service_pb2_grpc

CAPABILITIES = (
    "lease.batch",
    "lease.credits",
    "lease.adopt",
    "task.idempotency",
    "task.watch",
    "events.watch",
)


class SystemService(system_service_pb2_grpc.SystemServiceServicer):
    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    @maps_errors
    async def GetSystemInfo(
        self, request: system_service_pb2.GetSystemInfoRequest, context: Any
    ) -> system_service_pb2.GetSystemInfoResponse:
        response = system_service_pb2.GetSystemInfoResponse(
            version=broker.__version__,
            storage_backend=self._rt.db.backend,
            schema_version=self._rt.schema_version,
            capabilities=CAPABILITIES,
        )
        convert.set_timestamp(response.server_time, self._rt.clock.now_us())
        return response
