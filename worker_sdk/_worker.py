"""The worker: runs handlers for the tasks the broker leases to it.

One Lease stream per worker process. Everything on it is batched: credits,
heartbeats for every running task (with their progress and log records),
completions. Handlers run on the event loop, in a thread pool or in a process
pool (`_invoke`), inside the worker's middleware (`_lifecycle`). Completions are
kept until the broker acknowledges them and are sent again after a reconnect, so
a broker restart loses no result; the acknowledgement (which says whether a
failure will be retried) triggers the on_success/on_failure/on_retry hooks.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import random
import signal
import socket
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

from taskyard.v1 import task_pb2, worker_service_pb2, worker_service_pb2_grpc
from worker_sdk import _collector
from worker_sdk._context import TaskContext
from worker_sdk._credentials import ChannelSecurity, aio_channel
from worker_sdk._definition import TaskDefinition
from worker_sdk._errors import NonRetryableError, failure_of
from worker_sdk._invoke import Handler, Runner, encode
from worker_sdk._lifecycle import (
    Kind,
    Lifecycle,
)
from worker_sdk._payload import to_payload
from worker_sdk._process_pool import Pool, ProcessPool
from worker_sdk._registration import Registration
from worker_sdk._requests import CHANNEL_OPTIONS, DEFAULT_TARGET, MAX_BATCH_BYTES
from worker_sdk._task_log import DEFAULT_MAX_BYTES, DEFAULT_MAX_LINES, TaskLog
from worker_sdk._tracing import task_fields, task_scope
from worker_sdk._version import __version__

log = logging.getLogger("taskyard.worker")
pb = worker_service_pb2

H = TypeVar("H", bound=Callable[..., Any])

PROGRESS_MIN_INTERVAL_S = 0.1
LOG_FLUSH_INTERVAL_S = 0.25
BACKOFF_INITIAL_S = 0.1
BACKOFF_MAX_S = 10.0
MAX_ITEMS_PER_MESSAGE = 500


_FINAL: dict[int, Kind] = {
    task_pb2.TASK_STATE_FAILED: "failure",
    task_pb2.TASK_STATE_DEAD: "failure",
    task_pb2.TASK_STATE_RETRYING: "retry",
    task_pb2.TASK_STATE_PENDING: "retry",
}


@dataclass(eq=False)
class _Job:
    task_id: str
    lease_id: str
    ctx: TaskContext
    handler: Handler | None
    logs: TaskLog
    task: asyncio.Task[None] | None = None
    cancel_requested: bool = False
    lost: bool = False
    progress: task_pb2.Progress | None = None
    progress_sent_at: float = 0.0
    progress_timer: asyncio.TimerHandle | None = None
    heartbeat_interval: float = 0.0  # 0: the session's default
    last_heartbeat: float = 0.0
    soft_timer: asyncio.TimerHandle | None = None
    logs_sent_at: float = 0.0
    logs_timer: asyncio.TimerHandle | None = None

    @property
    def key(self) -> str:
        return f"{self.task_id}/{self.lease_id}"

    @property
    def in_process(self) -> bool:
        return self.handler is not None and self.handler.executor == "process"

    @property
    def on_loop(self) -> bool:
        return self.handler is not None and self.handler.executor == "async"


@dataclass(frozen=True, slots=True)
class _Settled:
    """What the hooks need once the broker acknowledges an attempt's outcome."""

    ctx: TaskContext
    handler: Handler | None
    kind: Kind | None  # "success", or None for a failure until the ack says which
    value: Any  # the result, or the exception


@dataclass
class _Outbox:
    completions: list[worker_service_pb2.Completion] = field(default_factory=list)
    credits: int = 0
    heartbeats: dict[str, worker_service_pb2.Heartbeat] = field(default_factory=dict)
    releases: list[worker_service_pb2.LeaseRef] = field(default_factory=list)
    drain: bool = False

    def messages(self) -> list[worker_service_pb2.LeaseRequest]:
        # A drain first: the sooner the broker closes the window, the less to release.
        # Then heartbeats: a task's last progress must land before its result.
        out = [pb.LeaseRequest(drain=pb.Drain(message="worker stopping"))] if self.drain else []
        out += [
            pb.LeaseRequest(heartbeats=pb.Heartbeats(heartbeats=beats))
            for beats in _chunks(list(self.heartbeats.values()))
        ]
        out += [
            pb.LeaseRequest(completions=pb.Completions(completions=chunk))
            for chunk in _chunks(self.completions)
        ]
        if self.credits:
            out.append(pb.LeaseRequest(credit=pb.Credit(credits=self.credits)))
        out += [
            pb.LeaseRequest(releases=pb.Releases(leases=refs)) for refs in _chunks(self.releases)
        ]
        self.completions, self.credits, self.heartbeats, self.releases = [], 0, {}, []
        self.drain = False
        return out


T = TypeVar("T")


def _chunks(items: list[T]) -> list[list[T]]:
    """At most MAX_ITEMS_PER_MESSAGE items and MAX_BATCH_BYTES per message (results can be
    large); an item larger than that goes alone."""
    chunks: list[list[T]] = []
    current: list[T] = []
    size = 0
    for item in items:
        item_size = item.ByteSize() + 8 if isinstance(item, Message) else 0
        if current and (
            len(current) == MAX_ITEMS_PER_MESSAGE or size + item_size > MAX_BATCH_BYTES
        ):
            chunks.append(current)
            current, size = [], 0
        current.append(item)
        size += item_size
    if current:
        chunks.append(current)
    return chunks


class Worker(Registration):
    """Runs task handlers for a Taskyard broker.

    Args:
        target: The broker's ``host:port``, or several to fail over between.
        queues: The queues to take tasks from.
        concurrency: How many tasks run at once; the broker never sends more.
        worker_id: Shown in the broker; defaults to ``hostname-pid``.
        shutdown_grace: Seconds in-flight tasks get to finish on stop/SIGTERM
            before they are cancelled and handed back.
        tasks: Typed task definitions (``@task``) to run; more with `include`.
        process_pool: Settings of the pool that runs tasks defined with
            ``executor="process"`` (default: one child per CPU).
        task_log_level: The least severe ``ctx.log`` record sent to the broker.
        task_log_lines: At most this many ``ctx.log`` records per attempt.
        task_log_bytes: At most this much ``ctx.log`` text per attempt.
        token: Bearer token of a ``worker`` identity (docs/security.md).
        ca_file: PEM CA to verify the broker's certificate; implies TLS.
        cert_file: PEM client certificate for mutual TLS (with ``key_file``).
        key_file: PEM private key of ``cert_file``.
        tls: Use TLS with the system's CAs even without ``ca_file``.

    Example::

        @task("resize")
        async def resize(ctx: TaskContext, path: str, width: int) -> dict[str, int]:
            ctx.progress(50, "halfway")
            return {"width": width}

        worker = Worker(concurrency=8, tasks=[resize])
        worker.run_forever()

    String-typed handlers (``@worker.task("name")``, taking only the context) work too.
    """

    def __init__(
        self,
        *,
        target: str | Sequence[str] = DEFAULT_TARGET,
        queues: Sequence[str] | None = None,
        concurrency: int = 10,
        worker_id: str | None = None,
        shutdown_grace: float = 30.0,
        token: str | None = None,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        tls: bool = False,
        tasks: Sequence[TaskDefinition[Any, Any]] = (),
        process_pool: ProcessPool | None = None,
        task_log_level: int = logging.INFO,
        task_log_lines: int = DEFAULT_MAX_LINES,
        task_log_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self._handlers: dict[str, Handler] = {}
        self._targets = [target] if isinstance(target, str) else list(target)
        self._queues: list[str] | None = None if queues is None else list(queues)
        self._concurrency = concurrency
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}"
        self._grace = shutdown_grace
        self._security = ChannelSecurity(
            token=token, ca_file=ca_file, cert_file=cert_file, key_file=key_file, tls=tls
        )
        self._running: dict[str, _Job] = {}
        self._unacked: dict[str, worker_service_pb2.Completion] = {}
        self._draining = False
        self._broker_drained = False
        self._heartbeat_interval = 3.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._channel: grpc.aio.Channel | None = None
        self.completed = 0
        self._lifecycle = Lifecycle()
        self._pool_settings = process_pool or ProcessPool()
        self._pool: Pool | None = None
        self._log_level = task_log_level
        self._log_lines = task_log_lines
        self._log_bytes = task_log_bytes
        self._settled: dict[str, _Settled] = {}  # by Job.key, until the broker acknowledges
        self._hook_tasks: set[asyncio.Task[None]] = set()
        self.include(*tasks)

    # --- Registration and configuration ---------------------------------------------------

    def configure(
        self,
        *,
        concurrency: int | None = None,
        queues: Sequence[str] | None = None,
        targets: Sequence[str] | None = None,
        worker_id: str | None = None,
        **security: Any,
    ) -> None:
        """Override settings (used by the ``taskyard worker`` command line).

        ``security`` takes the constructor's token, ca_file, cert_file, key_file
        and tls; None values leave the setting as it is.
        """
        if concurrency is not None:
            self._concurrency = concurrency
        if queues:
            self._queues = list(queues)
        if targets:
            self._targets = list(targets)
        if worker_id:
            self.worker_id = worker_id
        given = {k: v for k, v in security.items() if v is not None}
        if given:
            self._security = replace(self._security, **given)

    # --- Running ---------------------------------------------------------------------------

    def run_forever(self) -> None:
        """Run until SIGTERM or SIGINT, then drain gracefully and return.

        The process is the worker's from here on: what start-up left alive is frozen out of
        the garbage collector's way (worker_sdk/_collector.py). `run` leaves an embedding
        application's collector alone.
        """
        _collector.settle()

        async def main() -> None:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop)
            await self.run()

        asyncio.run(main())

    async def run(self) -> None:
        """Serve until `stop` is called and the drain completes."""
        if not self._handlers:
            raise ValueError("no handlers registered; decorate functions with @worker.task(...)")
        if self._concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {self._concurrency}")
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._tick_wake = asyncio.Event()
        self._tick_period = self._heartbeat_interval
        self._outbox = _Outbox()
        self._drained = asyncio.Event()
        self._executor = ThreadPoolExecutor(self._concurrency, thread_name_prefix="taskyard")
        await self._lifecycle.start()
        try:
            await self._start_pool()
            channels = {t: aio_channel(t, self._security, CHANNEL_OPTIONS) for t in self._targets}
            try:
                await self._connect_loop(channels)
            finally:
                for job in list(self._running.values()):
                    if job.task is not None:
                        job.task.cancel()
                for channel in channels.values():
                    await channel.close()
        finally:
            if self._pool is not None:
                await self._pool.close()
            self._executor.shutdown(wait=False, cancel_futures=True)
            await asyncio.gather(*self._hook_tasks, return_exceptions=True)
            await self._lifecycle.stop()

    async def _start_pool(self) -> None:
        processes = [h for h in self._handlers.values() if h.executor == "process"]
        if processes:
            preload = sorted({h.fn.__module__ for h in processes} - {"__main__"})
            self._pool = Pool(self._pool_settings, preload=preload)
            await self._pool.start()
            log.info("process pool: %d children", self._pool.size)
        self._runner = Runner(
            lifecycle=self._lifecycle,
            threads=self._executor,
            processes=self._pool,
            log_level=self._log_level,
        )

    def stop(self) -> None:
        """Begin a graceful drain: take no more tasks, finish or hand back the rest."""
        if self._loop is None:
            return
        if _on_loop(self._loop):
            self._begin_drain()
        else:
            self._loop.call_soon_threadsafe(self._begin_drain)

    def _begin_drain(self) -> None:
        if self._draining:
            return
        log.info("draining: %d tasks in flight, up to %.0fs", len(self._running), self._grace)
        self._draining = True
        self._outbox.credits = 0
        self._outbox.drain = True  # the broker takes back the credits it still holds
        self._wake.set()
        assert self._loop is not None
        self._loop.call_later(self._grace, self._give_up_remaining)
        self._check_drained()

    def _give_up_remaining(self) -> None:
        for job in list(self._running.values()):
            log.warning(
                "task %s did not finish within the grace period; releasing it",
                job.task_id,
                extra=task_fields(job.ctx, self.worker_id),
            )
            self._outbox.releases.append(pb.LeaseRef(task_id=job.task_id, lease_id=job.lease_id))
            self._abandon(job)
            # A thread cannot be interrupted; stop waiting for it.
            self._running.pop(job.task_id, None)
        self._wake.set()
        self._check_drained()

    def _check_drained(self) -> None:
        if self._draining and not self._running and not self._unacked:
            self._drained.set()
            self._wake.set()

    def _rpc_channel(self) -> grpc.aio.Channel | None:
        return self._channel

    # --- Connection -----------------------------------------------------------------------

    async def _connect_loop(self, channels: dict[str, grpc.aio.Channel]) -> None:
        failures = 0
        index = 0
        while not self._drained.is_set():
            target = self._targets[index % len(self._targets)]
            established = False
            try:
                established = await self._session(channels[target], target)
            except grpc.RpcError as error:
                log.warning("lease stream to %s failed: %s", target, _describe(error))
            except OSError as error:
                log.warning("lease stream to %s failed: %s", target, error)
            if self._drained.is_set():
                return
            if established:
                failures = 0
            else:
                index += 1
            delay = min(BACKOFF_MAX_S, BACKOFF_INITIAL_S * 2**failures) * random.uniform(0.5, 1.0)
            failures += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), delay)

    async def _session(self, channel: grpc.aio.Channel, target: str) -> bool:
        self._channel = channel  # workflow nodes call WorkflowService on it (_node_context)
        call = worker_service_pb2_grpc.WorkerServiceStub(channel).Lease()
        await call.write(pb.LeaseRequest(hello=self._hello()))
        first = await call.read()
        if not isinstance(first, pb.LeaseResponse) or first.WhichOneof("kind") != "welcome":
            await call.done_writing()
            return False
        self._welcomed(first.welcome)
        log.info("connected to %s as %s (%d running)", target, self.worker_id, len(self._running))
        reader = asyncio.create_task(self._read(call), name="lease-reader")
        writer = asyncio.create_task(self._write(call), name="lease-writer")
        ticker = asyncio.create_task(self._tick(), name="lease-heartbeats")
        try:
            done, _ = await asyncio.wait({reader, writer}, return_when=asyncio.FIRST_COMPLETED)
            if writer in done and writer.exception() is None and not reader.done():
                # The writer closed our side after draining; wait for the broker's.
                await reader
            # Otherwise the stream ended (or broke) first: the session is over, and a
            # writer still waiting (say, for the broker's answer to our drain) stops.
        finally:
            for task in (reader, writer, ticker):
                task.cancel()
            results = await asyncio.gather(reader, writer, ticker, return_exceptions=True)
            call.cancel()
        for result in results:
            if isinstance(result, grpc.RpcError):
                raise result
        return True

    def _hello(self) -> worker_service_pb2.Hello:
        held = [
            pb.LeaseRef(task_id=j.task_id, lease_id=j.lease_id)
            for j in self._running.values()
            if not j.lost
        ]
        held += [
            pb.LeaseRef(task_id=c.task_id, lease_id=c.lease_id) for c in self._unacked.values()
        ]
        # A drain lasts for the stream it came on; a draining worker drains the new one.
        self._outbox = _Outbox(drain=self._draining)
        self._broker_drained = False
        return pb.Hello(
            worker_id=self.worker_id,
            task_types=self.task_types,
            queues=self.queues,
            sdk_language="python",
            sdk_version=__version__,
            credits=0 if self._draining else max(self._concurrency - len(self._running), 0),
            held_leases=held,
        )

    def _welcomed(self, welcome: worker_service_pb2.Welcome) -> None:
        interval = welcome.heartbeat_interval.ToTimedelta().total_seconds()
        self._heartbeat_interval = interval if interval > 0 else 3.0
        for ref in welcome.lost_leases:
            job = self._running.get(ref.task_id)
            if job is not None and job.lease_id == ref.lease_id:
                log.warning(
                    "lease on task %s was lost while disconnected; abandoning",
                    ref.task_id,
                    extra=task_fields(job.ctx, self.worker_id),
                )
                self._abandon(job)
            completion = self._unacked.get(ref.task_id)
            if completion is not None and completion.lease_id == ref.lease_id:
                del self._unacked[ref.task_id]
            # Its outcome will never be acknowledged now: no hooks for it.
            self._settled.pop(f"{ref.task_id}/{ref.lease_id}", None)
        # Results the broker has not acknowledged go out again.
        self._outbox.completions = list(self._unacked.values())
        self._wake.set()
        self._check_drained()

    async def _read(self, call: Any) -> None:
        while True:
            message = await call.read()
            if message is grpc.aio.EOF:
                return
            kind = message.WhichOneof("kind")
            if kind == "assignments":
                for assignment in message.assignments.assignments:
                    self._start(assignment)
            elif kind == "completion_acks":
                self._completion_acks(message.completion_acks.acks)
            elif kind == "heartbeat_acks":
                self._heartbeat_acks(message.heartbeat_acks.acks)
            elif kind == "cancellations":
                self._cancellations(message.cancellations.cancellations)
            elif kind == "shutdown":
                log.info("broker is shutting down: %s", message.shutdown.message)
            elif kind == "drain":
                # No more tasks will come on this stream (an operator drained this
                # worker, or this is the answer to our own drain): stop offering room.
                if self._draining:
                    log.info("the broker stopped assigning (%s)", message.drain.message)
                else:
                    log.warning(
                        "drained by the broker (%s); finishing held tasks", message.drain.message
                    )
                self._broker_drained = True
                self._outbox.credits = 0
                self._wake.set()  # a drained worker may half-close now (see _write)

    async def _write(self, call: Any) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            for message in self._outbox.messages():
                await call.write(message)
            # Once the broker answered our drain, no assignment can still be on its way,
            # so nothing is left behind (and lost) by closing.
            if self._drained.is_set() and self._broker_drained:
                await call.done_writing()
                return

    async def _tick(self) -> None:
        """Heartbeat every lease at its own interval, batched into one message per tick.

        The tick runs at half the shortest interval among running tasks; a task
        that starts with a shorter one wakes it (see _start).
        """
        while True:
            intervals = [
                j.heartbeat_interval for j in self._running.values() if j.heartbeat_interval
            ]
            period = min([self._heartbeat_interval, *intervals])
            self._tick_period = period
            self._tick_wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._tick_wake.wait(), period / 2)
            now = time.monotonic()
            for job in self._running.values():
                due = (job.heartbeat_interval or self._heartbeat_interval) * 0.9
                if job.lost or now - job.last_heartbeat < due:
                    continue
                if job.task_id not in self._outbox.heartbeats:
                    self._outbox.heartbeats[job.task_id] = pb.Heartbeat(
                        task_id=job.task_id, lease_id=job.lease_id
                    )
                job.last_heartbeat = now
                self._wake.set()

    # --- Acks and broker requests -----------------------------------------------------------

    def _completion_acks(self, acks: Sequence[worker_service_pb2.CompletionAck]) -> None:
        for ack in acks:
            completion = self._unacked.get(ack.task_id)
            if completion is not None and completion.lease_id == ack.lease_id:
                del self._unacked[ack.task_id]
            self._after_ack(ack)
            if ack.HasField("error"):
                log.warning(
                    "broker discarded the outcome of task %s: %s (%s)",
                    ack.task_id,
                    ack.error.message,
                    ack.error.reason,
                )
        self._check_drained()

    def _heartbeat_acks(self, acks: Sequence[worker_service_pb2.HeartbeatAck]) -> None:
        for ack in acks:
            job = self._running.get(ack.task_id)
            if job is None or job.lease_id != ack.lease_id:
                continue
            if ack.HasField("error"):
                log.warning(
                    "lost the lease on task %s (%s); abandoning it",
                    job.task_id,
                    ack.error.reason,
                    extra=task_fields(job.ctx, self.worker_id),
                )
                self._abandon(job)
            else:
                exp = ack.lease_expire_time
                job.ctx._set_deadline(exp.seconds + exp.nanos / 1e9)
                if ack.cancel_requested:
                    self._cancel(job)

    def _cancellations(self, items: Sequence[worker_service_pb2.Cancellation]) -> None:
        for item in items:
            job = self._running.get(item.task_id)
            if job is None or job.lease_id != item.lease_id:
                continue
            if item.reason == pb.CANCEL_REASON_TIMED_OUT:
                log.warning(
                    "task %s ran past its execution timeout; stopping it",
                    job.task_id,
                    extra=task_fields(job.ctx, self.worker_id),
                )
                self._abandon(job)
            elif item.reason == pb.CANCEL_REASON_LEASE_LOST:
                log.warning(
                    "broker revoked the lease on task %s; abandoning it",
                    job.task_id,
                    extra=task_fields(job.ctx, self.worker_id),
                )
                self._abandon(job)
            else:
                self._cancel(job)

    def _cancel(self, job: _Job) -> None:
        if job.cancel_requested:
            return
        job.cancel_requested = True
        job.ctx._cancel()
        if job.in_process and self._pool is not None:
            self._pool.cancel(job.key)  # killed after the grace period unless it returns
        elif job.on_loop and job.task is not None:
            job.task.cancel()

    def _abandon(self, job: _Job) -> None:
        """Stop caring about a task whose lease is gone: no outcome will be sent."""
        job.lost = True
        job.ctx._cancel()
        if job.in_process and self._pool is not None:
            self._pool.abandon(job.key)
        elif job.on_loop and job.task is not None:
            job.task.cancel()

    # --- Running handlers -------------------------------------------------------------------

    def _start(self, assignment: worker_service_pb2.Assignment) -> None:
        if self._draining:
            self._outbox.releases.append(
                pb.LeaseRef(task_id=assignment.task_id, lease_id=assignment.lease_id)
            )
            self._wake.set()
            return
        task_id = assignment.task_id
        logs = TaskLog(
            max_lines=self._log_lines,
            max_bytes=self._log_bytes,
            notify=lambda: self._threadsafe(self._report_logs, task_id, assignment.lease_id),
        )
        ctx = TaskContext(
            assignment,
            self._report,
            log_sink=logs.add,
            log_level=self._log_level,
            resources=self._lifecycle.resources,
            channel_of=self._rpc_channel,
        )
        job = _Job(
            task_id,
            assignment.lease_id,
            ctx,
            self._handlers.get(assignment.type),
            logs,
            heartbeat_interval=assignment.heartbeat_interval.ToTimedelta().total_seconds(),
            last_heartbeat=time.monotonic(),
        )
        stale = self._running.get(job.task_id)
        if stale is not None:
            # Leased to us again: the broker took the old lease back while the
            # old attempt still runs here. Only the new lease counts now.
            log.warning(
                "task %s leased again; abandoning its earlier attempt",
                job.task_id,
                extra=task_fields(stale.ctx, self.worker_id),
            )
            self._abandon(stale)
        self._running[job.task_id] = job
        if job.heartbeat_interval and job.heartbeat_interval < self._tick_period:
            self._tick_wake.set()
        if assignment.HasField("soft_deadline"):
            job.soft_timer = self._at(assignment.soft_deadline, lambda: self._soft(job))
        job.task = asyncio.create_task(self._execute(job))

    def _soft(self, job: _Job) -> None:
        job.ctx._soft_timeout()
        if job.in_process and self._pool is not None:
            self._pool.soft(job.key)

    async def _execute(self, job: _Job) -> None:
        completion = pb.Completion(task_id=job.task_id, lease_id=job.lease_id)
        settled: _Settled | None = None
        try:
            value = await self._invoke(job)
            try:
                data = encode(job.handler, value) if job.handler is not None else value
                completion.result.CopyFrom(to_payload(data))
                settled = _Settled(job.ctx, job.handler, "success", value)
            except NonRetryableError as exc:  # a typed result that does not match its type
                _fail(completion, type(exc).__name__, f"the result: {exc}", non_retryable=True)
            except TypeError as exc:
                _fail(completion, "ResultNotSerializable", str(exc), non_retryable=True)
        except asyncio.CancelledError:
            if not job.cancel_requested:
                self._finish(job, None)
                return
            completion.cancelled.message = "handler cancelled"
        except Exception as exc:  # a ProcessTaskError carries what the child reported
            completion.failure.CopyFrom(failure_of(exc))
            settled = _Settled(job.ctx, job.handler, None, exc)
        if job.cancel_requested:
            # Asked to stop, the handler returned or raised: it stopped. (A
            # result that raced ahead of the request was already sent.)
            outcome = completion.WhichOneof("outcome")
            note = completion.failure.message if outcome == "failure" else "stopped on request"
            completion.cancelled.message = note
            settled = None
        if settled is not None and not job.lost:
            self._settled[job.key] = settled
        self._finish(job, completion)

    async def _invoke(self, job: _Job) -> Any:
        headers = dict(job.ctx._assignment.trace_context)
        with task_scope(job.ctx, self.worker_id, headers):
            handler = job.handler
            if handler is None:
                raise LookupError(f"this worker has no handler for task type {job.ctx.type!r}")
            on_progress = functools.partial(self._report, job.task_id)
            return await self._runner.run(handler, job.ctx, job.key, on_progress)

    def _at(self, when: Any, callback: Callable[[], None]) -> asyncio.TimerHandle:
        """Call `callback` at a wall-clock Timestamp, on the loop's own clock."""
        assert self._loop is not None
        delay = when.seconds + when.nanos / 1e9 - time.time()
        return self._loop.call_later(max(delay, 0.0), callback)

    def _finish(self, job: _Job, completion: worker_service_pb2.Completion | None) -> None:
        # A stale attempt (its task leased to us again) must not touch the new one.
        current = self._running.get(job.task_id) is job
        for timer in (job.soft_timer, job.progress_timer, job.logs_timer):
            if timer is not None:
                timer.cancel()
        if current and completion is not None and not job.lost:
            # Progress and log records still held back go out with the result, before it.
            if job.progress_timer is not None:
                self._queue_progress(job)
            self._queue_logs(job)
        elif current:
            self._outbox.heartbeats.pop(job.task_id, None)
        if current:
            del self._running[job.task_id]
        if completion is not None and not job.lost:
            self._unacked[job.task_id] = completion
            self._outbox.completions.append(completion)
            self.completed += 1
        if not self._draining and not self._broker_drained:
            self._outbox.credits += 1
        self._wake.set()
        self._check_drained()

    # --- Hooks after the broker's answer ---------------------------------------------------------

    def _after_ack(self, ack: worker_service_pb2.CompletionAck) -> None:
        settled = self._settled.pop(f"{ack.task_id}/{ack.lease_id}", None)
        if settled is None or ack.HasField("error"):
            # LEASE_LOST: our outcome did not count (or its first ack was lost): no hooks.
            return
        kind = settled.kind or _FINAL.get(ack.state)
        if kind is None:
            return  # e.g. CANCELLED: a failure after a cancel request
        definition = settled.handler.definition if settled.handler else None
        own = getattr(definition.hooks, kind) if definition is not None else []
        hooks = self._lifecycle.hooks[kind]
        if not own and not hooks:
            return
        fields = task_fields(settled.ctx, self.worker_id)
        run = self._lifecycle.outcome(kind, settled.ctx, settled.value, own, fields)
        task = asyncio.get_running_loop().create_task(run, name=f"hooks-{ack.task_id}")
        self._hook_tasks.add(task)
        task.add_done_callback(self._hook_tasks.discard)

    # --- Progress and logs ---------------------------------------------------------------------

    def _threadsafe(self, fn: Callable[..., None], *args: Any) -> None:
        assert self._loop is not None
        if _on_loop(self._loop):
            fn(*args)
        else:
            self._loop.call_soon_threadsafe(fn, *args)

    def _heartbeat_of(self, job: _Job) -> worker_service_pb2.Heartbeat:
        """The job's heartbeat waiting in the outbox, or a new one there."""
        heartbeat = self._outbox.heartbeats.get(job.task_id)
        if heartbeat is None or heartbeat.lease_id != job.lease_id:
            heartbeat = pb.Heartbeat(task_id=job.task_id, lease_id=job.lease_id)
            self._outbox.heartbeats[job.task_id] = heartbeat
        return heartbeat

    def _report(self, task_id: str, progress: task_pb2.Progress) -> None:
        job = self._running.get(task_id)
        if job is None or job.lost:
            return
        job.progress = progress
        if job.progress_timer is not None:
            return
        wait = job.progress_sent_at + PROGRESS_MIN_INTERVAL_S - time.monotonic()
        if wait <= 0:
            self._queue_progress(job)
        else:
            assert self._loop is not None
            job.progress_timer = self._loop.call_later(wait, self._queue_progress, job)

    def _queue_progress(self, job: _Job) -> None:
        job.progress_timer = None
        if job.progress is None or job.lost or self._running.get(job.task_id) is not job:
            return
        self._heartbeat_of(job).progress.CopyFrom(job.progress)
        job.progress_sent_at = time.monotonic()
        self._wake.set()

    def _report_logs(self, task_id: str, lease_id: str) -> None:
        job = self._running.get(task_id)
        if job is None or job.lost or job.lease_id != lease_id or job.logs_timer is not None:
            return
        wait = job.logs_sent_at + LOG_FLUSH_INTERVAL_S - time.monotonic()
        assert self._loop is not None
        job.logs_timer = self._loop.call_later(max(wait, 0.0), self._queue_logs, job)

    def _queue_logs(self, job: _Job) -> None:
        job.logs_timer = None
        if job.lost or self._running.get(job.task_id) is not job or not job.logs.waiting:
            return
        self._heartbeat_of(job).logs.extend(job.logs.take())
        job.logs_sent_at = time.monotonic()
        self._wake.set()


def _fail(
    completion: worker_service_pb2.Completion,
    type_: str,
    message: str,
    details: str = "",
    non_retryable: bool = False,
) -> None:
    completion.failure.CopyFrom(
        pb.Failure(type=type_, message=message, details=details, non_retryable=non_retryable)
    )


def _describe(error: grpc.RpcError) -> str:
    code = error.code() if hasattr(error, "code") else None
    details = error.details() if hasattr(error, "details") else str(error)
    return f"{code.name if code else 'error'}: {details}"


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
