"""Named queries for the worker registry: which worker sessions are connected, where."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.store.schema import worker_session


@dataclass(frozen=True, slots=True)
class SessionRow:
    session_id: str
    worker_id: str
    replica_id: str
    address: str
    sdk: str
    task_types: tuple[str, ...]
    queues: tuple[str, ...]
    connected_at: int
    seen_at: int
    credits: int
    in_flight: int
    draining: bool


def _values(s: SessionRow) -> dict[str, object]:
    return {
        "session_id": s.session_id,
        "worker_id": s.worker_id,
        "replica_id": s.replica_id,
        "address": s.address,
        "sdk": s.sdk,
        "task_types": json.dumps(list(s.task_types)),
        "queues": json.dumps(list(s.queues)),
        "connected_at": s.connected_at,
        "seen_at": s.seen_at,
        "credits": s.credits,
        "in_flight": s.in_flight,
        "draining": s.draining,
    }


async def upsert(conn: AsyncConnection, sessions: Sequence[SessionRow]) -> None:
    if not sessions:
        return
    ids = [s.session_id for s in sessions]
    await conn.execute(sa.delete(worker_session).where(worker_session.c.session_id.in_(ids)))
    await conn.execute(worker_session.insert(), [_values(s) for s in sessions])


async def remove(conn: AsyncConnection, session_ids: Sequence[str]) -> None:
    if session_ids:
        await conn.execute(
            sa.delete(worker_session).where(worker_session.c.session_id.in_(list(session_ids)))
        )


async def forget_stale(conn: AsyncConnection, *, seen_before: int) -> int:
    """Sessions of replicas that died without saying goodbye."""
    result = await conn.execute(
        sa.delete(worker_session).where(worker_session.c.seen_at < seen_before)
    )
    return int(result.rowcount or 0)


async def mark_draining(conn: AsyncConnection, worker_id: str) -> None:
    await conn.execute(
        sa.update(worker_session)
        .where(worker_session.c.worker_id == worker_id)
        .values(draining=True)
    )


async def listed(
    conn: AsyncConnection, *, seen_after: int, worker_id: str | None = None
) -> list[SessionRow]:
    query = (
        sa.select(worker_session)
        .where(worker_session.c.seen_at >= seen_after)
        .order_by(worker_session.c.worker_id, worker_session.c.connected_at)
    )
    if worker_id is not None:
        query = query.where(worker_session.c.worker_id == worker_id)
    return [
        SessionRow(
            session_id=r.session_id,
            worker_id=r.worker_id,
            replica_id=r.replica_id,
            address=r.address or "",
            sdk=r.sdk or "",
            task_types=tuple(json.loads(r.task_types)),
            queues=tuple(json.loads(r.queues)),
            connected_at=r.connected_at,
            seen_at=r.seen_at,
            credits=r.credits,
            in_flight=r.in_flight,
            draining=bool(r.draining),
        )
        for r in await conn.execute(query)
    ]
