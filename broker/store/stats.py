"""Reads for statistics: live counters and per-minute rollups (never the task table at large)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.core.stats import FINISHED, MINUTE_US, RUN, Group
from broker.core.task_state import TaskState
from broker.store import queues
from broker.store.schema import STAT_COUNTERS, task, task_stat, task_stat_hist

_S = TaskState


@dataclass
class LiveQueue:
    name: str
    counts: dict[TaskState, int] = field(default_factory=dict)
    oldest_pending_at: int | None = None
    per_minute: dict[int, int] = field(default_factory=dict)


Unwritten = tuple[
    Mapping[tuple[int, str, str], Mapping[str, int]], Mapping[tuple[int, str, str, int, int], int]
]


async def live(
    conn: AsyncConnection, names: Sequence[str], *, now: int, unwritten: Unwritten | None = None
) -> list[LiveQueue]:
    counts = await queues.counts(conn, names)
    since = now - 61 * MINUTE_US
    finished = await _finished_per_minute(conn, since, now + MINUTE_US, unwritten)
    out = []
    for name in names:
        item = LiveQueue(name, counts.get(name, {}), per_minute=finished.get(name, {}))
        if item.counts.get(_S.PENDING):
            # One index seek per queue (ix_task_pending_age).
            item.oldest_pending_at = await conn.scalar(
                sa.select(sa.func.min(task.c.run_at)).where(
                    sa.text("state = 2"), task.c.queue == name
                )
            )
        out.append(item)
    return out


async def _finished_per_minute(
    conn: AsyncConnection, start: int, end: int, unwritten: Unwritten | None
) -> dict[str, dict[int, int]]:
    """Tasks finished per queue and minute, summed by the database (not row by row here)."""
    first = start - start % MINUTE_US
    done = sum((task_stat.c[name] for name in FINISHED), sa.literal(0))
    query = (
        sa.select(task_stat.c.bucket, task_stat.c.queue, sa.func.sum(done).label("n"))
        .where(task_stat.c.bucket >= first, task_stat.c.bucket < end)
        .group_by(task_stat.c.bucket, task_stat.c.queue)
    )
    out: dict[str, dict[int, int]] = {}
    for r in await conn.execute(query):
        out.setdefault(r.queue, {})[r.bucket] = int(r.n)
    for (bucket, q, _), counters in (unwritten[0] if unwritten else {}).items():
        if first <= bucket < end:
            per = out.setdefault(q, {})
            per[bucket] = per.get(bucket, 0) + sum(counters.get(name, 0) for name in FINISHED)
    return out


async def ranged(
    conn: AsyncConnection,
    *,
    start: int,
    end: int,
    queue: str | None,
    type_: str | None,
    unwritten: Unwritten | None = None,
) -> tuple[list[Group], dict[int, Group]]:
    """Rollups of [start, end) summed per (queue, type), and per minute over all of them."""
    groups: dict[tuple[str, str], Group] = {}
    minutes: dict[int, Group] = {}

    def into(bucket: int, q: str, t: str) -> tuple[Group, Group]:
        group = groups.get((q, t))
        if group is None:
            group = groups[(q, t)] = Group(q, t)
        minute = minutes.get(bucket)
        if minute is None:
            minute = minutes[bucket] = Group()
        return group, minute

    first = start - start % MINUTE_US
    for bucket, q, t, counters in await _stat_rows(conn, first, end, queue, type_):
        group, minute = into(bucket, q, t)
        group.add(bucket, counters)
        minute.add(bucket, counters)
    for bucket, q, t, kind, slot, n in await _hist_rows(conn, first, end, queue, type_):
        group, minute = into(bucket, q, t)
        (group.run if kind == RUN else group.wait)[slot] += n
        (minute.run if kind == RUN else minute.wait)[slot] += n
    if unwritten is not None:
        stats, hist = unwritten
        wanted = _wanted(first, end, queue, type_)
        for (bucket, q, t), pending in stats.items():
            if wanted(bucket, q, t):
                group, minute = into(bucket, q, t)
                group.add(bucket, pending)
                minute.add(bucket, pending)
        for (bucket, q, t, kind, slot), n in hist.items():
            if wanted(bucket, q, t):
                group, minute = into(bucket, q, t)
                (group.run if kind == RUN else group.wait)[slot] += n
                (minute.run if kind == RUN else minute.wait)[slot] += n
    return [groups[k] for k in sorted(groups)], minutes


def _wanted(
    first: int, end: int, queue: str | None, type_: str | None
) -> Callable[[int, str, str], bool]:
    def wanted(bucket: int, q: str, t: str) -> bool:
        return first <= bucket < end and queue in (None, q) and type_ in (None, t)

    return wanted


async def _stat_rows(
    conn: AsyncConnection, first: int, end: int, queue: str | None, type_: str | None
) -> list[tuple[int, str, str, dict[str, int]]]:
    where = [task_stat.c.bucket >= first, task_stat.c.bucket < end]
    if queue is not None:
        where.append(task_stat.c.queue == queue)
    if type_ is not None:
        where.append(task_stat.c.type == type_)
    rows = await conn.execute(sa.select(task_stat).where(*where))
    return [
        (r[0], r[1], r[2], dict(zip(STAT_COUNTERS, map(int, r[3:]), strict=True))) for r in rows
    ]


async def _hist_rows(
    conn: AsyncConnection, first: int, end: int, queue: str | None, type_: str | None
) -> list[tuple[int, str, str, int, int, int]]:
    h = task_stat_hist.c
    where = [h.bucket >= first, h.bucket < end]
    if queue is not None:
        where.append(h.queue == queue)
    if type_ is not None:
        where.append(h.type == type_)
    query = sa.select(h.bucket, h.queue, h.type, h.kind, h.slot, h["count"]).where(*where)
    return [(r[0], r[1], r[2], r[3], r[4], int(r[5])) for r in await conn.execute(query)]
