"""The global event stream for clients: `Client.events` and the `Event` it yields."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import grpc

from taskyard.v1 import event_service_pb2 as pb
from taskyard.v1 import event_service_pb2_grpc, task_pb2
from worker_sdk._errors import TaskyardError
from worker_sdk._types import Progress, TaskState

_KINDS = {
    "task_state": pb.EVENT_KIND_TASK_STATE,
    "task_progress": pb.EVENT_KIND_TASK_PROGRESS,
    "schedule_fire": pb.EVENT_KIND_SCHEDULE_FIRE,
    "worker": pb.EVENT_KIND_WORKER,
}
RECONNECT_S = 1.0


@dataclass(frozen=True, slots=True)
class Event:
    """One event of `Client.events`; `kind` says which fields are set.

    kind: "task_state", "task_progress", "schedule_fire", "worker" or "gap". A
    gap means events were lost (see docs/events.md): refetch what you show.
    """

    kind: str
    sequence: int
    time: datetime | None
    task_id: str = ""
    queue: str = ""
    type: str = ""
    state: TaskState | None = None  # task_state: the new state
    previous_state: TaskState | None = None  # task_state; None at creation
    attempt: int = 0
    progress: Progress | None = None  # task_progress
    schedule: str = ""  # schedule_fire: the schedule's name
    worker_id: str = ""  # worker
    change: str = ""  # worker: connected, disconnected or draining; gap: the reason
    raw: Any = None  # the taskyard.v1.Event message

    @classmethod
    def from_proto(cls, e: pb.Event) -> Event:
        time = e.time.ToDatetime(tzinfo=UTC) if e.HasField("time") else None
        kind = e.WhichOneof("kind") or "gap"
        base: dict[str, Any] = {"kind": kind, "sequence": e.sequence, "time": time, "raw": e}
        if kind == "task_state":
            t = e.task_state
            previous = TaskState.from_proto(t.previous_state) if t.previous_state else None
            return cls(
                **base, task_id=t.task_id, queue=t.queue, type=t.type,
                state=TaskState.from_proto(t.state), previous_state=previous, attempt=t.attempt,
            )  # fmt: skip
        if kind == "task_progress":
            p = e.task_progress
            progress = Progress(
                p.progress.percent, p.progress.message, p.progress.step, p.progress.total_steps
            )
            return cls(**base, task_id=p.task_id, queue=p.queue, type=p.type, progress=progress)
        if kind == "schedule_fire":
            f = e.schedule_fire
            return cls(
                **base, schedule=f.schedule, task_id=f.fire.task_id, queue=f.queue, type=f.type
            )
        if kind == "worker":
            change = pb.WorkerEventType.Name(e.worker.type).removeprefix("WORKER_EVENT_TYPE_")
            return cls(**base, worker_id=e.worker.worker.worker_id, change=change.lower())
        reason = pb.EventGapReason.Name(e.gap.reason).removeprefix("EVENT_GAP_REASON_")
        return cls(**base, change=reason.lower())


def request(
    kinds: Iterable[str], queues: Iterable[str], types: Iterable[str],
    states: Iterable[TaskState | str], labels: dict[str, str] | None,
) -> pb.WatchEventsRequest:  # fmt: skip
    unknown = sorted(set(kinds) - set(_KINDS))
    if unknown:
        raise ValueError(f"unknown event kinds {unknown}; choose from {sorted(_KINDS)}")
    return pb.WatchEventsRequest(
        kinds=[_KINDS[k] for k in kinds],
        queues=list(queues),
        types=list(types),
        states=[task_pb2.TaskState.Value(f"TASK_STATE_{TaskState(s).name}") for s in states],
        labels=labels or {},
    )


async def follow(
    channel: grpc.aio.Channel, base: pb.WatchEventsRequest, target: str
) -> AsyncIterator[Event]:
    """Events from now on; when the broker goes away, reconnect and resume where it stopped."""
    stub = event_service_pb2_grpc.EventServiceStub(channel)
    stream_id, after = "", 0
    while True:
        req = pb.WatchEventsRequest()
        req.CopyFrom(base)
        req.stream_id, req.after_sequence = stream_id, after
        call = stub.WatchEvents(req)
        try:
            async for response in call:
                stream_id, after = response.stream_id, response.sequence
                for event in response.events:
                    yield Event.from_proto(event)
        except grpc.RpcError as error:
            if error.code() is not grpc.StatusCode.UNAVAILABLE:
                raise TaskyardError.from_rpc_error(error, target) from None
        finally:
            call.cancel()
        await asyncio.sleep(RECONNECT_S)  # the broker restarts or another replica takes over
