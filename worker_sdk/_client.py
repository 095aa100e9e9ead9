"""Clients that submit and follow tasks: `Client` (asyncio) and `SyncClient` (scripts)."""

from __future__ import annotations

import asyncio
import builtins
import itertools
import random
import weakref
from collections.abc import AsyncIterator, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

import grpc
from google.protobuf import field_mask_pb2

from taskyard.v1 import (
    queue_service_pb2_grpc,
    stats_service_pb2,
    stats_service_pb2_grpc,
    system_service_pb2,
    system_service_pb2_grpc,
    task_service_pb2,
    task_service_pb2_grpc,
    worker_service_pb2,
    worker_service_pb2_grpc,
)
from worker_sdk import _events, _tracing
from worker_sdk._admin import (
    QS,
    Caller,
    Queue,
    QueueStats,
    TaskStats,
    WorkerInfo,
    queue_message,
    task_stats_request,
)
from worker_sdk._credentials import ChannelSecurity, aio_channel
from worker_sdk._errors import BatchSubmitError, TaskFailed, TaskyardError, maybe_applied
from worker_sdk._events import Event
from worker_sdk._portal import Portal, blocking, iterating, opening
from worker_sdk._requests import (
    CHANNEL_OPTIONS,
    DEFAULT_TARGET,
    MAX_BATCH,
    batch_items,
    batch_request,
    chunk_ranges,
    create_request,
    list_request,
    not_sent,
    purge_request,
    spec_of,
)
from worker_sdk._schedules import ScheduleMethods
from worker_sdk._types import (
    Attempt,
    LogRecord,
    RetryPolicy,
    Specified,
    Task,
    TaskSpec,
    TaskState,
    Timeouts,
)

_FULL = task_service_pb2.TASK_VIEW_FULL
_BASIC = task_service_pb2.TASK_VIEW_BASIC
SS = stats_service_pb2
WS = worker_service_pb2


class Client(ScheduleMethods):
    """An asyncio client for TaskService.

    Args:
        target: The broker's ``host:port``.
        timeout: Seconds each unary call may take; None for no limit.
        token: Bearer token for a broker that requires one (docs/security.md).
        ca_file: PEM CA to verify the broker's certificate; implies TLS.
        cert_file: PEM client certificate for mutual TLS (with ``key_file``).
        key_file: PEM private key of ``cert_file``.
        tls: Use TLS with the system's CAs even without ``ca_file``.

    Every method raises `TaskyardError` (with ``.code`` and ``.reason``) when
    the broker refuses or cannot be reached.
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        timeout: float | None = 30.0,
        token: str | None = None,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        tls: bool = False,
    ) -> None:
        self.target = target
        self._timeout = timeout
        security = ChannelSecurity(
            token=token, ca_file=ca_file, cert_file=cert_file, key_file=key_file, tls=tls
        )
        self._channel = aio_channel(target, security, CHANNEL_OPTIONS)
        self._stub = task_service_pb2_grpc.TaskServiceStub(self._channel)
        self._admin = _AdminStubs(self._channel)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connection; calls under way are cancelled, and later calls fail."""
        await self._channel.close()

    async def submit(
        self,
        type: str,
        payload: Any = None,
        *,
        queue: str | None = None,
        priority: int = 0,
        run_at: datetime | None = None,
        delay: float | timedelta | None = None,
        labels: dict[str, str] | None = None,
        max_attempts: int | None = None,
        request_id: str | None = None,
        retry_policy: RetryPolicy | None = None,
        timeouts: Timeouts | None = None,
        concurrency_key: str | None = None,
    ) -> Task:
        """Submit one task; returns it once the broker has committed it.

        Args:
            type: The task type a worker handles, e.g. ``"email.send"``.
            payload: A JSON-serialisable value, or bytes.
            queue: The queue; the broker's ``default`` when None.
            priority: Higher runs first.
            run_at: The earliest start (time-zone aware).
            delay: Alternatively, seconds (or a timedelta) from now.
            labels: String metadata.
            max_attempts: Attempts a retryable failure may use.
            request_id: Idempotency key: repeating it returns the first task.
            retry_policy: How failures are retried (unset fields: defaults).
            timeouts: Execution, heartbeat, soft and expiry timeouts.
            concurrency_key: Limits how many tasks with this key run at once
                (with the queue's concurrency_key_limit).
        """
        spec = spec_of(
            type,
            payload,
            queue=queue,
            priority=priority,
            run_at=run_at,
            delay=delay,
            labels=labels,
            max_attempts=max_attempts,
            request_id=request_id,
            retry_policy=retry_policy,
            timeouts=timeouts,
            concurrency_key=concurrency_key,
        )
        return await self._submit_spec(spec)

    async def _submit_spec(self, spec: TaskSpec) -> Task:
        with _tracing.submit_span(spec.type, spec.queue) as span:
            response = await self._call(self._stub.CreateTask, create_request(spec))
            _tracing.submitted(span, response.task.id)
        return Task.from_proto(response.task)

    async def submit_many(
        self,
        specs: Iterable[TaskSpec | Specified],
        *,
        chunk_size: int = MAX_BATCH,
        rate_limit_wait: float = 60.0,
    ) -> builtins.list[Task]:
        """Submit many tasks: `chunk_size` per call, one call after another.

        A chunk refused because the caller submits too fast (``RATE_LIMITED``) is sent again
        after the broker's retry hint (or an exponential backoff), for up to
        ``rate_limit_wait`` seconds in all.

        Args:
            specs: `TaskSpec`s, or typed calls (``resize.call(...)``).
            chunk_size: Tasks per call, 1 to 1,000 (the broker's limit per call).
            rate_limit_wait: Seconds the whole submission may spend waiting on rate limits.

        Raises:
            BatchSubmitError: not every task was created. Items the broker rejected do not
                stop the others; a chunk refused or lost as a whole stops the batch. The
                error lists what was created (``created``, ``results``) and which items
                may or may not exist (``uncertain``).
        """
        if not 1 <= chunk_size <= MAX_BATCH:
            raise ValueError(f"chunk_size must be 1 to {MAX_BATCH}, got {chunk_size}")
        items = [s if isinstance(s, TaskSpec) else s.spec for s in specs]
        deadline = asyncio.get_running_loop().time() + rate_limit_wait
        results: builtins.list[Task | TaskyardError] = []
        with _tracing.submit_span(items[0].type if items else "", None, len(items)):
            for start, end in chunk_ranges(items, chunk_size):
                chunk = items[start:end]
                try:
                    response = await self._create_batch(batch_request(chunk), deadline)
                except TaskyardError as error:
                    uncertain = range(start, start + len(chunk)) if maybe_applied(error) else ()
                    results += [error] * len(chunk)
                    results += [not_sent(error)] * (len(items) - len(results))
                    raise BatchSubmitError(results, uncertain=uncertain) from error
                results += batch_items(response)
        if any(isinstance(r, TaskyardError) for r in results):
            raise BatchSubmitError(results)
        return [r for r in results if isinstance(r, Task)]

    async def _create_batch(
        self, request: task_service_pb2.BatchCreateTasksRequest, deadline: float
    ) -> task_service_pb2.BatchCreateTasksResponse:
        """BatchCreateTasks, sent again while it is rate-limited and the deadline allows."""
        loop = asyncio.get_running_loop()
        for attempt in itertools.count():
            try:
                response: task_service_pb2.BatchCreateTasksResponse = await self._call(
                    self._stub.BatchCreateTasks, request
                )
                return response
            except TaskyardError as error:
                if error.reason != "RATE_LIMITED":
                    raise
                # Never sooner than the broker's hint; the jitter spreads clients out.
                hint = error.retry_after
                wait = hint if hint is not None else min(5.0, 0.1 * 2**attempt)
                wait *= random.uniform(1.0, 1.25)
                if loop.time() + wait > deadline:
                    raise
                await asyncio.sleep(wait)
        raise AssertionError("unreachable")

    async def get(self, task_id: str, *, full: bool = True) -> Task:
        """One task; ``full=False`` leaves out its payload and result."""
        request = task_service_pb2.GetTaskRequest(id=task_id, view=_FULL if full else _BASIC)
        response = await self._call(self._stub.GetTask, request)
        return Task.from_proto(response.task)

    async def cancel(self, task_id: str, reason: str = "") -> Task:
        """Cancel a task; a running one is asked to stop (`reason` becomes its error message)."""
        request = task_service_pb2.CancelTaskRequest(id=task_id, reason=reason)
        response = await self._call(self._stub.CancelTask, request)
        return Task.from_proto(response.task)

    async def retry(self, task_id: str) -> Task:
        """Run a failed, dead, cancelled or expired task again, with a fresh budget."""
        request = task_service_pb2.RetryTaskRequest(id=task_id)
        return Task.from_proto((await self._call(self._stub.RetryTask, request)).task)

    async def retry_all(
        self, queue: str, states: Iterable[TaskState | str] = (TaskState.DEAD,)
    ) -> int:
        """Re-queue every task of `queue` in `states` (dead by default); returns how many."""
        request = task_service_pb2.RetryTasksRequest(
            queue=queue, states=[TaskState(s).to_proto() for s in states]
        )
        return int((await self._call(self._stub.RetryTasks, request)).retried_count)

    async def attempts(self, task_id: str) -> list[Attempt]:
        """Every attempt of a task, oldest first."""
        request = task_service_pb2.ListTaskAttemptsRequest(id=task_id)
        response = await self._call(self._stub.ListTaskAttempts, request)
        return [Attempt.from_proto(a) for a in response.attempts]

    async def purge(
        self,
        *,
        queue: str | None = None,
        states: Iterable[TaskState | str] = (),
        finished_before: datetime | None = None,
    ) -> int:
        """Delete finished tasks (all terminal states by default); returns how many."""
        request = purge_request(queue=queue, states=states, finished_before=finished_before)
        return int((await self._call(self._stub.PurgeTasks, request)).purged_count)

    async def logs(
        self, task_id: str, *, follow: bool = False, attempt: int | None = None
    ) -> AsyncIterator[LogRecord]:
        """The log records a task's handlers wrote (``ctx.log``), oldest first.

        Args:
            follow: Keep waiting for new records until the task finishes.
            attempt: Only this attempt's records.
        """
        if follow:
            request = task_service_pb2.FollowTaskLogsRequest(id=task_id, attempt=attempt or 0)
            call = self._stub.FollowTaskLogs(request)
            try:
                async for response in call:
                    for record in response.records:
                        yield LogRecord.from_proto(record)
            except grpc.RpcError as error:
                raise TaskyardError.from_rpc_error(error, self.target) from None
            finally:
                call.cancel()
            return
        token = ""
        while True:
            page = task_service_pb2.ListTaskLogsRequest(
                id=task_id, attempt=attempt or 0, page_token=token
            )
            response = await self._call(self._stub.ListTaskLogs, page)
            for record in response.records:
                yield LogRecord.from_proto(record)
            token = response.next_page_token
            if not token:
                return

    async def watch(self, task_id: str, *, timeout: float | None = None) -> AsyncIterator[Task]:
        """Yield the task on every state change and progress report until it finishes.

        Raises:
            TimeoutError: the stream lasted longer than ``timeout`` seconds.
        """
        request = task_service_pb2.WatchTaskRequest(id=task_id)
        call = self._stub.WatchTask(request, timeout=timeout)
        try:
            async for response in call:
                yield Task.from_proto(response.task)
        except grpc.RpcError as error:
            if error.code() is grpc.StatusCode.DEADLINE_EXCEEDED:
                raise _not_finished(task_id, timeout) from None
            raise TaskyardError.from_rpc_error(error, self.target) from None
        finally:
            call.cancel()

    async def events(
        self,
        *,
        kinds: Iterable[str] = (),
        queues: Iterable[str] = (),
        types: Iterable[str] = (),
        states: Iterable[TaskState | str] = (),
        labels: dict[str, str] | None = None,
    ) -> AsyncIterator[Event]:
        """Yield what happens in the broker from now on, until the loop stops (docs/events.md).

        Args:
            kinds: Any of "task_state", "task_progress", "schedule_fire", "worker"; all if
                empty.
            queues: Only events of these queues.
            types: Only events of these task types.
            states: Only task events whose task is now in one of these states.
            labels: Only task events of tasks with all of these labels.

        When the broker stops, this reconnects and resumes after the last event
        it delivered; events it can no longer deliver come as one ``Event``
        of kind "gap".

        Raises:
            TaskyardError: the broker refused the subscription.
        """
        request = _events.request(kinds, queues, types, states, labels)
        async for event in _events.follow(self._channel, request, self.target):
            yield event

    async def wait(self, task_id: str, *, timeout: float | None = None) -> Any:
        """Wait for the task to finish and return its result.

        Raises:
            TaskFailed: the task ended failed, dead, cancelled or expired.
            TimeoutError: it did not finish within ``timeout`` seconds.
        """
        try:
            async with asyncio.timeout(timeout):
                async for task in self.watch(task_id):
                    if task.done:
                        break
        except TimeoutError:
            raise _not_finished(task_id, timeout) from None
        final = await self.get(task_id)
        if final.state is not TaskState.SUCCEEDED:
            raise TaskFailed(final)
        return final.result

    async def list(
        self,
        *,
        queue: str | None = None,
        state: TaskState | str | None = None,
        type: str | None = None,
        page_size: int = 100,
        full: bool = False,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> AsyncIterator[Task]:
        """Iterate over matching tasks, newest first, fetching page after page.

        Args:
            created_after: Only tasks created at or after this (time-zone aware).
            created_before: Only tasks created before this.
            labels: Only tasks carrying all of these labels with these values.
        """
        token = ""
        while True:
            tasks, token = await self.list_page(
                queue=queue,
                state=state,
                type=type,
                page_size=page_size,
                page_token=token,
                full=full,
                created_after=created_after,
                created_before=created_before,
                labels=labels,
            )
            for task in tasks:
                yield task
            if not token:
                return

    async def list_page(
        self,
        *,
        queue: str | None = None,
        state: TaskState | str | None = None,
        type: str | None = None,
        page_size: int = 100,
        page_token: str = "",
        full: bool = False,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> tuple[builtins.list[Task], str]:
        """One page of `list`: its tasks and the next page's token ("" after the last).

        Pass the token back with the same filters to get the following page. With
        `labels` a page may be short (even empty) and still have a next token: the
        broker examines a bounded number of tasks per page (labels are not indexed).
        """
        request = list_request(
            queue=queue,
            state=state,
            type=type,
            page_size=page_size,
            page_token=page_token,
            full=full,
            created_after=created_after,
            created_before=created_before,
            labels=labels,
        )
        response = await self._call(self._stub.ListTasks, request)
        return [Task.from_proto(t) for t in response.tasks], response.next_page_token

    # --- Queues, statistics and workers ----------------------------------------------------

    async def create_queue(self, /, name: str, **settings: Any) -> Queue:
        """Create a queue. Settings: max_concurrency, rate_limit=(starts, per_seconds),
        concurrency_key_limit, max_depth, retry_policy, timeouts, retention={state: seconds}."""
        q, _ = queue_message(name, settings)
        response = await self._call(self._admin.queues.CreateQueue, QS.CreateQueueRequest(queue=q))
        return Queue.from_proto(response.queue)

    async def get_queue(self, name: str) -> Queue:
        """One queue's settings."""
        response = await self._call(self._admin.queues.GetQueue, QS.GetQueueRequest(name=name))
        return Queue.from_proto(response.queue)

    async def list_queues(self) -> builtins.list[Queue]:
        """Every queue, by name."""
        out: builtins.list[Queue] = []
        token = ""
        while True:
            request = QS.ListQueuesRequest(page_size=1000, page_token=token)
            response = await self._call(self._admin.queues.ListQueues, request)
            out += [Queue.from_proto(q) for q in response.queues]
            token = response.next_page_token
            if not token:
                return out

    async def update_queue(self, /, name: str, **settings: Any) -> Queue:
        """Change only the given settings (same names as `create_queue`; None clears a limit)."""
        q, mask = queue_message(name, settings)
        request = QS.UpdateQueueRequest(queue=q, update_mask=field_mask(mask))
        return Queue.from_proto((await self._call(self._admin.queues.UpdateQueue, request)).queue)

    async def delete_queue(self, name: str, *, force: bool = False) -> None:
        """Delete a queue's settings (not its tasks); ``force`` while tasks wait or run in it."""
        await self._call(
            self._admin.queues.DeleteQueue, QS.DeleteQueueRequest(name=name, force=force)
        )

    async def pause_queue(self, name: str, note: str = "") -> Queue:
        """Stop dispatching the queue's tasks (submissions are still accepted); `note` says why."""
        request = QS.PauseQueueRequest(name=name, note=note)
        return Queue.from_proto((await self._call(self._admin.queues.PauseQueue, request)).queue)

    async def resume_queue(self, name: str) -> Queue:
        """Dispatch the queue's tasks again."""
        request = QS.ResumeQueueRequest(name=name)
        return Queue.from_proto((await self._call(self._admin.queues.ResumeQueue, request)).queue)

    async def queue_stats(self, queue: str | None = None) -> builtins.list[QueueStats]:
        """The live state of one queue, or of every queue: counts by state, age, throughput."""
        request = SS.GetQueueStatsRequest(queue=queue or "")
        response = await self._call(self._admin.stats.GetQueueStats, request)
        return [QueueStats.from_proto(s) for s in response.queues]

    async def task_stats(
        self,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        queue: str | None = None,
        type: str | None = None,
    ) -> tuple[TaskStats, builtins.list[TaskStats]]:
        """Totals and per-(queue, type) statistics of a time range (default: the last 24 h)."""
        request = task_stats_request(start, end, queue, type)
        response = await self._call(self._admin.stats.GetTaskStats, request)
        return TaskStats.from_proto(response.total), [
            TaskStats.from_proto(g) for g in response.groups
        ]

    async def workers(self, queue: str | None = None) -> builtins.list[WorkerInfo]:
        """The connected worker sessions, of one queue or of all."""
        request = WS.ListWorkersRequest(queue=queue or "")
        response = await self._call(self._admin.workers.ListWorkers, request)
        return [WorkerInfo.from_proto(w) for w in response.workers]

    async def drain_worker(self, worker_id: str) -> builtins.list[WorkerInfo]:
        """Stop giving a worker new tasks; it finishes what it holds. Returns its sessions."""
        request = WS.DrainWorkerRequest(worker_id=worker_id)
        response = await self._call(self._admin.workers.DrainWorker, request)
        return [WorkerInfo.from_proto(w) for w in response.sessions]

    async def caller(self) -> Caller:
        """Who the broker takes this client to be: identity, roles, queues, allowed methods."""
        request = system_service_pb2.GetCallerRequest()
        response = await self._call(self._admin.system.GetCaller, request)
        return Caller.from_proto(response.caller)

    async def _call(self, method: Any, request: Any) -> Any:
        try:
            return await method(request, timeout=self._timeout)
        except grpc.RpcError as error:
            raise TaskyardError.from_rpc_error(error, self.target) from None


class SyncClient:
    """A blocking `Client` for scripts, shells and threads.

    It has the same methods, arguments, docstrings and errors as `Client`: each method runs
    the `Client` coroutine of the same name on an event loop that the SyncClient keeps on a
    private thread, and blocks until it finishes; the async iterators (`list`, `watch`,
    `list_schedules`, `schedule_fires`) are plain iterators here. One SyncClient may be
    shared by many threads. `close` (or leaving ``with``) stops its thread; a call after
    that raises `RuntimeError`. Ctrl-C during a call cancels it and propagates.

    Args: as for `Client`.
    """

    @opening(Client, "SyncClient")
    def __init__(self, portal: Portal, client: Client) -> None:
        self.target = client.target
        self._portal = portal
        self._async = client
        # A SyncClient that is dropped (or alive at exit) unclosed still stops its thread.
        self._finalizer = weakref.finalize(self, portal.close, client.close)

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._finalizer()

    close.__doc__ = Client.close.__doc__

    submit = blocking(Client.submit)
    submit_many = blocking(Client.submit_many)
    get = blocking(Client.get)
    cancel = blocking(Client.cancel)
    retry = blocking(Client.retry)
    retry_all = blocking(Client.retry_all)
    attempts = blocking(Client.attempts)
    purge = blocking(Client.purge)
    watch = iterating(Client.watch)
    events = iterating(Client.events)
    logs = iterating(Client.logs)
    wait = blocking(Client.wait)
    create_queue = blocking(Client.create_queue)
    get_queue = blocking(Client.get_queue)
    list_queues = blocking(Client.list_queues)
    update_queue = blocking(Client.update_queue)
    delete_queue = blocking(Client.delete_queue)
    pause_queue = blocking(Client.pause_queue)
    resume_queue = blocking(Client.resume_queue)
    queue_stats = blocking(Client.queue_stats)
    task_stats = blocking(Client.task_stats)
    workers = blocking(Client.workers)
    drain_worker = blocking(Client.drain_worker)
    caller = blocking(Client.caller)
    create_schedule = blocking(Client.create_schedule)
    get_schedule = blocking(Client.get_schedule)
    list_schedules = iterating(Client.list_schedules)
    update_schedule = blocking(Client.update_schedule)
    delete_schedule = blocking(Client.delete_schedule)
    pause_schedule = blocking(Client.pause_schedule)
    resume_schedule = blocking(Client.resume_schedule)
    run_schedule = blocking(Client.run_schedule)
    preview_schedule = blocking(Client.preview_schedule)
    schedule_fires = iterating(Client.schedule_fires)
    list_page = blocking(Client.list_page)
    list = iterating(Client.list)  # last: it shadows the builtin in this class's body


class _AdminStubs:
    """Stubs for the services beside TaskService, on the same channel."""

    def __init__(self, channel: Any) -> None:
        self.queues = queue_service_pb2_grpc.QueueServiceStub(channel)
        self.stats = stats_service_pb2_grpc.StatsServiceStub(channel)
        self.workers = worker_service_pb2_grpc.WorkerServiceStub(channel)
        self.system = system_service_pb2_grpc.SystemServiceStub(channel)


def field_mask(paths: list[str]) -> field_mask_pb2.FieldMask:
    return field_mask_pb2.FieldMask(paths=paths)


def _not_finished(task_id: str, timeout: float | None) -> TimeoutError:
    return TimeoutError(f"task {task_id} did not finish within {timeout}s")
