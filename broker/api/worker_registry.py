"""WorkerService's registry RPCs: ListWorkers, GetWorker, DrainWorker."""

from __future__ import annotations

from typing import Any

from broker.api.runtime import Runtime
from broker.api.status import maps_errors
from broker.core import validation
from broker.engine.worker_ops import DrainWorker
from broker.errors import NotFound
from broker.loops.registry import STALE_US
from broker.store import workers
from broker.store.workers import SessionRow
from taskyard.v1 import worker_service_pb2 as pb

Context = Any


class WorkerNotFound(NotFound):
    reason = "WORKER_NOT_FOUND"

    def __init__(self, worker_id: str) -> None:
        super().__init__(f"no worker {worker_id!r} is connected; see `taskyard workers`")


def info(row: SessionRow) -> pb.WorkerInfo:
    out = pb.WorkerInfo(
        worker_id=row.worker_id,
        session_id=row.session_id,
        address=row.address,
        sdk=row.sdk,
        task_types=row.task_types,
        queues=row.queues,
        credits=row.credits,
        leases_in_flight=row.in_flight,
        draining=row.draining,
        replica_id=row.replica_id,
    )
    out.connect_time.FromMicroseconds(row.connected_at)
    out.last_seen_time.FromMicroseconds(row.seen_at)
    return out


class WorkerRegistry:
    _rt: Runtime

    def _local(self) -> dict[str, SessionRow]:
        """This replica's sessions, fresher than their registry rows."""
        return {row.session_id: row for row in self._rt.sessions.rows()}

    async def _sessions(self, worker_id: str | None = None) -> list[SessionRow]:
        now = self._rt.clock.now_us()
        async with self._rt.db.reader.connect() as conn:
            stored = await workers.listed(conn, seen_after=now - STALE_US, worker_id=worker_id)
        local = self._local()
        merged = {r.session_id: r for r in stored if r.replica_id != self._rt.replica_id}
        merged |= {k: r for k, r in local.items() if worker_id in (None, r.worker_id)}
        return sorted(merged.values(), key=lambda r: (r.worker_id, r.connected_at))

    @maps_errors
    async def ListWorkers(
        self, request: pb.ListWorkersRequest, context: Context
    ) -> pb.ListWorkersResponse:
        rows = await self._sessions()
        if request.queue:
            rows = [r for r in rows if request.queue in r.queues]
        return pb.ListWorkersResponse(workers=[info(r) for r in rows])

    @maps_errors
    async def GetWorker(
        self, request: pb.GetWorkerRequest, context: Context
    ) -> pb.GetWorkerResponse:
        worker_id = self._worker_id(request.worker_id)
        rows = await self._sessions(worker_id)
        if not rows:
            raise WorkerNotFound(worker_id)
        return pb.GetWorkerResponse(sessions=[info(r) for r in rows])

    @maps_errors
    async def DrainWorker(
        self, request: pb.DrainWorkerRequest, context: Context
    ) -> pb.DrainWorkerResponse:
        worker_id = self._worker_id(request.worker_id)
        if not await self._sessions(worker_id):
            raise WorkerNotFound(worker_id)
        await self._rt.committer.submit(DrainWorker(worker_id))
        self._rt.sessions.drain(worker_id)
        return pb.DrainWorkerResponse(sessions=[info(r) for r in await self._sessions(worker_id)])

    def _worker_id(self, value: str) -> str:
        return validation.name(
            "worker_id", value, self._rt.settings.limits, reason="INVALID_WORKER_ID"
        )
