"""SystemService: what this broker is and supports."""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache
from typing import Any

import broker
import taskyard.v1
from broker.api import convert
from broker.api.runtime import Runtime
from broker.api.status import maps_errors
from broker.security import access, roles
from taskyard.v1 import system_service_pb2, system_service_pb2_grpc

CAPABILITIES = (
    "lease.batch",
    "lease.credits",
    "lease.adopt",
    "task.idempotency",
    "task.watch",
    "events.watch",
    "system.caller",
)


@cache
def api_methods() -> tuple[str, ...]:
    """Every method of every taskyard.v1 service, as `/taskyard.v1.<Service>/<Method>`.

    Read from the generated descriptors, so a service added to the protos is
    listed without a change here.
    """
    found = []
    for info in pkgutil.iter_modules(taskyard.v1.__path__):
        if info.name.endswith("_service_pb2"):
            module = importlib.import_module(f"taskyard.v1.{info.name}")
            for service in module.DESCRIPTOR.services_by_name.values():
                found += [f"/{service.full_name}/{m.name}" for m in service.methods]
    return tuple(sorted(found))


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

    @maps_errors
    async def GetCaller(
        self, request: system_service_pb2.GetCallerRequest, context: Any
    ) -> system_service_pb2.GetCallerResponse:
        grant = access.current()
        assert grant is not None, "Guard sets the caller of every call"
        principal = grant.principal
        allowed = roles.permissions(principal, api_methods())
        caller = system_service_pb2.Caller(
            name=principal.name,
            authenticated=principal.identified,
            roles=sorted(principal.roles),
            queue_limited=principal.queues is not None,
            queues=sorted(principal.queues or ()),
            methods=[m.lstrip("/") for m in allowed],
            own_task_methods=[m.lstrip("/") for m, own in allowed.items() if own],
        )
        return system_service_pb2.GetCallerResponse(caller=caller)
