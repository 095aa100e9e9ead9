"""Strict input, table-driven: unknown enum values, malformed Timestamps and Durations,
timeouts under the one minimum, control characters in identifiers, JSON nested too deep.

Each case is refused with INVALID_ARGUMENT and its reason before anything reaches the
database (nothing is stored), on both backends. The protobuf classes let every one of
these through, so the broker must check them itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import duration_pb2, struct_pb2, timestamp_pb2

from taskyard.v1 import (
    payload_pb2,
    queue_service_pb2,
    queue_service_pb2_grpc,
    schedule_pb2,
    schedule_service_pb2,
    schedule_service_pb2_grpc,
    stats_service_pb2,
    stats_service_pb2_grpc,
    task_pb2,
    task_service_pb2_grpc,
)
from taskyard.v1 import task_service_pb2 as ts
from tests.helpers import Broker
from worker_sdk._errors import TaskyardError as SdkError

SOME_ID = "01ARZ3NDEKTSV4RRFFQ69G5FAV"
UNKNOWN: Any = 99  # an enum number no enum of the API defines


def task(**fields: Any) -> task_pb2.Task:
    return task_pb2.Task(type="echo", **fields)


def create(**fields: Any) -> ts.CreateTaskRequest:
    return ts.CreateTaskRequest(task=task(**fields))


def nested(levels: int) -> struct_pb2.Value:
    value = struct_pb2.Value(string_value="bottom")
    for _ in range(levels):
        value = struct_pb2.Value(list_value=struct_pb2.ListValue(values=[value]))
    return value


def deep_binary(levels: int) -> payload_pb2.Payload:
    text = "[" * levels + "]" * levels
    return payload_pb2.Payload(binary=text.encode(), content_type="application/json")


def dur(seconds: int = 0, nanos: int = 0) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=seconds, nanos=nanos)


def stamp(seconds: int = 1_700_000_000, nanos: int = 0) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)


def schedule(**policies: Any) -> schedule_service_pb2.CreateScheduleRequest:
    spec = schedule_pb2.ScheduleSpec(cron=schedule_pb2.CronTrigger(expression="* * * * *"))
    return schedule_service_pb2.CreateScheduleRequest(
        schedule=schedule_pb2.Schedule(
            name="s",
            spec=spec,
            task=task(),
            policies=schedule_pb2.SchedulePolicies(**policies),
        )
    )


@dataclass(frozen=True)
class Case:
    service: str
    method: str
    request: Any
    reason: str


CASES = {
    # --- enums: every input enum refuses a number it does not define -------------------
    "retry strategy 99": Case(
        "tasks",
        "CreateTask",
        create(retry_policy=task_pb2.RetryPolicy(strategy=UNKNOWN)),
        "INVALID_RETRY_POLICY",
    ),
    "GetTask view 99": Case(
        "tasks", "GetTask", ts.GetTaskRequest(id=SOME_ID, view=UNKNOWN), "INVALID_VIEW"
    ),
    "ListTasks view 99": Case(
        "tasks", "ListTasks", ts.ListTasksRequest(view=UNKNOWN), "INVALID_VIEW"
    ),
    "ListTasks state 99": Case(
        "tasks", "ListTasks", ts.ListTasksRequest(state=UNKNOWN), "INVALID_STATE"
    ),
    "PurgeTasks state 99": Case(
        "tasks",
        "PurgeTasks",
        ts.PurgeTasksRequest(states=[UNKNOWN]),
        "INVALID_STATE",
    ),
    "schedule catchup 99": Case(
        "schedules", "CreateSchedule", schedule(catchup=UNKNOWN), "INVALID_SCHEDULE_POLICY"
    ),
    "schedule overlap 99": Case(
        "schedules", "CreateSchedule", schedule(overlap=UNKNOWN), "INVALID_SCHEDULE_POLICY"
    ),
    # --- Durations and Timestamps ---------------------------------------------------------
    "duration signs disagree": Case(
        "tasks",
        "CreateTask",
        create(retry_policy=task_pb2.RetryPolicy(initial_backoff=dur(5, -5))),
        "INVALID_DURATION",
    ),
    "duration nanos over a second": Case(
        "tasks",
        "CreateTask",
        create(timeouts=task_pb2.TaskTimeouts(execution=dur(1, 1_000_000_000))),
        "INVALID_DURATION",
    ),
    "timestamp nanos 2e9": Case(
        "tasks", "CreateTask", create(run_time=stamp(nanos=2_000_000_000)), "INVALID_TIMESTAMP"
    ),
    "timestamp nanos negative": Case(
        "tasks", "CreateTask", create(run_time=stamp(nanos=-1)), "INVALID_TIMESTAMP"
    ),
    "ListTasks bound nanos": Case(
        "tasks",
        "ListTasks",
        ts.ListTasksRequest(create_time_after=stamp(nanos=1_000_000_000)),
        "INVALID_TIMESTAMP",
    ),
    "stats range nanos": Case(
        "stats",
        "GetTaskStats",
        stats_service_pb2.GetTaskStatsRequest(end_time=stamp(nanos=-5)),
        "INVALID_TIMESTAMP",
    ),
    # --- one minimum (100 ms) for every timeout, a nanosecond included ---------------------
    "heartbeat 1 ns": Case(
        "tasks",
        "CreateTask",
        create(timeouts=task_pb2.TaskTimeouts(heartbeat=dur(nanos=1))),
        "INVALID_TIMEOUTS",
    ),
    "expiry 1 ns": Case(
        "tasks",
        "CreateTask",
        create(timeouts=task_pb2.TaskTimeouts(expiry=dur(nanos=1))),
        "INVALID_TIMEOUTS",
    ),
    "execution 99 ms": Case(
        "tasks",
        "CreateTask",
        create(timeouts=task_pb2.TaskTimeouts(execution=dur(nanos=99_000_000))),
        "INVALID_TIMEOUTS",
    ),
    "heartbeat 99 ms": Case(
        "tasks",
        "CreateTask",
        create(timeouts=task_pb2.TaskTimeouts(heartbeat=dur(nanos=99_000_000))),
        "INVALID_TIMEOUTS",
    ),
    # --- control characters in identifiers; full-match names ------------------------------
    "request_id NUL": Case(
        "tasks",
        "CreateTask",
        ts.CreateTaskRequest(task=task(), request_id="order-1\x00"),
        "INVALID_REQUEST_ID",
    ),
    "request_id newline": Case(
        "tasks",
        "CreateTask",
        ts.CreateTaskRequest(task=task(), request_id="order\n1"),
        "INVALID_REQUEST_ID",
    ),
    "type with a trailing newline": Case(
        "tasks",
        "CreateTask",
        ts.CreateTaskRequest(task=task_pb2.Task(type="echo\n")),
        "INVALID_TYPE",
    ),
    "queue NUL": Case("tasks", "CreateTask", create(queue="q\x00"), "INVALID_QUEUE"),
    "label key NUL": Case("tasks", "CreateTask", create(labels={"k\x00": "v"}), "INVALID_LABELS"),
    "label value NUL": Case("tasks", "CreateTask", create(labels={"k": "v\x00"}), "INVALID_LABELS"),
    "concurrency key DEL": Case(
        "tasks", "CreateTask", create(concurrency_key="k\x7f"), "INVALID_CONCURRENCY_KEY"
    ),
    "trace context NUL": Case(
        "tasks",
        "CreateTask",
        create(trace_context={"traceparent": "00-\x00"}),
        "INVALID_TRACE_CONTEXT",
    ),
    "non-retryable type NUL": Case(
        "tasks",
        "CreateTask",
        create(retry_policy=task_pb2.RetryPolicy(non_retryable_error_types=["E\x00"])),
        "INVALID_RETRY_POLICY",
    ),
    "cancel reason NUL": Case(
        "tasks", "CancelTask", ts.CancelTaskRequest(id=SOME_ID, reason="no\x00"), "INVALID_TEXT"
    ),
    "ListTasks queue NUL": Case(
        "tasks", "ListTasks", ts.ListTasksRequest(queue="q\x00"), "INVALID_QUEUE"
    ),
    "ListTasks type newline": Case(
        "tasks", "ListTasks", ts.ListTasksRequest(type="echo\n"), "INVALID_TYPE"
    ),
    "stats type NUL": Case(
        "stats", "GetTaskStats", stats_service_pb2.GetTaskStatsRequest(type="t\x00"), "INVALID_TYPE"
    ),
    "queue pause note NUL": Case(
        "queues",
        "PauseQueue",
        queue_service_pb2.PauseQueueRequest(name="default", note="x\x00"),
        "INVALID_TEXT",
    ),
    # --- JSON nesting: 32 levels at most, as a Value or as binary JSON -----------------------
    "json 33 deep": Case(
        "tasks",
        "CreateTask",
        create(payload=payload_pb2.Payload(json=nested(33))),
        "PAYLOAD_TOO_DEEP",
    ),
    "binary json 33 deep": Case(
        "tasks", "CreateTask", create(payload=deep_binary(33)), "PAYLOAD_TOO_DEEP"
    ),
    "binary json 5000 deep": Case(
        "tasks", "CreateTask", create(payload=deep_binary(5000)), "PAYLOAD_TOO_DEEP"
    ),
}

ACCEPTED = {
    "json 32 deep": create(payload=payload_pb2.Payload(json=nested(32))),
    "binary json 32 deep": create(payload=deep_binary(32)),
    "label value with a tab and a newline": create(labels={"note": "a\tb\nc"}),
    "timeouts at the minimum": create(
        timeouts=task_pb2.TaskTimeouts(
            heartbeat=dur(nanos=100_000_000), expiry=dur(nanos=100_000_000)
        )
    ),
}


def _stub(channel: grpc.aio.Channel, service: str) -> Any:
    return {
        "tasks": task_service_pb2_grpc.TaskServiceStub,
        "schedules": schedule_service_pb2_grpc.ScheduleServiceStub,
        "stats": stats_service_pb2_grpc.StatsServiceStub,
        "queues": queue_service_pb2_grpc.QueueServiceStub,
    }[service](channel)


async def _stored(channel: grpc.aio.Channel) -> int:
    tasks = task_service_pb2_grpc.TaskServiceStub(channel)
    return len((await tasks.ListTasks(ts.ListTasksRequest(page_size=1000))).tasks)


async def test_invalid_input_is_refused_with_its_reason_and_stores_nothing(
    broker: Broker,
) -> None:
    # One broker for the whole table: each case is a request, not a process.
    wrong: list[str] = []
    async with broker.channel() as channel:
        for name, case in CASES.items():
            method: Callable[[Any], Awaitable[Any]] = getattr(
                _stub(channel, case.service), case.method
            )
            try:
                await method(case.request)
            except grpc.aio.AioRpcError as error:
                got = SdkError.from_rpc_error(error)
                if (got.code, got.reason) != (grpc.StatusCode.INVALID_ARGUMENT, case.reason):
                    wrong.append(f"{name}: {got.code.name} {got.reason} ({got.message})")
            else:
                wrong.append(f"{name}: accepted")
        assert wrong == []
        assert await _stored(channel) == 0


async def test_valid_edge_input_is_accepted(broker: Broker) -> None:
    async with broker.channel() as channel:
        tasks = task_service_pb2_grpc.TaskServiceStub(channel)
        for name, request in ACCEPTED.items():
            created = (await tasks.CreateTask(request)).task
            got = (await tasks.GetTask(ts.GetTaskRequest(id=created.id))).task
            assert got.payload == request.task.payload, name
            assert dict(got.labels) == dict(request.task.labels), name
