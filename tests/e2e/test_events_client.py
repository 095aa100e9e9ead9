"""The event stream from the Python SDK (`Client.events`) and the CLI (`taskyard events`)."""

from __future__ import annotations

import asyncio
import contextlib
import json

import grpc

from tests.cli import TASKYARD
from tests.helpers import ROOT, Broker, python_env
from worker_sdk import Client, Event, TaskyardError

DEADLINE_S = 30.0


async def test_client_events_follow_a_task_and_resume_across_a_broker_restart(
    broker: Broker, client: Client
) -> None:
    seen: list[Event] = []
    arrived = asyncio.Condition()

    async def listen() -> None:
        async with Client(broker.target) as watcher:
            async for event in watcher.events(kinds=["task_state"], states=["pending"]):
                async with arrived:
                    seen.append(event)
                    arrived.notify_all()

    async def submit_until_seen(target: str) -> str:
        """Submit (again) until the listener shows one of them: it may not be subscribed yet."""
        async with asyncio.timeout(DEADLINE_S), Client(target) as submitter:
            while True:
                try:
                    task = await submitter.submit("echo")
                except TaskyardError as error:  # a restarted broker: the channel reconnects
                    assert error.code is grpc.StatusCode.UNAVAILABLE, error
                    await asyncio.sleep(0.2)
                    continue
                if await _seen_within(arrived, seen, task.id, 1.0):
                    return task.id

    listener = asyncio.create_task(listen())
    try:
        first = await submit_until_seen(broker.target)
        await broker.stop()
        await broker.start()  # same port, a new stream id
        second = await submit_until_seen(broker.target)
    finally:
        listener.cancel()
    kinds = [e.kind for e in seen if e.kind == "gap" or e.task_id in (first, second)]
    # The restarted broker cannot resume the old stream: one gap, then live events.
    assert kinds[0] == "task_state" and "gap" in kinds and kinds[-1] == "task_state"
    gap = next(e for e in seen if e.kind == "gap")
    assert gap.change == "unknown_stream"
    assert all(e.state is not None and e.state.value == "pending" for e in seen if e.task_id)


async def test_taskyard_events_prints_json_lines(broker: Broker, client: Client) -> None:
    proc = await asyncio.create_subprocess_exec(
        str(TASKYARD), "events", "--json", "--kind", "task_state", "--target", broker.target,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=python_env(), cwd=ROOT,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        # It prints nothing until an event: submit until one of ours shows up.
        async with asyncio.timeout(DEADLINE_S):
            task = await client.submit("echo")
            pending = asyncio.ensure_future(proc.stdout.readline())
            while True:
                done, _ = await asyncio.wait({pending}, timeout=0.5)
                if done:
                    event = json.loads(pending.result())
                    if event["taskState"]["taskId"] == task.id:
                        break
                    pending = asyncio.ensure_future(proc.stdout.readline())
                else:
                    task = await client.submit("echo")  # subscribed after the first one
    finally:
        proc.kill()
        await proc.wait()
    assert event["taskState"]["state"] == "TASK_STATE_PENDING"


async def _seen_within(
    arrived: asyncio.Condition, seen: list[Event], task_id: str, s: float
) -> bool:
    async with arrived:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                arrived.wait_for(lambda: any(e.task_id == task_id for e in seen)), s
            )
    return any(e.task_id == task_id for e in seen)
