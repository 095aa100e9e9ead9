"""Every role and every RPC against a broker with a tokens file: allowed, or PERMISSION_DENIED
and nothing changed.

The expectations below are the specification (docs/security.md), written out
by hand rather than read from broker/security/roles.py, so that a wrong rule
fails here. An RPC without an expectation fails too: each new RPC needs a
decision.
"""

from __future__ import annotations

import asyncio
import importlib
import pkgutil
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import pytest_asyncio
from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import MethodDescriptor

import taskyard.v1
from taskyard.v1 import task_pb2, task_service_pb2, worker_service_pb2
from tests.helpers import Broker
from tests.http_client import Http, error_reason
from tests.security.support import TokensFile, call

pytestmark = pytest.mark.asyncio(loop_scope="module")

SUB, WRK, OPS, ADM = "submitter", "worker", "operator", "admin"
ROLES = [SUB, WRK, OPS, ADM]
WHO = {SUB: "alice", WRK: "wendy", OPS: "oscar", ADM: "root"}

# Which roles may call each RPC ("Service/Method", or "Service/*" for all of one).
ALLOWED: dict[str, set[str]] = {
    "TaskService/CreateTask": {SUB, ADM},
    "TaskService/BatchCreateTasks": {SUB, ADM},
    "TaskService/GetTask": {SUB, OPS, ADM},
    "TaskService/ListTasks": {SUB, OPS, ADM},
    "TaskService/WatchTask": {SUB, OPS, ADM},
    "TaskService/ListTaskAttempts": {SUB, OPS, ADM},
    "TaskService/ListTaskLogs": {SUB, OPS, ADM},
    "TaskService/FollowTaskLogs": {SUB, OPS, ADM},
    "TaskService/CancelTask": {SUB, ADM},
    "TaskService/RetryTask": {OPS, ADM},
    "TaskService/RetryTasks": {OPS, ADM},
    "TaskService/PurgeTasks": {OPS, ADM},
    "WorkerService/Lease": {WRK, ADM},
    "WorkerService/ListWorkers": {OPS, ADM},
    "WorkerService/GetWorker": {OPS, ADM},
    "WorkerService/DrainWorker": {OPS, ADM},
    "QueueService/*": {OPS, ADM},
    "StatsService/*": {OPS, ADM},
    "ScheduleService/*": {OPS, ADM},
    "SystemService/GetSystemInfo": {SUB, WRK, OPS, ADM},
    "SystemService/GetCaller": {SUB, WRK, OPS, ADM},
    "EventService/WatchEvents": {SUB, OPS, ADM},
    # Workflows: submitters create and act on their own, operators read and retry,
    # workers (holding a node's lease) spawn and read its parents.
    "WorkflowService/CreateWorkflow": {SUB, ADM},
    "WorkflowService/AddWorkflowNodes": {SUB, ADM},
    "WorkflowService/GetWorkflow": {SUB, OPS, ADM},
    "WorkflowService/ListWorkflows": {SUB, OPS, ADM},
    "WorkflowService/WatchWorkflow": {SUB, OPS, ADM},
    "WorkflowService/CancelWorkflow": {SUB, ADM},
    "WorkflowService/RetryWorkflow": {OPS, ADM},
    "WorkflowService/SpawnNodes": {WRK, ADM},
    "WorkflowService/ListNodeParents": {WRK, ADM},
    "WorkflowService/CreateWorkflowTemplate": {OPS, ADM},
    "WorkflowService/GetWorkflowTemplate": {SUB, OPS, ADM},
    "WorkflowService/ListWorkflowTemplates": {SUB, OPS, ADM},
}

# Requests (as JSON) that an allowed caller can make succeed or fail for a
# reason other than permission; "$TASK" is a task alice created.
REQUESTS: dict[str, dict[str, Any]] = {
    "TaskService/CreateTask": {"task": {"type": "echo"}},
    "TaskService/BatchCreateTasks": {"requests": [{"task": {"type": "echo"}}]},
    "TaskService/GetTask": {"id": "$TASK"},
    "TaskService/WatchTask": {"id": "$TASK"},
    "TaskService/ListTaskAttempts": {"id": "$TASK"},
    "TaskService/ListTaskLogs": {"id": "$TASK"},
    "TaskService/FollowTaskLogs": {"id": "$TASK"},
    "TaskService/CancelTask": {"id": "$TASK"},
    "TaskService/RetryTask": {"id": "$TASK"},
    "TaskService/RetryTasks": {"queue": "default"},
    # Another queue: purging the default one would delete $TASK once cancelled.
    "TaskService/PurgeTasks": {"queue": "elsewhere"},
    "WorkerService/Lease": {"hello": {"workerId": "matrix", "taskTypes": ["echo"]}},
    "WorkerService/GetWorker": {"workerId": "nobody"},
    "WorkerService/DrainWorker": {"workerId": "nobody"},
    "QueueService/CreateQueue": {"queue": {"name": "matrix"}},
    "QueueService/GetQueue": {"name": "default"},
    "QueueService/DeleteQueue": {"name": "no-such-queue"},
    "QueueService/PauseQueue": {"name": "matrix"},
    "QueueService/ResumeQueue": {"name": "matrix"},
}


def _methods() -> list[MethodDescriptor]:
    """Every RPC of every taskyard.v1 service, ScheduleService included once it exists."""
    found: list[MethodDescriptor] = []
    for info in pkgutil.iter_modules(taskyard.v1.__path__):
        if info.name.endswith("_service_pb2"):
            module = importlib.import_module(f"taskyard.v1.{info.name}")
            for service in module.DESCRIPTOR.services_by_name.values():
                found.extend(service.methods)
    return sorted(found, key=lambda m: m.full_name)


def _key(method: MethodDescriptor) -> str:
    return f"{method.containing_service.name}/{method.name}"


def _allowed(method: MethodDescriptor) -> set[str] | None:
    key = _key(method)
    return ALLOWED.get(key, ALLOWED.get(f"{method.containing_service.name}/*"))


async def test_every_rpc_has_an_expectation() -> None:
    missing = [_key(m) for m in _methods() if _allowed(m) is None]
    assert missing == [], f"decide who may call {missing} (here and in broker/security/roles.py)"


@pytest.fixture(scope="module")
def tokens_file(tmp_path_factory: pytest.TempPathFactory) -> TokensFile:
    tokens = TokensFile(tmp_path_factory.mktemp("tokens") / "tokens.toml")
    for role, name in WHO.items():
        tokens.add(name, role)
    return tokens


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def secured(
    tmp_path_factory: pytest.TempPathFactory, tokens_file: TokensFile
) -> AsyncIterator[Broker]:
    workdir = tmp_path_factory.mktemp("broker")
    broker = Broker(
        db_url=f"sqlite+aiosqlite:///{workdir / 'taskyard.db'}",
        workdir=workdir,
        extra_args=["--tokens", str(tokens_file.path), "--http-listen", "127.0.0.1:0"],
    )
    await broker.start()
    assert broker.process is not None
    broker.process.outlives_test = True
    try:
        yield broker
    finally:
        await broker.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def alice_task(secured: Broker, tokens_file: TokensFile) -> str:
    async with secured.channel() as channel:
        request = task_service_pb2.CreateTaskRequest(task=task_pb2.Task(type="echo"))
        outcome = await call(
            channel,
            "/taskyard.v1.TaskService/CreateTask",
            request,
            metadata=tokens_file.metadata("alice"),
        )
    assert outcome.code is grpc.StatusCode.OK
    assert outcome.first is not None
    return str(task_service_pb2.CreateTaskResponse.FromString(outcome.first).task.id)


def _request(method: MethodDescriptor, task_id: str) -> bytes:
    message = message_factory.GetMessageClass(method.input_type)()
    json_format.ParseDict(_substitute(REQUESTS.get(_key(method), {}), task_id), message)
    return bytes(message.SerializeToString())


def _substitute(value: Any, task_id: str) -> Any:
    if value == "$TASK":
        return task_id
    if isinstance(value, dict):
        return {k: _substitute(v, task_id) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, task_id) for v in value]
    return value


async def _snapshot(channel: grpc.aio.Channel, tokens_file: TokensFile) -> list[Any]:
    """What a denied call must not change: every task (full view) and every queue."""
    listing = task_service_pb2.ListTasksRequest(
        page_size=1000, view=task_service_pb2.TASK_VIEW_FULL
    )
    tasks = await call(
        channel,
        "/taskyard.v1.TaskService/ListTasks",
        listing,
        metadata=tokens_file.metadata("root"),
    )
    queues = await call(
        channel, "/taskyard.v1.QueueService/ListQueues", b"", metadata=tokens_file.metadata("root")
    )
    assert tasks.code is grpc.StatusCode.OK
    found = task_service_pb2.ListTasksResponse.FromString(tasks.first or b"").tasks
    rows = [(t.id, t.state, t.attempt, t.cancel_requested) for t in found]
    return [rows, queues.code, queues.first]


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("method", _methods(), ids=_key)
async def test_role_may_call_only_its_rpcs(
    secured: Broker,
    tokens_file: TokensFile,
    alice_task: str,
    method: MethodDescriptor,
    role: str,
) -> None:
    allowed = _allowed(method)
    assert allowed is not None
    streaming = "bidi" if method.client_streaming else "server" if method.server_streaming else ""
    path = f"/{method.containing_service.full_name}/{method.name}"
    async with secured.channel() as channel:
        before = await _snapshot(channel, tokens_file)
        outcome = await call(
            channel,
            path,
            _request(method, alice_task),
            metadata=tokens_file.metadata(WHO[role]),
            streaming=streaming or "unary",
        )
        if role in allowed:
            # Allowed: whatever the servicer answers, but no refusal and no crash.
            assert outcome.code not in (
                grpc.StatusCode.PERMISSION_DENIED,
                grpc.StatusCode.UNAUTHENTICATED,
                grpc.StatusCode.UNKNOWN,
                grpc.StatusCode.INTERNAL,
            ), outcome
            return
        assert (outcome.code, outcome.reason) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "ROLE_NOT_ALLOWED",
        ), outcome
        assert await _snapshot(channel, tokens_file) == before


async def test_a_refused_stream_always_gets_its_reason_not_an_internal_error(
    secured: Broker, tokens_file: TokensFile
) -> None:
    """A stream the broker refused before reading raced the client's first write: grpc.aio
    clients then reported INTERNAL "Internal error from Core" instead of the refusal
    (grpc/grpc#36066), one call in tens to hundreds. The broker refuses a stream once its
    first message is in, so every one of these says why."""
    hello = worker_service_pb2.LeaseRequest(hello=worker_service_pb2.Hello(worker_id="w"))
    metadata = tokens_file.metadata(WHO[SUB])
    async with secured.channel() as channel:
        for _ in range(50):
            outcomes = await asyncio.gather(
                *(
                    call(channel, "/taskyard.v1.WorkerService/Lease", hello, metadata=metadata,
                         streaming="bidi")
                    for _ in range(10)
                )
            )  # fmt: skip
            wrong = [o for o in outcomes if o.reason != "ROLE_NOT_ALLOWED"]
            assert not wrong, wrong


async def test_a_call_without_a_token_is_unauthenticated(secured: Broker) -> None:
    async with secured.channel() as channel:
        outcome = await call(channel, "/taskyard.v1.TaskService/ListTasks", b"")
    assert (outcome.code, outcome.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_REQUIRED")


@pytest.mark.parametrize(
    "header",
    [
        "Bearer tyk_000000000000_not-the-secret-of-any-token",
        "Bearer something-else-entirely",
        "Basic dXNlcjpwYXNz",
        "Bearer ",
    ],
)
async def test_a_wrong_token_is_unauthenticated(secured: Broker, header: str) -> None:
    async with secured.channel() as channel:
        outcome = await call(
            channel,
            "/taskyard.v1.TaskService/ListTasks",
            b"",
            metadata=[("authorization", header)],
        )
    assert (outcome.code, outcome.reason) == (grpc.StatusCode.UNAUTHENTICATED, "INVALID_TOKEN")


async def test_a_token_with_a_changed_secret_is_unauthenticated(
    secured: Broker, tokens_file: TokensFile
) -> None:
    token = tokens_file.tokens["root"]
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    async with secured.channel() as channel:
        outcome = await call(
            channel,
            "/taskyard.v1.TaskService/ListTasks",
            b"",
            metadata=[("authorization", f"Bearer {forged}")],
        )
    assert (outcome.code, outcome.reason) == (grpc.StatusCode.UNAUTHENTICATED, "INVALID_TOKEN")


async def test_an_unknown_method_is_refused_before_it_is_unimplemented(
    secured: Broker, tokens_file: TokensFile
) -> None:
    path = "/taskyard.v1.SecretService/DoThings"
    async with secured.channel() as channel:
        anonymous = await call(channel, path, b"")
        submitter = await call(channel, path, b"", metadata=tokens_file.metadata("alice"))
        admin = await call(channel, path, b"", metadata=tokens_file.metadata("root"))
    assert anonymous.code is grpc.StatusCode.UNAUTHENTICATED
    assert submitter.code is grpc.StatusCode.PERMISSION_DENIED
    assert admin.code is grpc.StatusCode.UNIMPLEMENTED


async def test_health_and_reflection_stay_open_without_a_token(secured: Broker) -> None:
    from grpc_health.v1 import health_pb2
    from grpc_reflection.v1alpha import reflection_pb2

    async with secured.channel() as channel:
        health = await call(
            channel, "/grpc.health.v1.Health/Check", health_pb2.HealthCheckRequest()
        )
        listing = await call(
            channel,
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
            reflection_pb2.ServerReflectionRequest(list_services=""),
            streaming="bidi",
        )
    assert health.code is grpc.StatusCode.OK
    assert listing.code is grpc.StatusCode.OK
    answer = reflection_pb2.ServerReflectionResponse.FromString(listing.first or b"")
    names = {s.name for s in answer.list_services_response.service}
    assert "taskyard.v1.TaskService" in names


# Connect error codes are gRPC's names in lower case (CANCELLED is spelled CANCELED).
_REFUSALS = {"permission_denied", "unauthenticated", "unknown", "internal"}


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("method", _methods(), ids=_key)
async def test_role_may_call_only_its_rpcs_over_http_too(
    secured: Broker,
    tokens_file: TokensFile,
    alice_task: str,
    method: MethodDescriptor,
    role: str,
) -> None:
    """The same matrix through the HTTP/JSON API: the same Guard decides."""
    allowed = _allowed(method)
    assert allowed is not None
    http = Http(secured.http_port, token=tokens_file.tokens[WHO[role]])
    path = f"{method.containing_service.name}/{method.name}"
    body = _substitute(REQUESTS.get(_key(method), {}), alice_task)
    if method.client_streaming:
        # Bidirectional streams need HTTP/2: gRPC only, for everyone.
        async with http.stream(path, body) as stream:
            assert await stream.read() is None
        assert stream.end is not None and stream.end["error"]["code"] == "unimplemented"
        return
    if method.server_streaming:
        async with http.stream(path, body) as stream:
            first = await stream.read()
            error = stream.end.get("error") if first is None and stream.end else None
    else:
        reply = await http.call(path, body)
        error = reply.body if reply.status != 200 else None
    if role in allowed:
        assert error is None or error["code"] not in _REFUSALS, error
        return
    assert error is not None and error["code"] == "permission_denied", error
    assert error_reason(error) == "ROLE_NOT_ALLOWED"


@pytest.mark.parametrize("role", ROLES)
async def test_get_caller_lists_what_the_role_may_call(
    secured: Broker, tokens_file: TokensFile, role: str
) -> None:
    """GetCaller (what the dashboard offers) agrees with the matrix above, method by method."""
    reply = await Http(secured.http_port, token=tokens_file.tokens[WHO[role]]).call(
        "SystemService/GetCaller"
    )
    assert reply.status == 200, reply
    caller = reply.body["caller"]
    assert (caller["name"], caller["authenticated"], caller["roles"]) == (WHO[role], True, [role])
    assert "queueLimited" not in caller  # this file's tokens are not limited to queues
    expected = sorted(
        f"{m.containing_service.full_name}/{m.name}"
        for m in _methods()
        if role in (_allowed(m) or set())
    )
    assert caller["methods"] == expected
    own = {"TaskService/GetTask", "TaskService/ListTasks", "TaskService/CancelTask"}
    if role == SUB:
        assert {f"taskyard.v1.{m}" for m in own} <= set(caller["ownTaskMethods"])
    else:
        assert "ownTaskMethods" not in caller
