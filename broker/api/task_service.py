"""TaskService: submit tasks, read them, cancel, retry, purge and watch them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

from broker.api import convert, options
from broker.api.runtime import Runtime
from broker.api.status import maps_errors
from broker.core import validation
from broker.core.models import NewTask, TaskRecord
from broker.core.task_state import TERMINAL, TaskState
from broker.engine.events import TaskEvent
from broker.engine.ops import CancelTask, CreateTasks
from broker.engine.upkeep import Purge, RetryFinished
from broker.errors import (
    FailedPrecondition,
    InvalidArgument,
    QueueFull,
    ShuttingDown,
    TaskNotFound,
    TaskyardError,
)
from broker.security import access
from broker.store import maintenance, tasks
from taskyard.v1 import (
    error_details_pb2,
    task_pb2,
    task_service_pb2,
    task_service_pb2_grpc,
)

Context = Any  # grpc.aio.ServicerContext; untyped in the generated stubs
BATCH = 500


class TaskService(task_service_pb2_grpc.TaskServiceServicer):
    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    def _accepting(self) -> None:
        if self._rt.shutting_down:
            raise ShuttingDown()

    def _new(self, request: task_service_pb2.CreateTaskRequest, now: int) -> NewTask:
        rt = self._rt
        return convert.new_task(
            request,
            now=now,
            settings=rt.settings,
            defaults=rt.defaults,
            queue_options=rt.queues.options,
            owner=access.owner_of_new_task(),
        )

    def _proto(self, record: TaskRecord, *, full: bool) -> task_pb2.Task:
        return convert.task(record, full=full, default_policy=self._rt.defaults.retry)

    @maps_errors
    async def CreateTask(
        self, request: task_service_pb2.CreateTaskRequest, context: Context
    ) -> task_service_pb2.CreateTaskResponse:
        self._accepting()
        new = self._new(request, self._rt.clock.now_us())
        op = CreateTasks([new])
        (task_id,) = await self._rt.committer.submit(op)
        task = await self._created(new, task_id, request, op)
        return task_service_pb2.CreateTaskResponse(task=task)

    async def _created(
        self,
        new: NewTask,
        task_id: str,
        request: task_service_pb2.CreateTaskRequest,
        op: CreateTasks,
    ) -> task_pb2.Task:
        if not task_id:
            settings = self._rt.queues.get(new.queue)
            raise QueueFull(new.queue, settings.max_depth if settings else None)
        if task_id == new.id:
            policy = self._rt.defaults.retry
            return convert.created_task(new, request.task, policy, op.leased.get(new.id))
        # An earlier request with the same request_id won; return its task.
        return self._proto(await self._get(task_id, full=True), full=True)

    @maps_errors
    async def BatchCreateTasks(
        self, request: task_service_pb2.BatchCreateTasksRequest, context: Context
    ) -> task_service_pb2.BatchCreateTasksResponse:
        self._accepting()
        limits = self._rt.settings.limits
        count = len(request.requests)
        if not 1 <= count <= limits.max_batch:
            raise InvalidArgument(
                f"requests holds {count} items; send 1 to {limits.max_batch} per call",
                reason="BATCH_TOO_LARGE" if count else "INVALID_ARGUMENT",
            )
        now = self._rt.clock.now_us()
        slots: list[NewTask | error_details_pb2.ItemError] = []
        for index, item in enumerate(request.requests):
            try:
                slots.append(self._new(item, now))
            except InvalidArgument as error:
                slots.append(_item_error(error, f"requests[{index}]: "))
        op = CreateTasks([s for s in slots if isinstance(s, NewTask)])
        ids = await self._rt.committer.submit(op) if op.tasks else []
        return await self._batch_response(request, slots, iter(ids), op)

    async def _batch_response(
        self,
        request: task_service_pb2.BatchCreateTasksRequest,
        slots: list[NewTask | error_details_pb2.ItemError],
        ids: Iterator[str],
        op: CreateTasks,
    ) -> task_service_pb2.BatchCreateTasksResponse:
        response = task_service_pb2.BatchCreateTasksResponse()
        policy = self._rt.defaults.retry
        for item, slot in zip(request.requests, slots, strict=True):
            result = response.results.add()
            if isinstance(slot, NewTask):
                task_id = next(ids)
                if task_id == slot.id:  # the common case, built in place
                    leased = op.leased.get(task_id)
                    convert.created_task(slot, item.task, policy, leased, out=result.task)
                    continue
                try:
                    result.task.CopyFrom(await self._created(slot, task_id, item, op))
                except QueueFull as full:
                    result.error.CopyFrom(_item_error(full))
            else:
                result.error.CopyFrom(slot)
        return response

    @maps_errors
    async def GetTask(
        self, request: task_service_pb2.GetTaskRequest, context: Context
    ) -> task_service_pb2.GetTaskResponse:
        full = convert.full_view(request.view, default_full=True)
        record = await self._get(validation.task_id(request.id), full=full)
        return task_service_pb2.GetTaskResponse(task=self._proto(record, full=full))

    async def _get(self, task_id: str, *, full: bool) -> TaskRecord:
        async with self._rt.db.reader.connect() as conn:
            record = await tasks.get_task(conn, task_id, full=full)
        if record is None:
            raise TaskNotFound(task_id)
        return record

    @maps_errors
    async def ListTasks(
        self, request: task_service_pb2.ListTasksRequest, context: Context
    ) -> task_service_pb2.ListTasksResponse:
        limits = self._rt.settings.limits
        limit = validation.page_size(request.page_size, limits)
        filters = tasks.TaskFilter(
            queue=validation.name("queue", request.queue, limits, reason="INVALID_QUEUE")
            if request.queue
            else None,
            state=convert.state_filter(request.state),
            type=validation.name("type", request.type, limits, reason="INVALID_TYPE")
            if request.type
            else None,
            owner=access.owner_filter(),
            created_from_us=_bound(request, "create_time_after"),
            created_before_us=_bound(request, "create_time_before"),
        )
        fingerprint = convert.filter_fingerprint(
            filters.queue,
            filters.state,
            filters.type,
            *(() if filters.created_from_us is None else ("from", filters.created_from_us)),
            *(() if filters.created_before_us is None else ("before", filters.created_before_us)),
        )
        after = convert.parse_page_token(request.page_token, fingerprint)
        full = convert.full_view(request.view, default_full=False)
        async with self._rt.db.reader.connect() as conn:
            records = await tasks.list_tasks(
                conn, filters, limit=limit + 1, before_id=after, full=full
            )
        response = task_service_pb2.ListTasksResponse(
            tasks=[self._proto(r, full=full) for r in records[:limit]]
        )
        if len(records) > limit:
            response.next_page_token = convert.page_token(records[limit - 1].id, fingerprint)
        return response

    @maps_errors
    async def CancelTask(
        self, request: task_service_pb2.CancelTaskRequest, context: Context
    ) -> task_service_pb2.CancelTaskResponse:
        task_id = validation.task_id(request.id)
        if len(request.reason) > 1000:
            raise InvalidArgument("reason is over 1000 characters", reason="INVALID_ARGUMENT")
        validation.text("reason", request.reason, reason="INVALID_TEXT")
        outcome = await self._rt.committer.submit(CancelTask(task_id, request.reason))
        if not outcome.found:
            raise TaskNotFound(task_id)
        if (
            outcome.state is not None
            and outcome.state.is_terminal
            and (outcome.state is not TaskState.CANCELLED)
        ):
            raise FailedPrecondition(
                f"task {task_id} already finished as {outcome.state.label}; only waiting or "
                "running tasks can be cancelled",
                reason="TASK_ALREADY_FINISHED",
            )
        record = await self._get(task_id, full=False)
        return task_service_pb2.CancelTaskResponse(task=self._proto(record, full=False))

    @maps_errors
    async def RetryTask(
        self, request: task_service_pb2.RetryTaskRequest, context: Context
    ) -> task_service_pb2.RetryTaskResponse:
        task_id = validation.task_id(request.id)
        before = await self._get(task_id, full=False)
        if before.state not in maintenance.RETRYABLE:
            raise FailedPrecondition(
                f"task {task_id} is {before.state.label}; only failed, dead, cancelled or "
                "expired tasks can be retried",
                reason="TASK_NOT_RETRYABLE",
            )
        retried = await self._rt.committer.submit(RetryFinished(task_ids=[task_id]))
        if not retried:
            raise FailedPrecondition(
                f"task {task_id} changed state meanwhile; read it and try again",
                reason="TASK_NOT_RETRYABLE",
            )
        after = await self._get(task_id, full=False)
        return task_service_pb2.RetryTaskResponse(task=self._proto(after, full=False))

    @maps_errors
    async def RetryTasks(
        self, request: task_service_pb2.RetryTasksRequest, context: Context
    ) -> task_service_pb2.RetryTasksResponse:
        limits = self._rt.settings.limits
        queue = validation.name("queue", request.queue, limits, reason="INVALID_QUEUE")
        states = _terminal_states(request.states, default={TaskState.DEAD})
        if TaskState.SUCCEEDED in states:
            raise InvalidArgument("succeeded tasks cannot be retried", reason="INVALID_STATE")
        total = 0
        while True:
            op = RetryFinished(queue=queue, states=states, limit=BATCH)
            retried = await self._rt.committer.submit(op)
            total += len(retried)
            if len(retried) < BATCH:
                return task_service_pb2.RetryTasksResponse(retried_count=total)

    @maps_errors
    async def ListTaskAttempts(
        self, request: task_service_pb2.ListTaskAttemptsRequest, context: Context
    ) -> task_service_pb2.ListTaskAttemptsResponse:
        task_id = validation.task_id(request.id)
        async with self._rt.db.reader.connect() as conn:
            record = await tasks.get_task(conn, task_id, full=False)
            if record is None:
                raise TaskNotFound(task_id)
            attempts = await tasks.list_attempts(conn, record)
        return task_service_pb2.ListTaskAttemptsResponse(
            attempts=[options.attempt(a) for a in attempts]
        )

    @maps_errors
    async def PurgeTasks(
        self, request: task_service_pb2.PurgeTasksRequest, context: Context
    ) -> task_service_pb2.PurgeTasksResponse:
        now = self._rt.clock.now_us()
        states = _terminal_states(request.states, default=set(TERMINAL))
        before = (
            convert.micros("finish_time_before", request.finish_time_before)
            if request.HasField("finish_time_before")
            else now + 1
        )
        queue = request.queue or None
        if queue is not None:
            validation.name("queue", queue, self._rt.settings.limits, reason="INVALID_QUEUE")
        total = 0
        while True:
            op = Purge(finished_before=before, states=states, queue=queue, limit=1000)
            deleted = await self._rt.committer.submit(op)
            total += deleted
            if deleted < 1000:
                return task_service_pb2.PurgeTasksResponse(purged_count=total)

    @maps_errors
    async def WatchTask(
        self, request: task_service_pb2.WatchTaskRequest, context: Context
    ) -> AsyncIterator[task_service_pb2.WatchTaskResponse]:
        task_id = validation.task_id(request.id)
        full = convert.full_view(request.view, default_full=False)
        events = self._rt.events
        # Subscribe before the first read, so no change can slip in between.
        queue = events.subscribe(task_id)
        try:
            record = await self._get(task_id, full=full)
            snapshot = await self._watched(record, full=full)
            yield task_service_pb2.WatchTaskResponse(task=snapshot)
            while not record.state.is_terminal:
                event = await self._next_event(queue)
                if event is not None and event.progress is not None:
                    if record.state is TaskState.RUNNING:
                        convert.set_progress(snapshot.progress, event.progress)
                        yield task_service_pb2.WatchTaskResponse(task=snapshot)
                    continue
                fresh = await self._get(task_id, full=full)
                if _changed(record, fresh):
                    record, snapshot = fresh, await self._watched(fresh, full=full)
                    yield task_service_pb2.WatchTaskResponse(task=snapshot)
        finally:
            events.unsubscribe(task_id, queue)

    async def _watched(self, record: TaskRecord, *, full: bool) -> task_pb2.Task:
        """A WatchTask message: the final one carries the result even in the BASIC view."""
        if full or not record.state.is_terminal:
            return self._proto(record, full=full)
        snapshot = self._proto(await self._get(record.id, full=True), full=True)
        snapshot.ClearField("payload")
        return snapshot

    async def _next_event(self, queue: asyncio.Queue[TaskEvent]) -> TaskEvent | None:
        """The next event, or None after the poll interval (changes made elsewhere)."""
        try:
            return await asyncio.wait_for(queue.get(), self._rt.settings.promote_poll_s * 5)
        except TimeoutError:
            return None


def _item_error(error: TaskyardError, prefix: str = "") -> error_details_pb2.ItemError:
    return error_details_pb2.ItemError(
        code=error.code.value[0], reason=error.reason, message=prefix + error.message
    )


def _terminal_states(values: Iterable[int], *, default: set[TaskState]) -> set[TaskState]:
    states = {convert.state_filter(v) for v in values} - {None}
    chosen = {s for s in states if s is not None} or default
    waiting = [s.label for s in chosen if not s.is_terminal]
    if waiting:
        raise InvalidArgument(
            f"states must be finished states, got {', '.join(sorted(waiting))}",
            reason="INVALID_STATE",
        )
    return chosen


def _bound(request: task_service_pb2.ListTasksRequest, field: str) -> int | None:
    """A ListTasks create-time bound in microseconds, or None when unset."""
    if not request.HasField(field):  # type: ignore[arg-type]
        return None
    return convert.micros(field, getattr(request, field))


def _changed(old: TaskRecord, new: TaskRecord) -> bool:
    return (old.state, old.attempt, old.cancel_requested, old.progress) != (
        new.state,
        new.attempt,
        new.cancel_requested,
        new.progress,
    )
