"""Named queries for queues: their settings, their counters, and limited claims."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.core.options import TaskOptions
from broker.core.queues import Bucket, QueueSettings, RetentionSettings
from broker.core.retry import BackoffStrategy
from broker.core.task_state import WAITING, TaskState
from broker.store.dialect import Insert, insert, is_pg
from broker.store.schema import queue, queue_count

_S = TaskState


def _options_json(options: TaskOptions) -> str | None:
    data = {k: v for k, v in asdict(options).items() if v is not None}
    if not data:
        return None
    if "strategy" in data:
        data["strategy"] = data["strategy"].value
    for key in ("non_retryable_error_types", "retryable_error_types"):
        if key in data:
            data[key] = sorted(data[key])
    return json.dumps(data, separators=(",", ":"))


def _options(text: str | None) -> TaskOptions:
    if not text:
        return TaskOptions()
    data = json.loads(text)
    if "strategy" in data:
        data["strategy"] = BackoffStrategy(data["strategy"])
    for key in ("non_retryable_error_types", "retryable_error_types"):
        if key in data:
            data[key] = frozenset(data[key])
    return TaskOptions(**data)


def _retention_json(r: RetentionSettings) -> str | None:
    data = {k: v for k, v in asdict(r).items() if v is not None}
    return json.dumps(data) if data else None


def _row(s: QueueSettings) -> dict[str, Any]:
    return {
        "name": s.name,
        "paused": s.paused,
        "pause_note": s.pause_note or None,
        "max_concurrency": s.max_concurrency,
        "rate_limit": s.rate_limit,
        "rate_interval_us": s.rate_interval_us,
        "concurrency_key_limit": s.concurrency_key_limit,
        "max_depth": s.max_depth,
        "options": _options_json(s.options),
        "retention": _retention_json(s.retention),
        "explicit": s.explicit,
        "created_at": s.created_at,
        "updated_at": s.updated_at,
    }


def _settings(r: Any) -> QueueSettings:
    return QueueSettings(
        name=r.name,
        paused=bool(r.paused),
        pause_note=r.pause_note or "",
        max_concurrency=r.max_concurrency,
        rate_limit=r.rate_limit,
        rate_interval_us=r.rate_interval_us,
        concurrency_key_limit=r.concurrency_key_limit,
        max_depth=r.max_depth,
        options=_options(r.options),
        retention=RetentionSettings(**json.loads(r.retention))
        if r.retention
        else RetentionSettings(),
        explicit=bool(r.explicit),
        created_at=r.created_at,
        updated_at=r.updated_at,
    )


def _insert(conn: AsyncConnection) -> Insert:
    return insert(queue, pg=is_pg(conn))


async def ensure_queues(conn: AsyncConnection, names: Iterable[str], now: int) -> None:
    """Create, with no limits, the queues a submission names for the first time."""
    rows = [
        _row(QueueSettings(name, created_at=now, updated_at=now)) for name in sorted(set(names))
    ]
    if rows:
        await conn.execute(_insert(conn).on_conflict_do_nothing(index_elements=["name"]), rows)


async def create_queue(conn: AsyncConnection, settings: QueueSettings) -> bool:
    """Insert a queue; False when the name is taken."""
    result = await conn.execute(
        _insert(conn).on_conflict_do_nothing(index_elements=["name"]), [_row(settings)]
    )
    return bool(result.rowcount)


async def get_queue(
    conn: AsyncConnection, name: str, *, lock: bool = False
) -> QueueSettings | None:
    query = sa.select(queue).where(queue.c.name == name)
    if lock and is_pg(conn):
        query = query.with_for_update()
    row = (await conn.execute(query)).first()
    return None if row is None else _settings(row)


async def list_queues(
    conn: AsyncConnection, *, after: str | None = None, limit: int = 1000
) -> list[QueueSettings]:
    query = sa.select(queue).order_by(queue.c.name).limit(limit)
    if after is not None:
        query = query.where(queue.c.name > after)
    return [_settings(r) for r in await conn.execute(query)]


async def save_queue(conn: AsyncConnection, settings: QueueSettings) -> None:
    row = _row(settings)
    del row["name"], row["created_at"]
    await conn.execute(sa.update(queue).where(queue.c.name == settings.name).values(**row))


async def delete_queue(conn: AsyncConnection, name: str) -> None:
    await conn.execute(sa.delete(queue).where(queue.c.name == name))


async def counts(
    conn: AsyncConnection, names: Sequence[str] | None = None
) -> dict[str, dict[TaskState, int]]:
    """Tasks per state of each queue, from the counters (no scan)."""
    query = sa.select(queue_count.c.queue, queue_count.c.state, queue_count.c.count)
    if names is not None:
        query = query.where(queue_count.c.queue.in_(list(names)))
    out: dict[str, dict[TaskState, int]] = {}
    for name, state, count in await conn.execute(query):
        if count:
            out.setdefault(name, {})[_S(state)] = int(count)
    return out


async def all_counts(conn: AsyncConnection) -> dict[tuple[str, int], int]:
    """Every counter as it stands, zeros included: {(queue, TaskState value): tasks}."""
    query = sa.select(queue_count.c.queue, queue_count.c.state, queue_count.c.count)
    return {(q, int(s)): int(n) for q, s, n in (await conn.execute(query)).all()}


async def waiting(conn: AsyncConnection, name: str) -> int:
    return sum(n for s, n in (await counts(conn, [name])).get(name, {}).items() if s in WAITING)


async def running(conn: AsyncConnection, name: str) -> int:
    return (await counts(conn, [name])).get(name, {}).get(_S.RUNNING, 0)


async def take_tokens(conn: AsyncConnection, name: str, bucket: Bucket, taken: int) -> None:
    await conn.execute(
        sa.update(queue)
        .where(queue.c.name == name)
        .values(rate_tokens=bucket.tokens - taken, rate_updated_at=bucket.at)
    )


async def bucket(conn: AsyncConnection, name: str) -> Bucket | None:
    """The queue's token bucket, locked on PostgreSQL for the rest of the transaction."""
    query = sa.select(queue.c.rate_tokens, queue.c.rate_updated_at).where(queue.c.name == name)
    if is_pg(conn):
        query = query.with_for_update()
    row = (await conn.execute(query)).first()
    if row is None or row.rate_tokens is None or row.rate_updated_at is None:
        return None
    return Bucket(float(row.rate_tokens), int(row.rate_updated_at))


async def lock(conn: AsyncConnection, name: str) -> None:
    """Serialize limited claims on a queue across replicas (a no-op on SQLite's one writer)."""
    if is_pg(conn):
        await conn.execute(sa.select(queue.c.name).where(queue.c.name == name).with_for_update())
