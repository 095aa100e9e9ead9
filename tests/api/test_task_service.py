"""TaskService against a real broker: status codes, reasons, pagination, views."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import grpc
import pytest
from google.protobuf import struct_pb2
from google.protobuf.timestamp_pb2 import Timestamp

from taskyard.v1 import payload_pb2, task_pb2
from taskyard.v1 import task_service_pb2 as ts
from tests.helpers import Broker, start_worker, stubs
from worker_sdk import Client, TaskSpec, TaskyardError
from worker_sdk._errors import TaskyardError as SdkError


async def call_error(coro: object) -> SdkError:
    with pytest.raises(TaskyardError) as info:
        await coro  # type: ignore[misc]
    return info.value


async def test_empty_type_is_invalid_argument(client: Client) -> None:
    error = await call_error(client.submit(""))
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_TYPE")
    assert "task.type" in error.message


async def test_type_with_spaces_is_invalid_argument(client: Client) -> None:
    error = await call_error(client.submit("send email"))
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_TYPE")


async def test_unknown_task_id_is_not_found(client: Client) -> None:
    error = await call_error(client.get("01ARZ3NDEKTSV4RRFFQ69G5FAV"))
    assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "TASK_NOT_FOUND")


async def test_malformed_task_id_is_invalid_argument(client: Client) -> None:
    error = await call_error(client.get("not-an-id"))
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ID")


async def test_binary_payload_claiming_json_must_be_json(broker: Broker) -> None:
    async with stubs(broker) as s:
        request = ts.CreateTaskRequest(
            task=task_pb2.Task(
                type="echo",
                payload=payload_pb2.Payload(binary=b'{"a": 1,', content_type="application/json"),
            )
        )
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await s.tasks.CreateTask(request)
        assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        error = SdkError.from_rpc_error(info.value)
        assert error.reason == "MALFORMED_JSON"


async def test_payload_over_the_size_limit_is_invalid_argument_and_nothing_is_stored(
    client: Client,
) -> None:
    error = await call_error(client.submit("echo", "x" * (1024 * 1024 + 1)))
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "PAYLOAD_TOO_LARGE")
    assert [t async for t in client.list()] == []


async def test_negative_page_size_is_invalid_argument(broker: Broker) -> None:
    async with stubs(broker) as s:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await s.tasks.ListTasks(ts.ListTasksRequest(page_size=-5))
    error = SdkError.from_rpc_error(info.value)
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PAGE_SIZE")
    assert "-5" in error.message


async def test_pages_cover_every_task_once_newest_first(client: Client, broker: Broker) -> None:
    created = [await client.submit("echo", {"i": i}, queue="pages") for i in range(7)]
    await client.submit("echo", queue="other")
    async with stubs(broker) as s:
        seen: list[str] = []
        token = ""
        pages = 0
        while True:
            page = await s.tasks.ListTasks(
                ts.ListTasksRequest(queue="pages", page_size=3, page_token=token)
            )
            seen += [t.id for t in page.tasks]
            pages += 1
            token = page.next_page_token
            if not token:
                break
    assert pages == 3
    assert seen == [t.id for t in reversed(created)]


async def test_page_token_from_other_filters_is_rejected(client: Client, broker: Broker) -> None:
    for _ in range(3):
        await client.submit("echo", queue="a")
    async with stubs(broker) as s:
        first = await s.tasks.ListTasks(ts.ListTasksRequest(queue="a", page_size=1))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await s.tasks.ListTasks(
                ts.ListTasksRequest(queue="b", page_size=1, page_token=first.next_page_token)
            )
        assert SdkError.from_rpc_error(info.value).reason == "INVALID_PAGE_TOKEN"
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await s.tasks.ListTasks(ts.ListTasksRequest(page_token="garbage!"))
        assert SdkError.from_rpc_error(info.value).reason == "INVALID_PAGE_TOKEN"


async def test_list_filters_by_state_and_type(client: Client) -> None:
    a = await client.submit("kind.a")
    await client.submit("kind.b")
    await client.cancel(a.id)
    cancelled = [t.id async for t in client.list(state="cancelled")]
    by_type = [t.id async for t in client.list(type="kind.a")]
    assert cancelled == [a.id] and by_type == [a.id]


async def test_list_filters_by_a_half_open_create_time_range(client: Client) -> None:
    first, second, third = [await client.submit("echo", queue="timed") for _ in range(3)]
    assert first.create_time and second.create_time and third.create_time
    assert first.create_time < second.create_time < third.create_time

    async def listed(after: datetime | None = None, before: datetime | None = None) -> list[str]:
        tasks = client.list(queue="timed", created_after=after, created_before=before)
        return [t.id async for t in tasks]

    assert await listed(after=second.create_time) == [third.id, second.id]
    assert await listed(before=second.create_time) == [first.id]
    assert await listed(second.create_time, third.create_time) == [second.id]


async def test_page_token_is_tied_to_its_create_time_bounds(client: Client) -> None:
    tasks = [await client.submit("echo") for _ in range(3)]
    assert tasks[0].create_time is not None
    start = tasks[0].create_time
    page, token = await client.list_page(page_size=1, created_after=start)
    assert page == [await client.get(tasks[2].id, full=False)] and token
    later = start + timedelta(microseconds=1)
    error = await call_error(client.list_page(page_token=token, created_after=later))
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN")
    rest, _ = await client.list_page(page_size=5, page_token=token, created_after=start)
    assert [t.id for t in rest] == [tasks[1].id, tasks[0].id]


async def test_create_time_bound_beyond_year_9999_is_invalid_argument(broker: Broker) -> None:
    async with stubs(broker) as s:
        request = ts.ListTasksRequest(create_time_before=Timestamp(seconds=253_402_300_800))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await s.tasks.ListTasks(request)
    error = SdkError.from_rpc_error(info.value)
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_TIMESTAMP")
    assert "create_time_before" in error.message


async def test_watch_ends_with_the_result_even_in_the_basic_view(
    broker: Broker, tmp_path: Path
) -> None:
    worker = await start_worker(broker, tmp_path, name="w")
    async with stubs(broker) as s:
        payload = payload_pb2.Payload(json=struct_pb2.Value(string_value="back"))
        created = await s.tasks.CreateTask(
            ts.CreateTaskRequest(task=task_pb2.Task(type="echo", payload=payload))
        )
        messages = [
            m.task async for m in s.tasks.WatchTask(ts.WatchTaskRequest(id=created.task.id))
        ]
    await worker.stop()
    assert messages[-1].state == task_pb2.TASK_STATE_SUCCEEDED
    assert messages[-1].result == payload  # the outcome, without another call
    assert not any(m.HasField("payload") for m in messages)  # BASIC: no payload
    assert not any(m.HasField("result") for m in messages[:-1])


async def test_basic_view_omits_the_payload_and_full_view_has_it(broker: Broker) -> None:
    async with stubs(broker) as s:
        payload = payload_pb2.Payload(json=struct_pb2.Value(string_value="big"))
        created = await s.tasks.CreateTask(
            ts.CreateTaskRequest(task=task_pb2.Task(type="echo", payload=payload))
        )
        listed = await s.tasks.ListTasks(ts.ListTasksRequest())
        assert not listed.tasks[0].HasField("payload")
        full = await s.tasks.ListTasks(ts.ListTasksRequest(view=ts.TASK_VIEW_FULL))
        assert full.tasks[0].payload == payload
        got = await s.tasks.GetTask(ts.GetTaskRequest(id=created.task.id))
        assert got.task.payload == payload


async def test_batch_create_reports_each_invalid_item_and_creates_the_rest(
    broker: Broker,
) -> None:
    async with stubs(broker) as s:
        response = await s.tasks.BatchCreateTasks(
            ts.BatchCreateTasksRequest(
                requests=[
                    ts.CreateTaskRequest(task=task_pb2.Task(type="ok")),
                    ts.CreateTaskRequest(task=task_pb2.Task(type="")),
                    ts.CreateTaskRequest(task=task_pb2.Task(type="ok", priority=3)),
                ]
            )
        )
        kinds = [r.WhichOneof("outcome") for r in response.results]
        assert kinds == ["task", "error", "task"]
        assert response.results[1].error.reason == "INVALID_TYPE"
        assert response.results[1].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        assert "requests[1]" in response.results[1].error.message
        listed = await s.tasks.ListTasks(ts.ListTasksRequest())
        assert len(listed.tasks) == 2


async def test_batch_over_a_thousand_is_invalid_argument(broker: Broker) -> None:
    async with stubs(broker) as s:
        request = ts.BatchCreateTasksRequest(
            requests=[ts.CreateTaskRequest(task=task_pb2.Task(type="ok"))] * 1001
        )
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await s.tasks.BatchCreateTasks(request)
    assert SdkError.from_rpc_error(info.value).reason == "BATCH_TOO_LARGE"


async def test_repeated_request_id_returns_the_original_task(client: Client) -> None:
    first = await client.submit("echo", {"n": 1}, request_id="order-42")
    again = await client.submit("echo", {"n": 2}, request_id="order-42")
    assert again.id == first.id
    assert again.payload == {"n": 1}
    assert len([t async for t in client.list()]) == 1


async def test_cancel_of_a_finished_task_is_failed_precondition(
    client: Client, broker: Broker
) -> None:
    from tests.helpers import start_worker

    worker = await start_worker(broker, broker.workdir, name="w1")
    task = await client.submit("echo", 1)
    await client.wait(task.id, timeout=20)
    error = await call_error(client.cancel(task.id))
    assert (error.code, error.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "TASK_ALREADY_FINISHED",
    )
    await worker.stop()


async def test_watch_of_unknown_task_is_not_found(client: Client) -> None:
    with pytest.raises(TaskyardError) as info:
        async for _ in client.watch("01ARZ3NDEKTSV4RRFFQ69G5FAV"):
            pass
    assert info.value.reason == "TASK_NOT_FOUND"


async def test_list_filters_by_labels_all_of_them(client: Client) -> None:
    both = await client.submit("echo", labels={"team": "a", "env": "prod"})
    await client.submit("echo", labels={"team": "a", "env": "dev"})
    await client.submit("echo", labels={"team": "b", "env": "prod"})
    await client.submit("echo")
    team_a = [t.id async for t in client.list(labels={"team": "a"})]
    assert len(team_a) == 2 and both.id in team_a
    assert [t.id async for t in client.list(labels={"team": "a", "env": "prod"})] == [both.id]
    assert [t.id async for t in client.list(labels={"team": "c"})] == []
    error = await call_error(client.list_page(labels={"": "x"}))
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_LABELS")


async def test_a_labels_page_examines_a_bounded_number_of_tasks(client: Client) -> None:
    """A rare label costs every page the same: a short page with a token, not a full scan."""
    rare = await client.submit("echo", labels={"rare": "yes"})
    for _ in range(11):  # 11,000 newer tasks without the label: more than one scan (10,000)
        await client.submit_many(TaskSpec("echo") for _ in range(1000))
    first, token = await client.list_page(labels={"rare": "yes"}, page_size=10)
    assert first == [] and token  # the budget ran out before the end: not the last page
    second, token = await client.list_page(labels={"rare": "yes"}, page_size=10, page_token=token)
    assert [t.id for t in second] == [rare.id] and token == ""
