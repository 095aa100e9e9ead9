"""Typed tasks end to end: one definition imported by the client and run by a real worker."""

from __future__ import annotations

import asyncio
import datetime
import decimal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests import typed_tasks as tt
from tests.helpers import Broker, WorkerProcess, start_worker
from worker_sdk import (
    BatchSubmitError,
    Client,
    SyncClient,
    Task,
    TaskState,
    ValidationError,
)


async def last(updates: AsyncIterator[Task]) -> Task | None:
    final = None
    async for final in updates:  # noqa: B007 - the last one is wanted
        pass
    return final


@pytest.fixture
async def typed_worker(broker: Broker, tmp_path: Path) -> AsyncIterator[WorkerProcess]:
    worker = await start_worker(broker, tmp_path, name="typed", app="tests.typed_tasks:worker")
    yield worker
    await worker.stop()


async def test_every_supported_type_makes_the_round_trip_exactly(
    typed_worker: WorkerProcess, client: Client
) -> None:
    when = datetime.datetime(2026, 11, 27, 12, 30, 15, 123456, tzinfo=datetime.UTC)
    ident = uuid.uuid4()
    huge = 2**63 + 12345  # far beyond the 2**53 a JSON number (a double) holds exactly
    handle = await tt.roundtrip.submit(
        client,
        point=tt.Point(1, -2),
        size={"width": 640, "height": 480},
        price=tt.Price(amount=decimal.Decimal("19.990000000000000001"), currency="EUR"),
        when=when,
        id=ident,
        color=tt.Color.GREEN,
        big=huge,
        raw=b"\xff\x00binary",
    )
    everything, raw = await handle.result(timeout=60)
    assert everything == tt.Everything(
        point=tt.Point(1, -2),
        size={"width": 640, "height": 480},
        price=tt.Price(amount=decimal.Decimal("19.990000000000000001"), currency="EUR"),
        when=when,
        id=ident,
        color=tt.Color.GREEN,
        big=huge,
    )
    assert raw == b"\xff\x00binary"
    # On the wire: a JSON object of the arguments by name, wide integers as decimal strings.
    task = await handle.get()
    assert task.payload["big"] == str(huge)
    assert task.payload["point"] == {"x": 1, "y": -2}
    assert task.payload["price"]["amount"] == "19.990000000000000001"
    assert task.payload["color"] == "green"


async def test_bad_arguments_fail_at_submit_with_the_field_path_and_send_nothing(
    broker: Broker, client: Client
) -> None:
    with pytest.raises(ValidationError) as info:
        await tt.roundtrip.submit(  # type: ignore[call-overload]
            client,
            point=tt.Point(1, "two"),  # type: ignore[arg-type]
            size={"width": 1},
            price=tt.Price(amount=decimal.Decimal(1), currency="EUR"),
            when=datetime.datetime.now(datetime.UTC),
            id=uuid.uuid4(),
            color=tt.Color.RED,
            big=1,
            raw=b"",
        )
    paths = {e.path for e in info.value.errors}
    assert paths == {"point.y", "size.height"}, info.value.errors
    with pytest.raises(ValidationError) as missing:
        await tt.add.submit(client)  # type: ignore[call-overload]
    assert "missing a required argument: 'a'" in str(missing.value)
    tasks, _ = await client.list_page()
    assert tasks == []


async def test_a_payload_that_does_not_match_fails_the_task_once_as_validation_error(
    typed_worker: WorkerProcess, client: Client
) -> None:
    # As grpcurl or another language might send it: a string-typed submission.
    task = await client.submit("typed.add", {"a": "not a number", "c": 1}, max_attempts=3)
    final = await last(client.watch(task.id, timeout=60))
    assert final is not None and final.state is TaskState.FAILED
    assert final.attempt == 1  # never retried
    assert final.error is not None and final.error.type == "ValidationError"
    assert "a: Input should be a valid integer" in final.error.message
    assert "c: Extra inputs are not permitted" in final.error.message


async def test_the_handler_gets_its_context_resources_and_defaults(
    typed_worker: WorkerProcess, client: Client
) -> None:
    handle = await tt.with_context.submit(client)
    assert await handle.result(timeout=60) == {"id": handle.id, "attempt": 1, "db": "a pool"}
    added = await tt.add.submit(client, 41)  # b defaults to 1 in the worker
    assert (await added.get()).payload == {"a": 41}
    assert await added.result(timeout=60) == 42


async def test_options_override_the_definition_defaults_per_call(
    broker: Broker, client: Client
) -> None:
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
    later_add = tt.add.options(priority=9, run_at=later, queue="later", labels={"k": "v"})
    handle = await later_add.submit(client, a=1)
    task = handle.task
    assert task is not None
    assert (task.priority, task.queue, task.state, task.labels) == (
        9,
        "later",
        TaskState.SCHEDULED,
        {"k": "v"},
    )
    assert tt.add.defaults.priority == 0  # the definition itself is unchanged
    await handle.cancel()


async def test_a_batch_of_typed_calls_gives_typed_handles(
    typed_worker: WorkerProcess, client: Client
) -> None:
    handles = await tt.add.submit_many(client, [tt.add.call(a=i, b=i) for i in range(25)])
    results = await asyncio.gather(*(h.result(timeout=60) for h in handles))
    assert results == [2 * i for i in range(25)]
    # Typed calls mix with string-typed specs in Client.submit_many.
    with pytest.raises(BatchSubmitError) as info:
        await client.submit_many([tt.add.spec(a=1), tt.add.options(queue="bad queue!").spec(a=2)])
    assert [type(r).__name__ for r in info.value.results] == ["Task", "TaskyardError"]


async def test_the_sync_client_submits_and_waits_the_same_way(
    typed_worker: WorkerProcess, broker: Broker
) -> None:
    def script() -> tuple[int, list[int], str]:
        with SyncClient(broker.target) as client:
            handle = tt.add.submit(client, a=20, b=22)
            many = tt.add.submit_many(client, [tt.add.call(a=i) for i in range(3)])
            states = [t.state.value for t in handle.watch(timeout=60)]
            return handle.result(timeout=60), [h.result(timeout=60) for h in many], states[-1]

    result, many, last = await asyncio.to_thread(script)
    assert (result, many, last) == (42, [1, 2, 3], "succeeded")


async def test_a_failure_is_retried_by_the_definitions_policy(
    typed_worker: WorkerProcess, client: Client
) -> None:
    handle = await tt.fail.submit(client)
    final = await last(handle.watch(timeout=60))
    assert final is not None and (final.state, final.attempt) == (TaskState.DEAD, 2)
    permanent = await tt.fail.submit(client, permanent=True)
    final = await last(permanent.watch(timeout=60))
    assert final is not None and (final.state, final.attempt) == (TaskState.FAILED, 1)
