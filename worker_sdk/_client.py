"""Clients that submit and follow tasks: `Client` (asyncio) and `SyncClient` (scripts)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Iterator
from datetime import datetime, timedelta
from typing import Any

import grpc

from taskyard.v1 import task_service_pb2, task_service_pb2_grpc
from worker_sdk import _tracing
from worker_sdk._credentials import ChannelSecurity, aio_channel, sync_channel
from worker_sdk._errors import TaskFailed, TaskyardError
from worker_sdk._requests import (
    CHANNEL_OPTIONS,
    DEFAULT_TARGET,
    batch_requests,
    batch_results,
    create_request,
    list_request,
    purge_request,
    spec_of,
)
from worker_sdk._schedules import AsyncScheduleMethods, SyncScheduleMethods
from worker_sdk._types import Attempt, RetryPolicy, Task, TaskSpec, TaskState, Timeouts

_FULL = task_service_pb2.TASK_VIEW_FULL
_BASIC = task_service_pb2.TASK_VIEW_BASIC


class Client(AsyncScheduleMethods):
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

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
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
        )
        with _tracing.submit_span(type, queue) as span:
            response = await self._call(self._stub.CreateTask, create_request(spec))
            _tracing.submitted(span, response.task.id)
        return Task.from_proto(response.task)

    async def submit_many(self, specs: Iterable[TaskSpec]) -> list[Task]:
        """Submit many tasks, 1,000 per call.

        Raises:
            BatchSubmitError: some items were rejected (the rest were created).
        """
        items = list(specs)
        with _tracing.submit_span(items[0].type if items else "", None, len(items)):
            responses = [
                await self._call(self._stub.BatchCreateTasks, request)
                for request in batch_requests(items)
            ]
        return batch_results(responses)

    async def get(self, task_id: str, *, full: bool = True) -> Task:
        request = task_service_pb2.GetTaskRequest(id=task_id, view=_FULL if full else _BASIC)
        response = await self._call(self._stub.GetTask, request)
        return Task.from_proto(response.task)

    async def cancel(self, task_id: str, reason: str = "") -> Task:
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

    async def watch(self, task_id: str) -> AsyncIterator[Task]:
        """Yield the task on every state change and progress report until it finishes."""
        call = self._stub.WatchTask(task_service_pb2.WatchTaskRequest(id=task_id))
        try:
            async for response in call:
                yield Task.from_proto(response.task)
        except grpc.RpcError as error:
            raise TaskyardError.from_rpc_error(error, self.target) from None
        finally:
            call.cancel()

    async def wait(self, task_id: str, *, timeout: float | None = None) -> Any:
        """Wait for the task to finish and return its result.

        Raises:
            TaskFailed: the task ended failed, dead, cancelled or expired.
            TimeoutError: it did not finish within ``timeout`` seconds.
        """
        async with asyncio.timeout(timeout):
            async for task in self.watch(task_id):
                if task.done:
                    break
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
    ) -> AsyncIterator[Task]:
        """Iterate over matching tasks, newest first, fetching page after page."""
        token = ""
        while True:
            request = list_request(
                queue=queue,
                state=state,
                type=type,
                page_size=page_size,
                page_token=token,
                full=full,
            )
            response = await self._call(self._stub.ListTasks, request)
            for task in response.tasks:
                yield Task.from_proto(task)
            token = response.next_page_token
            if not token:
                return

    async def _call(self, method: Any, request: Any) -> Any:
        try:
            return await method(request, timeout=self._timeout)
        except grpc.RpcError as error:
            raise TaskyardError.from_rpc_error(error, self.target) from None


class SyncClient(SyncScheduleMethods):
    """A blocking client for scripts and shells; the same methods as `Client`."""

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
        self._channel = sync_channel(target, security, CHANNEL_OPTIONS)
        self._stub = task_service_pb2_grpc.TaskServiceStub(self._channel)

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def submit(self, type: str, payload: Any = None, **options: Any) -> Task:
        """See `Client.submit`."""
        with _tracing.submit_span(type, options.get("queue")) as span:
            response = self._call(
                self._stub.CreateTask, create_request(spec_of(type, payload, **options))
            )
            _tracing.submitted(span, response.task.id)
        return Task.from_proto(response.task)

    def submit_many(self, specs: Iterable[TaskSpec]) -> list[Task]:
        """See `Client.submit_many`."""
        items = list(specs)
        with _tracing.submit_span(items[0].type if items else "", None, len(items)):
            responses = [self._call(self._stub.BatchCreateTasks, r) for r in batch_requests(items)]
        return batch_results(responses)

    def get(self, task_id: str, *, full: bool = True) -> Task:
        request = task_service_pb2.GetTaskRequest(id=task_id, view=_FULL if full else _BASIC)
        return Task.from_proto(self._call(self._stub.GetTask, request).task)

    def cancel(self, task_id: str, reason: str = "") -> Task:
        request = task_service_pb2.CancelTaskRequest(id=task_id, reason=reason)
        return Task.from_proto(self._call(self._stub.CancelTask, request).task)

    def retry(self, task_id: str) -> Task:
        """See `Client.retry`."""
        request = task_service_pb2.RetryTaskRequest(id=task_id)
        return Task.from_proto(self._call(self._stub.RetryTask, request).task)

    def retry_all(self, queue: str, states: Iterable[TaskState | str] = (TaskState.DEAD,)) -> int:
        """See `Client.retry_all`."""
        request = task_service_pb2.RetryTasksRequest(
            queue=queue, states=[TaskState(s).to_proto() for s in states]
        )
        return int(self._call(self._stub.RetryTasks, request).retried_count)

    def attempts(self, task_id: str) -> list[Attempt]:
        """See `Client.attempts`."""
        request = task_service_pb2.ListTaskAttemptsRequest(id=task_id)
        return [
            Attempt.from_proto(a) for a in self._call(self._stub.ListTaskAttempts, request).attempts
        ]

    def purge(
        self,
        *,
        queue: str | None = None,
        states: Iterable[TaskState | str] = (),
        finished_before: datetime | None = None,
    ) -> int:
        """See `Client.purge`."""
        request = purge_request(queue=queue, states=states, finished_before=finished_before)
        return int(self._call(self._stub.PurgeTasks, request).purged_count)

    def watch(self, task_id: str, *, timeout: float | None = None) -> Iterator[Task]:
        """See `Client.watch`; ``timeout`` bounds the whole stream."""
        call = self._stub.WatchTask(task_service_pb2.WatchTaskRequest(id=task_id), timeout=timeout)
        try:
            for response in call:
                yield Task.from_proto(response.task)
        except grpc.RpcError as error:
            if error.code() is grpc.StatusCode.DEADLINE_EXCEEDED:
                raise TimeoutError(f"task {task_id} did not finish within {timeout}s") from None
            raise TaskyardError.from_rpc_error(error, self.target) from None
        finally:
            call.cancel()

    def wait(self, task_id: str, *, timeout: float | None = None) -> Any:
        """See `Client.wait`."""
        for task in self.watch(task_id, timeout=timeout):
            if task.done:
                break
        final = self.get(task_id)
        if final.state is not TaskState.SUCCEEDED:
            raise TaskFailed(final)
        return final.result

    def list(
        self,
        *,
        queue: str | None = None,
        state: TaskState | str | None = None,
        type: str | None = None,
        page_size: int = 100,
        full: bool = False,
    ) -> Iterator[Task]:
        """See `Client.list`."""
        token = ""
        while True:
            request = list_request(
                queue=queue,
                state=state,
                type=type,
                page_size=page_size,
                page_token=token,
                full=full,
            )
            response = self._call(self._stub.ListTasks, request)
            for task in response.tasks:
                yield Task.from_proto(task)
            token = response.next_page_token
            if not token:
                return

    def _call(self, method: Any, request: Any) -> Any:
        try:
            return method(request, timeout=self._timeout)
        except grpc.RpcError as error:
            raise TaskyardError.from_rpc_error(error, self.target) from None
