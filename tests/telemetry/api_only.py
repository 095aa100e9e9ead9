"""`python -m tests.telemetry.api_only TARGET MODE`: the SDK without the OpenTelemetry SDK.

MODE `no-sdk` hides `opentelemetry.sdk` (only the API is importable), `no-otel`
hides OpenTelemetry altogether. A Client and a Worker then run two tasks, one
submitted inside a known remote trace context and one outside any; the script
prints, as JSON, what each handler saw as its current trace and what the
broker stored as each task's trace context.
"""

from __future__ import annotations

import asyncio
import importlib.abc
import json
import sys
from typing import Any

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"


class _Hide(importlib.abc.MetaPathFinder):
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def find_spec(self, name: str, path: Any, target: Any = None) -> None:
        if name == self.prefix or name.startswith(self.prefix + "."):
            raise ImportError(f"{name} hidden for this test")
        return None


async def main(target: str, mode: str) -> dict[str, Any]:
    sys.meta_path.insert(0, _Hide("opentelemetry.sdk" if mode == "no-sdk" else "opentelemetry"))
    from taskyard.v1 import task_service_pb2, task_service_pb2_grpc
    from worker_sdk import Client, TaskContext, Worker

    worker = Worker(target=target, concurrency=2)

    @worker.task("whoami")
    async def whoami(ctx: TaskContext) -> str | None:
        try:
            from opentelemetry import trace
        except ImportError:
            return None
        span = trace.get_current_span().get_span_context()
        return format(span.trace_id, "032x") if span.is_valid else ""

    running = asyncio.create_task(worker.run())
    out: dict[str, Any] = {}
    async with Client(target) as client:
        token = _enter_remote_context() if mode == "no-sdk" else None
        inside = await client.submit("whoami")
        if token is not None:
            from opentelemetry import context

            context.detach(token)
        outside = await client.submit("whoami")
        import grpc

        async with grpc.aio.insecure_channel(target) as channel:
            stub = task_service_pb2_grpc.TaskServiceStub(channel)
            for name, task in (("inside", inside), ("outside", outside)):
                stored = await stub.GetTask(task_service_pb2.GetTaskRequest(id=task.id))
                out[name] = {
                    "handler_trace_id": await client.wait(task.id, timeout=30),
                    "stored": dict(stored.task.trace_context),
                }
    worker.stop()
    await running
    out["sdk_loaded"] = "opentelemetry.sdk" in sys.modules
    return out


def _enter_remote_context() -> Any:
    from opentelemetry import context, propagate

    parent = propagate.extract({"traceparent": f"00-{TRACE_ID}-{SPAN_ID}-01"})
    return context.attach(parent)


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1], sys.argv[2]))))  # noqa: T201
