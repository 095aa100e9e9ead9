"""The HTTP/JSON API (Connect protocol) against a real broker, on both backends.

Every RPC is called once over HTTP (the Connect application binds each
method on its first request, so a method it cannot find would fail only
then); error bodies carry the gRPC code and ErrorInfo reason; streams work
and end; answers equal what gRPC returns.
"""

from __future__ import annotations

import asyncio
import importlib
import pkgutil
from pathlib import Path

import grpc
import pytest
from google.protobuf import json_format
from google.protobuf.descriptor import MethodDescriptor

import taskyard.v1
from taskyard.v1 import task_service_pb2, task_service_pb2_grpc
from tests.helpers import Broker, start_worker
from tests.http_client import Http

# Connect's codes for what a broken adapter would answer, rather than the servicer.
BROKEN = {"unknown", "internal", "unimplemented"}


@pytest.fixture
def broker_args() -> list[str]:
    return ["--http-listen", "127.0.0.1:0"]


def _methods() -> list[MethodDescriptor]:
    found: list[MethodDescriptor] = []
    for info in pkgutil.iter_modules(taskyard.v1.__path__):
        if info.name.endswith("_service_pb2"):
            module = importlib.import_module(f"taskyard.v1.{info.name}")
            for service in module.DESCRIPTOR.services_by_name.values():
                found.extend(m for m in service.methods if not m.client_streaming)
    return sorted(found, key=lambda m: m.full_name)


async def test_every_rpc_reaches_its_servicer_over_http(broker: Broker) -> None:
    http = Http(broker.http_port)
    methods = _methods()
    assert len(methods) >= 30  # every service, not a few
    for method in methods:
        path = f"{method.containing_service.name}/{method.name}"
        if method.server_streaming:
            async with http.stream(path, {}) as stream:
                first = await stream.read()
                error = stream.end.get("error") if first is None and stream.end else None
        else:
            reply = await http.call(path, {})
            assert reply.status == 200 or isinstance(reply.body, dict), (path, reply)
            error = None if reply.status == 200 else reply.body
        assert error is None or error["code"] not in BROKEN, (path, error)


async def test_a_task_over_http_is_the_task_grpc_shows(broker: Broker) -> None:
    http = Http(broker.http_port)
    created = await http.call(
        "TaskService/CreateTask",
        {"task": {"type": "echo", "payload": {"json": {"n": 1}}, "labels": {"a": "b"}}},
    )
    assert created.status == 200, created
    task_id = created.body["task"]["id"]
    over_http = await http.call("TaskService/GetTask", {"id": task_id})
    async with broker.channel() as channel:
        stub = task_service_pb2_grpc.TaskServiceStub(channel)
        over_grpc = await stub.GetTask(task_service_pb2.GetTaskRequest(id=task_id))
    assert over_http.body == json_format.MessageToDict(over_grpc)
    assert over_http.body["task"]["payload"] == {"json": {"n": 1}}
    listed = await http.call("TaskService/ListTasks", {"pageSize": 10})
    assert [t["id"] for t in listed.body["tasks"]] == [task_id]


@pytest.mark.parametrize(
    ("method", "body", "status", "code", "reason"),
    [
        ("TaskService/GetTask", {"id": "01J00000000000000000000000"}, 404, "not_found",
         "TASK_NOT_FOUND"),
        ("TaskService/GetTask", {"id": "nope"}, 400, "invalid_argument", "INVALID_ID"),
        ("TaskService/GetTask", {"idd": "x"}, 400, "invalid_argument", "MALFORMED_REQUEST"),
        ("TaskService/CreateTask", {"task": {}}, 400, "invalid_argument", "INVALID_TYPE"),
        ("TaskService/ListTasks", {"pageSize": -1}, 400, "invalid_argument",
         "INVALID_PAGE_SIZE"),
        ("QueueService/GetQueue", {"name": "missing"}, 404, "not_found", "QUEUE_NOT_FOUND"),
    ],
)  # fmt: skip
async def test_errors_carry_the_code_and_reason_as_on_grpc(
    broker: Broker, method: str, body: dict[str, object], status: int, code: str, reason: str
) -> None:
    reply = await Http(broker.http_port).call(method, body)
    assert (reply.status, reply.body["code"], reply.reason) == (status, code, reason)
    assert reply.body["message"]  # a sentence for people


async def test_what_is_not_an_rpc(broker: Broker) -> None:
    http = Http(broker.http_port)
    assert (await http.call("/taskyard.v1.NoSuchService/Get")).status == 404
    assert (await http.call("TaskService/NoSuchMethod")).status == 404
    wrong_type = Http(broker.http_port, extra_headers={"content-type": "text/plain"})
    assert (await wrong_type.call("TaskService/GetTask", {})).status == 415


async def test_watch_task_streams_until_the_task_finishes(broker: Broker, tmp_path: Path) -> None:
    worker = await start_worker(broker, tmp_path, name="hw")
    http = Http(broker.http_port)
    created = await http.call(
        "TaskService/CreateTask", {"task": {"type": "progress", "payload": {"json": {"steps": 2}}}}
    )
    task_id = created.body["task"]["id"]
    async with asyncio.timeout(30), http.stream("TaskService/WatchTask", {"id": task_id}) as s:
        messages = [m async for m in s]
    assert s.end == {}, s.end  # ended without an error
    states = [m["task"]["state"] for m in messages]
    assert states[-1] == "TASK_STATE_SUCCEEDED", states
    assert messages[-1]["task"]["result"] == {"json": "done"}
    await worker.stop()


async def test_watch_events_over_http_streams_json_batches(broker: Broker) -> None:
    http = Http(broker.http_port)
    async with http.stream("EventService/WatchEvents", {"kinds": ["EVENT_KIND_TASK_STATE"]}) as s:
        first = await s.read()
        assert first is not None and first["streamId"] and "events" not in first
        created = await http.call("TaskService/CreateTask", {"task": {"type": "echo"}})
        task_id = created.body["task"]["id"]
        async with asyncio.timeout(30):
            message = await s.read()
    assert message is not None
    event = message["events"][0]
    assert event["taskState"]["taskId"] == task_id
    assert event["taskState"]["state"] == "TASK_STATE_PENDING"
    assert int(event["sequence"]) == int(message["sequence"])


async def test_a_stream_error_arrives_in_the_end_of_stream_message(broker: Broker) -> None:
    http = Http(broker.http_port)
    async with http.stream("TaskService/WatchTask", {"id": "01J00000000000000000000000"}) as s:
        assert await s.read() is None
    assert s.status == 200  # Connect streams report errors in the body
    assert s.end is not None and s.end["error"]["code"] == "not_found"


async def test_grpc_still_serves_beside_http(broker: Broker) -> None:
    async with broker.channel() as channel:
        stub = task_service_pb2_grpc.TaskServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetTask(task_service_pb2.GetTaskRequest(id="01J00000000000000000000000"))
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND
