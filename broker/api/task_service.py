"""TaskService: submit tasks, read them, cancel, retry, purge and watch them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

from broker.api import convert, options
from broker.api.runtime import Runtime
from broker.api.status import maps_errors
from broker.api.watch_frames import Frame, Frames
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
from broker.store import maintenance, task_logs, tasks
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
        self._frames = Frames(read_blobs=self._read_blobs, to_proto=self._to_proto)

    async def _read_blobs(
        self, task_id: str, payload: bool, result: bool
    ) -> tuple[bytes | None, bytes | None]:
        async with self._rt.db.reader.connect() as conn:
            return await tasks.get_blobs(conn, task_id, payload=payload, result=result)

    def _to_proto(self, record: TaskRecord, full: bool) -> task_pb2.Task:
        return self._proto(record, full=full)

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
        labels = validation.labels(dict(request.labels), limits) if request.labels else None
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
            labels=labels,
        )
        fingerprint = convert.filter_fingerprint(
            filters.queue,
            filters.state,
            filters.type,
            *(() if filters.created_from_us is None else ("from", filters.created_from_us)),
            *(() if filters.created_before_us is None else ("before", filters.created_before_us)),
            *(() if labels is None else ("labels", sorted(labels.items()))),
        )
        after = convert.parse_page_token(request.page_token, fingerprint)
        full = convert.full_view(request.view, default_full=False)
        max_bytes = self._rt.settings.limits.max_page_bytes
        async with self._rt.db.reader.connect() as conn:
            page = await tasks.list_tasks(
                conn, filters, limit=limit, before_id=after, full=full, max_bytes=max_bytes
            )
        response = task_service_pb2.ListTasksResponse()
        more, size = page.more, 0
        for record in page.records:
            proto = self._proto(record, full=full)
            # The store sized text by characters; a reply is bytes: cut here if need be.
            size += proto.ByteSize()
            if response.tasks and size > max_bytes:
                more = True
                break
            response.tasks.append(proto)
        if more:
            response.next_page_token = convert.page_token(response.tasks[-1].id, fingerprint)
        elif page.scanned_to is not None:
            # The labels scan stopped short (store.tasks.LABEL_SCAN): a short page, not the end.
            response.next_page_token = convert.page_token(page.scanned_to, fingerprint)
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
        if before.workflow_id is not None:
            raise FailedPrecondition(
                f"task {task_id} is node {before.node!r} of workflow {before.workflow_id}; "
                "retry the workflow (RetryWorkflow), which re-runs what depends on it too",
                reason="WORKFLOW_NODE",
            )
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
    async def ListTaskLogs(
        self, request: task_service_pb2.ListTaskLogsRequest, context: Context
    ) -> task_service_pb2.ListTaskLogsResponse:
        task_id = validation.task_id(request.id)
        attempt = _attempt_filter(request.attempt)
        limit = _log_page_size(request.page_size)
        fingerprint = convert.filter_fingerprint("logs", task_id, attempt)
        after = convert.parse_page_token(request.page_token, fingerprint)
        async with self._rt.db.reader.connect() as conn:
            if await tasks.get_task(conn, task_id, full=False) is None:
                raise TaskNotFound(task_id)
            rows = await task_logs.page(
                conn, task_id, attempt=attempt, after_id=_log_cursor(after), limit=limit + 1
            )
        response = task_service_pb2.ListTaskLogsResponse(
            records=[convert.log_record(r) for r in rows[:limit]]
        )
        if len(rows) > limit:
            response.next_page_token = convert.page_token(str(rows[limit - 1].id), fingerprint)
        return response

    @maps_errors
    async def FollowTaskLogs(
        self, request: task_service_pb2.FollowTaskLogsRequest, context: Context
    ) -> AsyncIterator[task_service_pb2.FollowTaskLogsResponse]:
        task_id = validation.task_id(request.id)
        attempt = _attempt_filter(request.attempt)
        events = self._rt.events
        # Subscribe before the first read, so that no record can slip in between.
        queue = events.subscribe(task_id)
        try:
            after = 0
            while True:
                async with self._rt.db.reader.connect() as conn:
                    # The state first: records are committed no later than the outcome,
                    # so once it is final, the records read next are all there are.
                    record = await tasks.get_task(conn, task_id, full=False)
                    if record is None:
                        raise TaskNotFound(task_id)
                    rows = await task_logs.page(
                        conn, task_id, attempt=attempt, after_id=after, limit=LOG_PAGE
                    )
                if rows:
                    after = rows[-1].id
                    yield task_service_pb2.FollowTaskLogsResponse(
                        records=[convert.log_record(r) for r in rows]
                    )
                if len(rows) == LOG_PAGE:
                    continue
                if record.state.is_terminal:
                    return
                await self._next_event(queue)
        finally:
            events.unsubscribe(task_id, queue)

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

    # Yields serialized messages, not WatchTaskResponse objects: see the docstring.
    @maps_errors
    async def WatchTask(  # type: ignore[override]
        self, request: task_service_pb2.WatchTaskRequest, context: Context
    ) -> AsyncIterator[Frame]:
        """Yields serialized WatchTaskResponses, shared between watchers (watch_frames.py)."""
        task_id = validation.task_id(request.id)
        full = convert.full_view(request.view, default_full=False)
        events = self._rt.events
        # Subscribe before the first read, so no change can slip in between.
        queue = events.subscribe(task_id)
        try:
            # Polls read the task without its blobs; a snapshot reads them once per version.
            record = await self._get(task_id, full=False)
            snapshot = await self._frames.snapshot(record, full=full)
            yield snapshot.frame(record.progress)
            while not record.state.is_terminal:
                event = await self._next_event(queue)
                if event is not None and event.logs:
                    continue  # log records: nothing a watcher of the task sees
                if event is not None and event.progress is not None:
                    if record.state is TaskState.RUNNING:
                        yield snapshot.frame(event.progress)
                    continue
                fresh = await self._get(task_id, full=False)
                if _changed(record, fresh):
                    record = fresh
                    snapshot = await self._frames.snapshot(fresh, full=full)
                    yield snapshot.frame(fresh.progress)
        finally:
            events.unsubscribe(task_id, queue)

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


LOG_PAGE = 1000
MAX_LOG_PAGE = 10_000


def _log_page_size(size: int) -> int:
    if size < 0:
        raise InvalidArgument(f"page_size must be >= 0, got {size}", reason="INVALID_PAGE_SIZE")
    return min(size or LOG_PAGE, MAX_LOG_PAGE)


def _attempt_filter(attempt: int) -> int | None:
    if attempt < 0:
        raise InvalidArgument(
            f"attempt must be >= 0 (0: every attempt), got {attempt}", reason="INVALID_ARGUMENT"
        )
    return attempt or None


def _log_cursor(after: str | None) -> int:
    try:
        return int(after or 0)
    except ValueError:
        raise InvalidArgument(
            "page_token is not a token this broker issued; pass next_page_token unchanged",
            reason="INVALID_PAGE_TOKEN",
        ) from None


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
