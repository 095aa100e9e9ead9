"""The ledger's writes: state counters and statistics rollups, added to in place.

Every commit adds its deltas with one upsert per (queue, state) counter and,
about once a second, per (minute, queue, type) rollup and histogram slot
(see `engine/ledger.py`). The statements are compiled once per dialect;
building them costs more than running them.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncConnection

from broker.store.dialect import insert, is_pg
from broker.store.prepared import BatchWrite, Row
from broker.store.schema import STAT_COUNTERS, queue_count, task_stat, task_stat_hist


async def add_counts(conn: AsyncConnection, rows: Sequence[Row]) -> None:
    """Add to the live counters: rows of (queue, state, delta)."""
    await _upserts(is_pg(conn))[0].run(conn, rows)


async def add_rollups(
    conn: AsyncConnection, stats: Sequence[Row], histogram: Sequence[Row]
) -> None:
    """Add to the rollups: rows of (bucket, queue, type, *STAT_COUNTERS) and of
    (bucket, queue, type, kind, slot, count)."""
    _, add_stats, add_hist = _upserts(is_pg(conn))
    await add_stats.run(conn, stats, defer=False)
    await add_hist.run(conn, histogram, defer=False)


@functools.cache
def _upserts(pg: bool) -> tuple[BatchWrite, BatchWrite, BatchWrite]:
    counts = insert(queue_count, pg=pg)
    counts = counts.on_conflict_do_update(
        index_elements=["queue", "state"],
        set_={"count": queue_count.c.count + counts.excluded["count"]},
    )
    stats = insert(task_stat, pg=pg)
    stats = stats.on_conflict_do_update(
        index_elements=["bucket", "queue", "type"],
        set_={c: task_stat.c[c] + stats.excluded[c] for c in STAT_COUNTERS},
    )
    hist = insert(task_stat_hist, pg=pg)
    hist = hist.on_conflict_do_update(
        index_elements=["bucket", "queue", "type", "kind", "slot"],
        set_={"count": task_stat_hist.c["count"] + hist.excluded["count"]},
    )
    return (
        BatchWrite(counts, ("queue", "state", "count")),
        BatchWrite(stats, ("bucket", "queue", "type", *STAT_COUNTERS)),
        BatchWrite(hist, ("bucket", "queue", "type", "kind", "slot", "count")),
    )
