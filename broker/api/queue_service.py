"""QueueService: queues as resources — limits, defaults, pause and resume."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from broker.api import convert, queue_convert
from broker.api.runtime import Runtime
from broker.api.status import maps_errors
from broker.core import validation
from broker.core.queues import QueueSettings
from broker.core.task_state import WAITING, TaskState
from broker.engine.upkeep import SaveQueue
from broker.errors import AlreadyExists, FailedPrecondition, NotFound
from broker.store import queues as store
from taskyard.v1 import queue_pb2, queue_service_pb2_grpc
from taskyard.v1 import queue_service_pb2 as qs

Context = Any


class QueueNotFound(NotFound):
    reason = "QUEUE_NOT_FOUND"

    def __init__(self, name: str) -> None:
        super().__init__(f"no queue named {name!r}; list them with `taskyard queue list`")


class QueueService(queue_service_pb2_grpc.QueueServiceServicer):
    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    def _name(self, name: str) -> str:
        return validation.name("name", name, self._rt.settings.limits, reason="INVALID_QUEUE")

    async def _get(self, name: str) -> QueueSettings:
        async with self._rt.db.reader.connect() as conn:
            settings = await store.get_queue(conn, name)
        if settings is None:
            raise QueueNotFound(name)
        return settings

    async def _save(self, settings: QueueSettings, *, create: bool = False) -> QueueSettings:
        queue_convert.check_defaults(settings.check(), self._rt.defaults)
        saved = await self._rt.committer.submit(SaveQueue(settings, create=create))
        if saved is None:
            raise AlreadyExists(
                f"queue {settings.name!r} exists; change it with UpdateQueue",
                reason="QUEUE_EXISTS",
            )
        self._rt.queues.put(saved)
        return saved

    def _proto(self, settings: QueueSettings) -> queue_pb2.Queue:
        return queue_convert.queue(settings, self._rt.defaults)

    @maps_errors
    async def CreateQueue(
        self, request: qs.CreateQueueRequest, context: Context
    ) -> qs.CreateQueueResponse:
        name = self._name(request.queue.name)
        now = self._rt.clock.now_us()
        base = QueueSettings(name, explicit=True, created_at=now, updated_at=now)
        settings = queue_convert.settings_from(request.queue, base, set(queue_convert.SETTABLE))
        saved = await self._save(settings, create=True)
        return qs.CreateQueueResponse(queue=self._proto(saved))

    @maps_errors
    async def GetQueue(self, request: qs.GetQueueRequest, context: Context) -> qs.GetQueueResponse:
        return qs.GetQueueResponse(queue=self._proto(await self._get(self._name(request.name))))

    @maps_errors
    async def ListQueues(
        self, request: qs.ListQueuesRequest, context: Context
    ) -> qs.ListQueuesResponse:
        limit = validation.page_size(request.page_size, self._rt.settings.limits)
        fingerprint = convert.filter_fingerprint("queues")
        after = convert.parse_page_token(request.page_token, fingerprint)
        async with self._rt.db.reader.connect() as conn:
            found = await store.list_queues(conn, after=after, limit=limit + 1)
        response = qs.ListQueuesResponse(queues=[self._proto(q) for q in found[:limit]])
        if len(found) > limit:
            response.next_page_token = convert.page_token(found[limit - 1].name, fingerprint)
        return response

    @maps_errors
    async def UpdateQueue(
        self, request: qs.UpdateQueueRequest, context: Context
    ) -> qs.UpdateQueueResponse:
        current = await self._get(self._name(request.queue.name))
        paths = set(request.update_mask.paths) or set(queue_convert.SETTABLE)
        changed = queue_convert.settings_from(request.queue, current, paths)
        changed = replace(changed, explicit=True, updated_at=self._rt.clock.now_us())
        saved = await self._save(changed)
        return qs.UpdateQueueResponse(queue=self._proto(saved))

    @maps_errors
    async def DeleteQueue(
        self, request: qs.DeleteQueueRequest, context: Context
    ) -> qs.DeleteQueueResponse:
        name = self._name(request.name)
        await self._get(name)
        async with self._rt.db.reader.connect() as conn:
            held = (await store.counts(conn, [name])).get(name, {})
        busy = sum(n for s, n in held.items() if s in WAITING or s is TaskState.RUNNING)
        if busy and not request.force:
            raise FailedPrecondition(
                f"queue {name!r} has {busy} waiting or running tasks; drain it first or pass force",
                reason="QUEUE_NOT_EMPTY",
            )
        await self._rt.committer.submit(SaveQueue(QueueSettings(name), delete=True))
        self._rt.queues.drop(name)
        return qs.DeleteQueueResponse()

    @maps_errors
    async def PauseQueue(
        self, request: qs.PauseQueueRequest, context: Context
    ) -> qs.PauseQueueResponse:
        note = validation.text("note", request.note[:1000], reason="INVALID_TEXT")
        current = await self._get(self._name(request.name))
        saved = await self._save(
            replace(current, paused=True, pause_note=note, updated_at=self._rt.clock.now_us())
        )
        return qs.PauseQueueResponse(queue=self._proto(saved))

    @maps_errors
    async def ResumeQueue(
        self, request: qs.ResumeQueueRequest, context: Context
    ) -> qs.ResumeQueueResponse:
        current = await self._get(self._name(request.name))
        saved = await self._save(
            replace(current, paused=False, pause_note="", updated_at=self._rt.clock.now_us())
        )
        return qs.ResumeQueueResponse(queue=self._proto(saved))
