"""Reads for statistics: live counters and per-minute rollups (never the task table at large)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.core.stats import MINUTE_US, RUN, WAIT, Group
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
    out = []
    since = now - 61 * MINUTE_US
    recent = await _rollups(conn, since, now + MINUTE_US, queue=None, type_=None)
    _add_unwritten(recent, unwritten, since, now + MINUTE_US, None, None)
    for name in names:
        item = LiveQueue(name, counts.get(name, {}))
        if item.counts.get(_S.PENDING):
            # One index seek per queue (ix_task_pending_age).
            item.oldest_pending_at = await conn.scalar(
                sa.select(sa.func.min(task.c.run_at)).where(
                    sa.text("state = 2"), task.c.queue == name
                )
            )
        for (_, q, _), group in recent.items():
            if q == name:
                for bucket, n in group.per_minute.items():
                    item.per_minute[bucket] = item.per_minute.get(bucket, 0) + n
        out.append(item)
    return out


async def ranged(
    conn: AsyncConnection,
    *,
    start: int,
    end: int,
    queue: str | None,
    type_: str | None,
    unwritten: Unwritten | None = None,
    by_minute: bool = False,
) -> list[Group]:
    """Rollups of [start, end) summed per (queue, type); with `by_minute`, each minute's too."""
    per_bucket = await _rollups(conn, start, end, queue=queue, type_=type_)
    _add_unwritten(per_bucket, unwritten, start, end, queue, type_)
    groups: dict[tuple[str, str], Group] = {}
    for (bucket, q, t), g in per_bucket.items():
        group = groups.setdefault((q, t), Group(q, t))
        group.absorb(g)
        if by_minute:
            group.minutes[bucket] = g
    return [groups[k] for k in sorted(groups)]


async def _rollups(
    conn: AsyncConnection, start: int, end: int, *, queue: str | None, type_: str | None
) -> dict[tuple[int, str, str], Group]:
    first = start - start % MINUTE_US
    where = [task_stat.c.bucket >= first, task_stat.c.bucket < end]
    hist_where = [task_stat_hist.c.bucket >= first, task_stat_hist.c.bucket < end]
    if queue is not None:
        where.append(task_stat.c.queue == queue)
        hist_where.append(task_stat_hist.c.queue == queue)
    if type_ is not None:
        where.append(task_stat.c.type == type_)
        hist_where.append(task_stat_hist.c.type == type_)
    out: dict[tuple[int, str, str], Group] = {}
    for r in await conn.execute(sa.select(task_stat).where(*where)):
        m = r._mapping
        group = out.setdefault((m["bucket"], m["queue"], m["type"]), Group(m["queue"], m["type"]))
        group.add(m["bucket"], {name: int(m[name]) for name in STAT_COUNTERS})
    for r in await conn.execute(sa.select(task_stat_hist).where(*hist_where)):
        group = out.setdefault((r.bucket, r.queue, r.type), Group(r.queue, r.type))
        (group.run if r.kind == RUN else group.wait)[r.slot] += int(r._mapping["count"])
    assert WAIT != RUN
    return out


def _add_unwritten(
    into: dict[tuple[int, str, str], Group],
    unwritten: Unwritten | None,
    start: int,
    end: int,
    queue: str | None,
    type_: str | None,
) -> None:
    """Fold in this replica's committed rollups that still wait to be written."""
    if unwritten is None:
        return
    first = start - start % MINUTE_US

    def wanted(bucket: int, q: str, t: str) -> bool:
        return first <= bucket < end and queue in (None, q) and type_ in (None, t)

    stats, hist = unwritten
    for (bucket, q, t), counters in stats.items():
        if wanted(bucket, q, t):
            into.setdefault((bucket, q, t), Group(q, t)).add(bucket, counters)
    for (bucket, q, t, kind, slot), n in hist.items():
        if wanted(bucket, q, t):
            group = into.setdefault((bucket, q, t), Group(q, t))
            (group.run if kind == RUN else group.wait)[slot] += n
