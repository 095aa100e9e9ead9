"""WorkerService.Lease: one worker session, from handshake to goodbye.

A session reads batches from the worker and answers them without blocking its
read loop: heartbeats whose lease is fresh are acknowledged from memory (no
database write per heartbeat); everything else goes through the committer and
is acknowledged once committed. When the stream ends for any reason but a
broker shutdown, the session's leases are released at once.

What waits to be written to the worker is bounded in bytes, not only by the
worker's credits: a stream that does not read stops getting assignments once
OUTBOX_SOFT_BYTES wait (its leases lapse and run elsewhere) and is not read
from until they went out, so that acks cannot pile up either; a stream that
lets OUTBOX_HARD_BYTES pile up all the same is ended with RESOURCE_EXHAUSTED
`SLOW_CONSUMER`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
from google.protobuf import duration_pb2
from google.protobuf.message import Message

import broker
from broker.api import convert
from broker.api.runtime import Runtime
from broker.api.worker_registry import WorkerRegistry
from broker.config import Limits
from broker.core import validation
from broker.core.models import (
    Cancelled,
    Claimed,
    Failed,
    Holder,
    LeaseEnd,
    LeaseRef,
    LogLine,
    Outcome,
    Succeeded,
)
from broker.core.queues import DEFAULT_QUEUE
from broker.core.task_logs import LogBudget, admit
from broker.engine.dispatcher import StopReason
from broker.engine.event_record import WorkerChange
from broker.engine.ops import AdoptLeases, EndLeases, ExtendLeases, Op, disconnected, released
from broker.engine.worker_ops import WriteSessions
from broker.errors import InvalidArgument, ResourceExhausted, ShuttingDown, TaskyardError
from broker.loops import trim
from broker.security import access
from broker.status import abort
from broker.store.leases import Ended, ExtendResult, Extension
from broker.store.workers import SessionRow
from taskyard.v1 import (
    error_details_pb2,
    worker_service_pb2,
    worker_service_pb2_grpc,
)

log = logging.getLogger(__name__)

Context = Any  # grpc.aio.ServicerContext
R = TypeVar("R")
pb = worker_service_pb2

HANDSHAKE_TIMEOUT_S = 10.0
OUTBOX_SOFT_BYTES = 8 * 1024 * 1024  # no assignments, and no reads, while more than this waits
OUTBOX_HARD_BYTES = 64 * 1024 * 1024  # the stream ends when more than this waits
WRITER_FLUSH_S = 5.0  # how long a closing session waits for its last messages to go out
# Batches of one session waiting for the committer; past this the session stops reading
# until some are answered, so a worker that sends faster than they commit cannot queue
# unbounded work (its writes back up in gRPC's flow control instead).
MAX_OPS_IN_FLIGHT = 32
_LEASE_LOST = error_details_pb2.ItemError(
    code=9, reason="LEASE_LOST", message="the lease is no longer held; drop this task"
)
_DUPLICATE = error_details_pb2.ItemError(
    code=3,
    reason="DUPLICATE_TASK_ID",
    message="this task id appears earlier in the same heartbeats message; only the first counts",
)
_WIRE_REASON = {
    StopReason.CANCEL_REQUESTED: pb.CANCEL_REASON_REQUESTED,
    StopReason.LEASE_LOST: pb.CANCEL_REASON_LEASE_LOST,
    StopReason.TIMED_OUT: pb.CANCEL_REASON_TIMED_OUT,
}


@dataclass(slots=True)
class _Lease:
    lease_id: int
    expires: int  # as last written to the database
    timeout_us: int  # the task's heartbeat timeout
    cancel_requested: bool = False
    logs: LogBudget = field(default_factory=LogBudget)  # log records stored this attempt


class WorkerService(WorkerRegistry, worker_service_pb2_grpc.WorkerServiceServicer):
    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    # grpc.aio also accepts a coroutine that talks through context.read() and
    # context.write(), which lets the session read and write independently.
    async def Lease(self, request_iterator: Any, context: Context) -> None:  # type: ignore[override]
        try:
            hello = await self._hello(context)
        except TaskyardError as error:
            await abort(context, error)
        await Session(self._rt, hello, context).run()

    async def _hello(self, context: Context) -> worker_service_pb2.Hello:
        if self._rt.shutting_down:
            raise ShuttingDown()
        try:
            first = await asyncio.wait_for(context.read(), HANDSHAKE_TIMEOUT_S)
        except TimeoutError:
            raise InvalidArgument(
                f"no hello within {HANDSHAKE_TIMEOUT_S:.0f}s; send hello first",
                reason="HANDSHAKE_REQUIRED",
            ) from None
        if not isinstance(first, pb.LeaseRequest) or first.WhichOneof("kind") != "hello":
            raise InvalidArgument(
                "the first message on a Lease stream must be hello", reason="HANDSHAKE_REQUIRED"
            )
        _check_hello(first.hello, self._rt.settings.limits)
        # A worker identity leases only from its queues, for its task types.
        access.check_hello(first.hello, DEFAULT_QUEUE)
        return first.hello


def _check_hello(hello: worker_service_pb2.Hello, limits: Limits) -> None:
    validation.name("hello.worker_id", hello.worker_id, limits, reason="HANDSHAKE_REQUIRED")
    if not hello.task_types:
        raise InvalidArgument(
            "hello.task_types is empty; list the task types this worker handles",
            reason="HANDSHAKE_REQUIRED",
        )
    for t in hello.task_types:
        validation.name("hello.task_types[]", t, limits, reason="HANDSHAKE_REQUIRED")
    for q in hello.queues:
        validation.name("hello.queues[]", q, limits, reason="HANDSHAKE_REQUIRED")
    for field_name in ("sdk_language", "sdk_version"):
        value = getattr(hello, field_name)
        if len(value) > 100:
            raise InvalidArgument(
                f"hello.{field_name} is {len(value)} characters; the limit is 100",
                reason="HANDSHAKE_REQUIRED",
            )
        validation.identifier(f"hello.{field_name}", value, reason="HANDSHAKE_REQUIRED")
    _check_credits("hello.credits", hello.credits, limits, allow_zero=True)
    # Re-adopting is a write per lease inside the one writer: bound it like a batch.
    if len(hello.held_leases) > limits.max_lease_items:
        raise InvalidArgument(
            f"hello.held_leases holds {len(hello.held_leases)} leases; a worker may re-adopt at "
            f"most {limits.max_lease_items} (--max-lease-items)",
            reason="BATCH_TOO_LARGE",
        )


def _check_items(kind: str, batch: Message, limits: Limits) -> None:
    """A heartbeats, completions or releases message holds at most max_lease_items."""
    fields = batch.ListFields()
    count = len(fields[0][1]) if fields else 0
    if count > limits.max_lease_items:
        raise InvalidArgument(
            f"{kind} holds {count} items; send at most {limits.max_lease_items} per message",
            reason="BATCH_TOO_LARGE",
        )


def _check_credits(field: str, credits: int, limits: Limits, *, allow_zero: bool) -> None:
    low = 0 if allow_zero else 1
    if not low <= credits <= limits.max_credits:
        raise InvalidArgument(
            f"{field} must be between {low} and {limits.max_credits}, got {credits}",
            reason="INVALID_CREDITS",
        )


class Session:
    """One Lease stream; implements the dispatcher's LeaseHolder."""

    def __init__(self, rt: Runtime, hello: worker_service_pb2.Hello, context: Context) -> None:
        self._rt = rt
        self._context = context
        self.key = uuid.uuid4().hex
        self.worker_id = hello.worker_id
        self.types = tuple(dict.fromkeys(hello.task_types))
        self.queues = tuple(dict.fromkeys(hello.queues)) or (DEFAULT_QUEUE,)
        self.sdk = f"{hello.sdk_language or 'unknown'} {hello.sdk_version}".strip()[:200]
        # Only this identity, within its queues and types, may act on this
        # session's leases (store/leases.holds); its name is recorded on each.
        principal = grant.principal if (grant := access.current()) is not None else None
        self.identity = principal.owner if principal is not None else None
        self._by = (
            Holder(self.identity, principal.queues, principal.types)
            if principal is not None
            else Holder(None)
        )
        self._hello = hello
        self._leases: dict[str, _Lease] = {}
        self._outbox: asyncio.Queue[tuple[worker_service_pb2.LeaseResponse, int] | None] = (
            asyncio.Queue()
        )
        self._queued = 0  # bytes in the outbox and in the write under way
        self._ops = 0  # batches submitted to the committer and not yet answered
        self._calm = asyncio.Event()  # set while the session may read on
        self._calm.set()
        # Set when the broker must end the stream with a status (a slow consumer).
        self._failure: asyncio.Future[TaskyardError] = asyncio.get_running_loop().create_future()
        self._open = True
        self.address = str(context.peer() or "")
        self.connected_at = self.last_seen = rt.clock.now_us()
        self.draining = False

    # --- LeaseHolder ------------------------------------------------------------------------

    @property
    def open(self) -> bool:
        return self._open

    def held_leases(self) -> list[LeaseRef]:
        return [LeaseRef(task_id, lease.lease_id) for task_id, lease in self._leases.items()]

    def deliver(self, claimed: list[Claimed]) -> int:
        """Queue the assignments for the worker; returns the bytes they take."""
        for c in claimed:
            self._leases[c.id] = _Lease(c.lease_id, c.lease_expires_at, c.heartbeat_timeout_us)
        # Split by size: a claim of many large payloads must not exceed the send limit.
        limits = self._rt.settings.limits
        budget = min(limits.max_batch_bytes, limits.send_bytes) - 1024
        chunk: list[worker_service_pb2.Assignment] = []
        size = total = 0
        for c in claimed:
            assignment = convert.assignment(c)
            n = assignment.ByteSize() + 5  # the field's tag and length
            if chunk and size + n > budget:
                total += self._send_assignments(chunk, size)
                chunk, size = [], 0
            chunk.append(assignment)
            size += n
        return total + self._send_assignments(chunk, size)

    def _send_assignments(self, chunk: list[worker_service_pb2.Assignment], size: int) -> int:
        self._send(pb.LeaseResponse(assignments=pb.Assignments(assignments=chunk)), size + 5)
        return size + 5

    def room(self) -> int:
        return OUTBOX_SOFT_BYTES - self._queued

    def stop_lease(self, ref: LeaseRef, reason: StopReason) -> None:
        lease = self._leases.get(ref.task_id)
        if lease is None or lease.lease_id != ref.lease_id:
            return
        if reason is StopReason.CANCEL_REQUESTED:
            lease.cancel_requested = True
        else:
            del self._leases[ref.task_id]
        cancellation = pb.Cancellation(
            task_id=ref.task_id, lease_id=str(ref.lease_id), reason=_WIRE_REASON[reason]
        )
        self._send(pb.LeaseResponse(cancellations=pb.Cancellations(cancellations=[cancellation])))

    # --- The session's life ---------------------------------------------------------------

    def row(self) -> SessionRow:
        """This session as the worker registry shows it."""
        return SessionRow(
            session_id=self.key,
            worker_id=self.worker_id,
            replica_id=self._rt.replica_id,
            address=self.address,
            sdk=self.sdk,
            task_types=self.types,
            queues=self.queues,
            connected_at=self.connected_at,
            seen_at=self._rt.clock.now_us(),
            credits=self._rt.dispatcher.credits_of(self),
            in_flight=len(self._leases),
            draining=self.draining,
        )

    def drain(self, message: str) -> None:
        """No new tasks on this stream; the worker finishes the ones it holds.

        The `drain` message goes after every assignment already queued, and no
        assignment follows it (the dispatcher closes the window first).
        """
        if self.draining:
            return
        self.draining = True
        self._rt.dispatcher.drain(self)
        self._send(pb.LeaseResponse(drain=pb.Drain(message=message)))
        row = self.row()
        self._rt.committer.submit(WriteSessions([row], change=(WorkerChange.DRAINING, row)))

    async def run(self) -> None:
        rt = self._rt
        lost = await self._adopt_held()
        rt.dispatcher.attach(self)
        rt.sessions.add(self)
        row = self.row()
        rt.committer.submit(WriteSessions([row], change=(WorkerChange.CONNECTED, row)))
        log.info(
            "worker %s connected (%s; types %s; queues %s)",
            self.worker_id,
            self.sdk,
            ",".join(self.types),
            ",".join(self.queues),
        )
        self._send(self._welcome(lost))
        writer = asyncio.create_task(self._write_loop(), name=f"lease-writer-{self.key}")
        reader = asyncio.create_task(self._read_loop(), name=f"lease-reader-{self.key}")
        error: TaskyardError | None = None
        try:
            if self._hello.credits:
                rt.dispatcher.grant(self, self._hello.credits)
            ends: set[asyncio.Future[Any]] = {reader, self._failure}
            await asyncio.wait(ends, return_when=asyncio.FIRST_COMPLETED)
            error = self._failure.result() if self._failure.done() else reader.result()
        finally:
            reader.cancel()
            self._open = False
            rt.sessions.remove(self)
            final = self.row()
            rt.committer.submit(
                WriteSessions([], gone=[self.key], change=(WorkerChange.DISCONNECTED, final))
            )
            held = rt.dispatcher.detach(self)
            if held and not rt.shutting_down:
                # The worker is gone: its tasks may run again elsewhere now.
                rt.committer.submit(EndLeases([disconnected(ref) for ref in held]))
            log.info("worker %s disconnected; %d leases released", self.worker_id, len(held))
            backlog = self._queued
            await self._stop_writer(writer, flush=error is None)
            if backlog > OUTBOX_SOFT_BYTES // 4:
                trim.trim()  # what the outbox held is free now: give it back
        if error is not None:
            # Only now that no write is under way: gRPC refuses to send a status while
            # a message is still being written (the welcome, typically).
            await abort(self._context, error)

    async def _stop_writer(self, writer: asyncio.Task[None], *, flush: bool) -> None:
        """Let the writer send what is queued (a clean end) or just its current message."""
        if not flush:
            while not self._outbox.empty():
                self._outbox.get_nowait()
        self._outbox.put_nowait(None)
        done, _ = await asyncio.wait({writer}, timeout=WRITER_FLUSH_S)
        if not done:
            writer.cancel()  # the worker does not read: its messages are dropped
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await writer
        self._queued = 0

    async def _adopt_held(self) -> list[worker_service_pb2.LeaseRef]:
        """Keep the leases a reconnecting worker still holds; return those it lost."""
        held = self._hello.held_leases
        refs = [
            LeaseRef(item.task_id, lease_id)
            for item in held
            if (lease_id := convert.lease_ref(item.task_id, item.lease_id)) is not None
        ]
        adopt = AdoptLeases(refs, self.worker_id, self._by)
        kept = await self._rt.committer.submit(adopt) if refs else {}
        for ref in refs:
            if ref.task_id in kept:
                expires = kept[ref.task_id].expires
                timeout = expires - self._rt.clock.now_us()
                self._leases[ref.task_id] = _Lease(ref.lease_id, expires, max(timeout, 1))
        self._rt.dispatcher.adopt(self, [r for r in refs if r.task_id in kept])
        return [item for item in held if item.task_id not in kept]

    def _welcome(
        self, lost: Sequence[worker_service_pb2.LeaseRef]
    ) -> worker_service_pb2.LeaseResponse:
        settings = self._rt.settings
        welcome = pb.Welcome(
            session_id=self.key,
            broker_version=broker.__version__,
            lease_duration=_duration(settings.lease_duration_s),
            heartbeat_interval=_duration(settings.heartbeat_interval_s),
            lost_leases=list(lost),
        )
        return pb.LeaseResponse(welcome=welcome)

    async def _read_loop(self) -> TaskyardError | None:
        """Read until the worker half-closes (None) or breaks the protocol (the error)."""
        while True:
            await self._calm.wait()
            message = await self._context.read()
            if message is grpc.aio.EOF:
                return None
            self.last_seen = self._rt.clock.now_us()
            # Anything from the worker shows it is alive: a stalled session gets work again.
            self._rt.dispatcher.alive(self)
            try:
                self._handle(message)
            except TaskyardError as error:
                return error

    async def _write_loop(self) -> None:
        while True:
            item = await self._outbox.get()
            if item is None:
                return
            message, size = item
            await self._context.write(message)
            before = self._queued
            self._queued -= size
            if before >= OUTBOX_SOFT_BYTES > self._queued:
                self._rt.dispatcher.room_freed(self)
            self._settle()

    def _settle(self) -> None:
        """Read on only while the worker reads what we send and the committer keeps up."""
        if self._queued > OUTBOX_SOFT_BYTES or self._ops >= MAX_OPS_IN_FLIGHT:
            self._calm.clear()
        else:
            self._calm.set()

    def _submit(self, op: Op[R]) -> asyncio.Future[R]:
        """Submit one of the worker's batches, counted until the committer answers it."""
        self._ops += 1
        self._settle()
        future = self._rt.committer.submit(op)
        future.add_done_callback(self._answered)
        return future

    def _answered(self, _: asyncio.Future[Any]) -> None:
        self._ops -= 1
        self._settle()

    def _send(self, message: worker_service_pb2.LeaseResponse, size: int | None = None) -> None:
        if not self._open:
            return
        size = message.ByteSize() if size is None else size
        self._queued += size
        self._outbox.put_nowait((message, size))
        self._settle()
        if self._queued > OUTBOX_HARD_BYTES and not self._failure.done():
            self._failure.set_result(
                ResourceExhausted(
                    f"{self._queued} bytes wait to be written to this stream; read what the "
                    "broker sends (acks, assignments) as you send",
                    reason="SLOW_CONSUMER",
                )
            )

    def shutdown(self, grace_s: float, reason: str) -> None:
        self._send(pb.LeaseResponse(shutdown=pb.Shutdown(grace=_duration(grace_s), message=reason)))

    # --- Incoming batches -----------------------------------------------------------------

    def _handle(self, message: worker_service_pb2.LeaseRequest) -> None:
        kind = message.WhichOneof("kind")
        if kind in ("heartbeats", "completions", "releases"):
            _check_items(kind, getattr(message, kind), self._rt.settings.limits)
        if kind == "credit":
            limits = self._rt.settings.limits
            _check_credits("credit.credits", message.credit.credits, limits, allow_zero=False)
            self._rt.dispatcher.grant(self, message.credit.credits)
        elif kind == "heartbeats":
            self._heartbeats(message.heartbeats.heartbeats)
        elif kind == "completions":
            self._completions(message.completions.completions)
        elif kind == "releases":
            self._releases(message.releases.leases)
        elif kind == "drain":
            self.drain("the worker is draining")
        elif kind == "hello":
            raise InvalidArgument("hello may only be sent once, first", reason="PROTOCOL_ERROR")
        else:
            raise InvalidArgument("empty LeaseRequest: set one kind", reason="PROTOCOL_ERROR")

    def _heartbeats(self, heartbeats: Sequence[worker_service_pb2.Heartbeat]) -> None:
        now = self._rt.clock.now_us()
        acks: list[worker_service_pb2.HeartbeatAck] = []
        slow: list[Extension] = []
        seen: set[str] = set()
        for hb in heartbeats:
            ack = pb.HeartbeatAck(task_id=hb.task_id, lease_id=hb.lease_id)
            acks.append(ack)
            if hb.task_id in seen:
                ack.error.CopyFrom(_DUPLICATE)
                continue
            seen.add(hb.task_id)
            lease_id = convert.lease_ref(hb.task_id, hb.lease_id)
            if lease_id is None:
                ack.error.CopyFrom(_LEASE_LOST)
                continue
            lease = self._leases.get(hb.task_id)
            progress = convert.progress(hb.progress, now) if hb.HasField("progress") else None
            logs = self._admit_logs(hb, lease, now) if hb.logs else ()
            # A lease written to the database with more than half its timeout
            # to go needs no write now: answer from memory.
            fresh = (
                lease is not None
                and lease.lease_id == lease_id
                and lease.expires - now > lease.timeout_us // 2
            )
            if fresh and progress is None and not logs:
                assert lease is not None
                convert.set_timestamp(ack.lease_expire_time, lease.expires)
                ack.cancel_requested = lease.cancel_requested
            else:
                slow.append(Extension(hb.task_id, lease_id, progress, logs=logs, by=self._by))
        if not slow:
            self._send(pb.LeaseResponse(heartbeat_acks=pb.HeartbeatAcks(acks=acks)))
            return
        future = self._submit(ExtendLeases(slow))
        future.add_done_callback(lambda f: self._extended(f, acks, slow, now))

    def _admit_logs(
        self, hb: worker_service_pb2.Heartbeat, lease: _Lease | None, now: int
    ) -> tuple[LogLine, ...]:
        """The heartbeat's log records that fit its attempt's budget (`--task-log-lines`)."""
        limits = self._rt.settings.limits
        # A lease this session does not know yet (adopted through the heartbeat) starts
        # a budget of its own.
        budget = lease.logs if lease is not None else LogBudget()
        lines = convert.log_lines(hb.logs, now)
        return tuple(
            admit(
                budget,
                lines,
                max_lines=limits.task_log_lines,
                max_bytes=limits.task_log_bytes,
                now_us=now,
            )
        )

    def _extended(
        self,
        future: asyncio.Future[dict[str, ExtendResult]],
        acks: list[worker_service_pb2.HeartbeatAck],
        slow: list[Extension],
        now: int,
    ) -> None:
        if future.cancelled() or future.exception() is not None:
            return  # the worker heartbeats again; the lease is not extended meanwhile
        results = future.result()
        by_id = {a.task_id: a for a in acks if not a.HasField("error")}
        adopted: list[LeaseRef] = []
        for item in slow:
            ack, result = by_id[item.task_id], results[item.task_id]
            if not result.ok:
                ack.error.CopyFrom(_LEASE_LOST)
                self._leases.pop(item.task_id, None)
                continue
            lease = self._leases.get(item.task_id)
            if lease is None or lease.lease_id != item.lease_id:
                # Leased by another session or replica; it lives here now.
                lease = _Lease(item.lease_id, result.expires, result.expires - now)
                self._leases[item.task_id] = lease
                adopted.append(LeaseRef(item.task_id, item.lease_id))
            lease.expires = result.expires
            lease.cancel_requested = lease.cancel_requested or result.cancel_requested
            convert.set_timestamp(ack.lease_expire_time, result.expires)
            ack.cancel_requested = lease.cancel_requested
            if item.progress is not None:
                self._rt.events.progress(item.task_id, item.progress)
        if adopted:
            self._rt.dispatcher.adopt(self, adopted)
        self._rt.dispatcher.reported(self, (item.task_id for item in slow))
        self._send(pb.LeaseResponse(heartbeat_acks=pb.HeartbeatAcks(acks=acks)))

    def _completions(self, completions: Sequence[worker_service_pb2.Completion]) -> None:
        limits = self._rt.settings.limits
        acks: list[worker_service_pb2.CompletionAck] = []
        ends: list[LeaseEnd] = []
        pending: list[worker_service_pb2.CompletionAck] = []
        for c in completions:
            ack = pb.CompletionAck(task_id=c.task_id, lease_id=c.lease_id)
            acks.append(ack)
            lease_id = convert.lease_ref(c.task_id, c.lease_id)
            try:
                outcome = _outcome(c, limits)
            except InvalidArgument as error:
                ack.error.CopyFrom(
                    error_details_pb2.ItemError(
                        code=error.code.value[0], reason=error.reason, message=error.message
                    )
                )
                continue
            if lease_id is None:
                ack.error.CopyFrom(_LEASE_LOST)
                continue
            ends.append(LeaseEnd(c.task_id, lease_id, outcome, self._by))
            pending.append(ack)
        if not ends:
            self._send(pb.LeaseResponse(completion_acks=pb.CompletionAcks(acks=acks)))
            return
        future = self._submit(EndLeases(ends))
        future.add_done_callback(lambda f: self._completed(f, acks, pending))

    def _completed(
        self,
        future: asyncio.Future[list[Ended | None]],
        acks: list[worker_service_pb2.CompletionAck],
        pending: list[worker_service_pb2.CompletionAck],
    ) -> None:
        if future.cancelled() or future.exception() is not None:
            # Not acknowledged: the worker keeps the outcome and sends it again.
            error = None if future.cancelled() else future.exception()
            log.warning("completions from %s not recorded: %s", self.worker_id, error)
            return
        for ack, ended in zip(pending, future.result(), strict=True):
            self._leases.pop(ack.task_id, None)
            if ended is None:
                ack.error.CopyFrom(_LEASE_LOST)
            else:
                # The worker learns whether a failure will be retried (on_retry/on_failure).
                ack.state = int(ended.state)  # type: ignore[assignment]
        self._rt.dispatcher.reported(self, (ack.task_id for ack in pending))
        self._send(pb.LeaseResponse(completion_acks=pb.CompletionAcks(acks=acks)))

    def _releases(self, refs: Sequence[worker_service_pb2.LeaseRef]) -> None:
        ends = []
        for ref in refs:
            lease_id = convert.lease_ref(ref.task_id, ref.lease_id)
            lease = self._leases.get(ref.task_id)
            if lease_id is not None and lease is not None and lease.lease_id == lease_id:
                del self._leases[ref.task_id]  # releasing a lease it does not hold does nothing
                ends.append(released(LeaseRef(ref.task_id, lease_id)))
        if ends:
            self._rt.dispatcher.ended([LeaseRef(e.task_id, e.lease_id) for e in ends])
            self._rt.dispatcher.released(self, [e.task_id for e in ends])
            self._submit(EndLeases(ends))


def _outcome(c: worker_service_pb2.Completion, limits: Limits) -> Outcome:
    kind = c.WhichOneof("outcome")
    if kind == "result":
        return Succeeded(convert.payload_bytes("completion.result", c.result, limits))
    if kind == "failure":
        return Failed(convert.failure(c.failure))
    if kind == "cancelled":
        return Cancelled(validation.printable(c.cancelled.message[:1000]))
    raise InvalidArgument(
        "completion has no outcome: set result, failure or cancelled", reason="INVALID_ARGUMENT"
    )


def _duration(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromMicroseconds(int(seconds * 1_000_000))
    return d
