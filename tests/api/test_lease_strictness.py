"""The Lease stream is as strict as docs/protocol.md says, however fast the worker writes.

A second hello is a PROTOCOL_ERROR also when it comes right behind the first, before
the welcome was written; a hello with control characters is refused; lease items whose
task id cannot be a task's are LEASE_LOST without reaching the database; and what a
worker reports is kept even with a NUL in it (PostgreSQL cannot store one).
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from taskyard.v1 import payload_pb2
from taskyard.v1 import worker_service_pb2 as pb
from tests.e2e.test_recovery import LeaseCall, read_kind
from tests.helpers import Broker, stubs
from worker_sdk import Client, TaskFailed
from worker_sdk._errors import TaskyardError as SdkError

HELLO = pb.Hello(worker_id="w", task_types=["record"], credits=1)


async def _ends_with(call: LeaseCall) -> tuple[grpc.StatusCode, str]:
    """How the broker ends the stream; ("open", "") if it has not within 15 s."""
    try:
        async with asyncio.timeout(15):
            while True:
                message = await call.read()
                if message is grpc.aio.EOF:
                    return grpc.StatusCode.OK, ""
    except grpc.aio.AioRpcError as error:
        got = SdkError.from_rpc_error(error)
        return got.code, got.reason
    except TimeoutError:
        call.cancel()
        return grpc.StatusCode.UNKNOWN, "the stream stayed open"


async def test_a_second_hello_right_behind_the_first_is_always_a_protocol_error(
    broker: Broker,
) -> None:
    async with stubs(broker) as s:
        for _ in range(20):
            call: LeaseCall = s.workers.Lease()
            # Both are written before the welcome could be: the broker is still writing
            # it when it reads the second hello.
            await call.write(pb.LeaseRequest(hello=HELLO))
            await call.write(pb.LeaseRequest(hello=HELLO))
            assert await _ends_with(call) == (grpc.StatusCode.INVALID_ARGUMENT, "PROTOCOL_ERROR")


async def test_a_hello_with_control_characters_is_refused(broker: Broker) -> None:
    bad: dict[str, Any] = {
        "worker_id": {"worker_id": "w\n"},
        "task type": {"task_types": ["record\x00"]},
        "queue": {"queues": ["default\t"]},
        "sdk language": {"sdk_language": "py\x00thon"},
        "sdk version": {"sdk_version": "1.0\x1b[31m"},
    }
    async with stubs(broker) as s:
        for name, fields in bad.items():
            hello = pb.Hello(worker_id="w", task_types=["record"], credits=1)
            for field, value in fields.items():
                if isinstance(value, list):
                    getattr(hello, field)[:] = value
                else:
                    setattr(hello, field, value)
            call: LeaseCall = s.workers.Lease()
            await call.write(pb.LeaseRequest(hello=hello))
            assert await _ends_with(call) == (
                grpc.StatusCode.INVALID_ARGUMENT,
                "HANDSHAKE_REQUIRED",
            ), name


async def test_lease_items_that_cannot_be_a_tasks_are_lease_lost_and_the_stream_goes_on(
    broker: Broker, client: Client
) -> None:
    async with stubs(broker) as s:
        call: LeaseCall = s.workers.Lease()
        await call.write(pb.LeaseRequest(hello=HELLO))
        await read_kind(call, "welcome")
        for task_id in ["01ARZ3NDEKTSV4RRFFQ69G5F\x00V", "\x00", "x" * 26, ""]:
            beat = pb.Heartbeat(task_id=task_id, lease_id="1")
            await call.write(pb.LeaseRequest(heartbeats=pb.Heartbeats(heartbeats=[beat])))
            ack = (await read_kind(call, "heartbeat_acks")).heartbeat_acks.acks[0]
            assert ack.error.reason == "LEASE_LOST", repr(task_id)
            done = pb.Completion(task_id=task_id, lease_id="1", result=payload_pb2.Payload())
            await call.write(pb.LeaseRequest(completions=pb.Completions(completions=[done])))
            ack2 = (await read_kind(call, "completion_acks")).completion_acks.acks[0]
            assert ack2.error.reason == "LEASE_LOST", repr(task_id)
        # The session is intact: it still gets and completes work.
        task = await client.submit("record", "after")
        lease = (await read_kind(call, "assignments")).assignments.assignments[0]
        done = pb.Completion(task_id=task.id, lease_id=lease.lease_id)
        done.result.json.string_value = "ok"
        await call.write(pb.LeaseRequest(completions=pb.Completions(completions=[done])))
        assert (
            not (await read_kind(call, "completion_acks")).completion_acks.acks[0].HasField("error")
        )
        call.cancel()
    assert await client.wait(task.id, timeout=10) == "ok"


async def test_a_failure_with_a_nul_in_its_message_is_recorded_not_lost(
    broker: Broker, client: Client
) -> None:
    task = await client.submit("record", max_attempts=1)
    async with stubs(broker) as s:
        call: LeaseCall = s.workers.Lease()
        await call.write(pb.LeaseRequest(hello=HELLO))
        lease = (await read_kind(call, "assignments")).assignments.assignments[0]
        failure = pb.Failure(type="Bad\x00Type", message="bytes b'\x00\x01' in the input")
        done = pb.Completion(task_id=task.id, lease_id=lease.lease_id, failure=failure)
        await call.write(pb.LeaseRequest(completions=pb.Completions(completions=[done])))
        ack = (await read_kind(call, "completion_acks")).completion_acks.acks[0]
        assert not ack.HasField("error")
        call.cancel()
    try:
        await client.wait(task.id, timeout=10)
    except TaskFailed as failed:
        error = failed.task.error
    assert error is not None
    assert (error.type, error.message) == ("Bad\ufffdType", "bytes b'\ufffd\ufffd' in the input")
