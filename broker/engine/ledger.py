"""Bookkeeping that rides in every transaction: state counters, statistics rollups, metrics.

Ops report what they did — tasks moved between states, submitted, started,
ended — and the committer writes the sums at the end of the same transaction:
one upsert per (queue, state) counter and per (minute, queue, type) rollup,
however many tasks the commit moved. Statistics therefore never scan the task
table and stay exact across restarts. After the commit the same events go to
the metrics exporter.
"""

from __future__ import annotations

from collections import Counter, defaultdict

from sqlalchemy.ext.asyncio import AsyncConnection

from broker.core.stats import RUN, WAIT, minute, slot
from broker.core.task_state import TaskState
from broker.engine.metrics import EventName, MetricEvent
from broker.store import counters
from broker.store.schema import STAT_COUNTERS

_FINAL: dict[TaskState, EventName] = {
    TaskState.SUCCEEDED: "succeeded",
    TaskState.FAILED: "failed",
    TaskState.DEAD: "failed",
    TaskState.CANCELLED: "cancelled",
    TaskState.EXPIRED: "expired",
}


class Ledger:
    def __init__(self) -> None:
        self._counts: Counter[tuple[str, int]] = Counter()
        self._stats: defaultdict[tuple[int, str, str], Counter[str]] = defaultdict(Counter)
        self._hist: Counter[tuple[int, str, str, int, int]] = Counter()
        self._events: list[MetricEvent] = []
        self._wrote_stats = False
        # Rollups of committed transactions, written with a later commit.
        self._carry_stats: defaultdict[tuple[int, str, str], Counter[str]] = defaultdict(Counter)
        self._carry_hist: Counter[tuple[int, str, str, int, int]] = Counter()

    # --- What ops report ---------------------------------------------------------------------

    def moved(
        self, queue: str, source: TaskState | None, target: TaskState | None, n: int = 1
    ) -> None:
        """`n` tasks of `queue` left `source` (None: inserted) for `target` (None: deleted)."""
        if source is not None:
            self._counts[(queue, int(source))] -= n
        if target is not None:
            self._counts[(queue, int(target))] += n

    def submitted(self, queue: str, type_: str, now: int, n: int = 1) -> None:
        self._stats[(minute(now), queue, type_)]["submitted"] += n
        self._events.append(MetricEvent("submitted", queue, type_, n))

    def started(self, queue: str, type_: str, now: int, wait_us: int) -> None:
        key = (minute(now), queue, type_)
        stats = self._stats[key]
        stats["started"] += 1
        stats["wait_count"] += 1
        stats["wait_sum_us"] += max(wait_us, 0)
        self._hist[(*key, WAIT, slot(wait_us))] += 1
        self._events.append(MetricEvent("started", queue, type_, seconds=max(wait_us, 0) / 1e6))

    def ended(
        self, queue: str, type_: str, now: int, state: TaskState, run_us: int | None, lost: bool
    ) -> None:
        """An attempt ended and its task moved to `state` (final, or back to wait)."""
        key = (minute(now), queue, type_)
        stats = self._stats[key]
        name: EventName
        if lost:
            name = "lost"
        elif state in _FINAL:
            name = _FINAL[state]
        else:
            name = "retried"
        stats[name] += 1
        seconds = None
        if run_us is not None and not lost:
            stats["run_count"] += 1
            stats["run_sum_us"] += max(run_us, 0)
            self._hist[(*key, RUN, slot(run_us))] += 1
            seconds = max(run_us, 0) / 1e6
        self._events.append(MetricEvent(name, queue, type_, seconds=seconds))

    def finished_waiting(self, queue: str, type_: str, now: int, state: TaskState) -> None:
        """A task ended without running (cancelled or expired while waiting)."""
        name = _FINAL.get(state)
        if name is not None:
            self._stats[(minute(now), queue, type_)][name] += 1
            self._events.append(MetricEvent(name, queue, type_))

    def pending(self, queue: str, state: TaskState) -> int:
        """This transaction's change to a counter, not yet written."""
        return self._counts.get((queue, int(state)), 0)

    # --- Writing it down ---------------------------------------------------------------------

    async def flush(self, conn: AsyncConnection, *, with_stats: bool) -> None:
        """Write this transaction's counters; with_stats, also every rollup held so far.

        Counters must be exact at every commit (flow control and live figures
        read them). Rollups are history: they ride along with a commit about
        once a second, so that the hot path pays one upsert, not three. A crash
        can lose at most that second of history; a clean stop writes it all.
        """
        await counters.add_counts(conn, [(q, s, n) for (q, s), n in self._counts.items() if n])
        if not with_stats:
            return
        all_stats = _add(self._carry_stats, self._stats)
        all_hist = self._carry_hist + self._hist
        await counters.add_rollups(
            conn,
            [(b, q, t, *(n[c] for c in STAT_COUNTERS)) for (b, q, t), n in all_stats.items()],
            [(*key, n) for key, n in all_hist.items()],
        )
        self._wrote_stats = True

    def unwritten(
        self,
    ) -> tuple[dict[tuple[int, str, str], Counter[str]], Counter[tuple[int, str, str, int, int]]]:
        """Committed rollups not yet in the database, for readers who want them now."""
        return {k: Counter(v) for k, v in self._carry_stats.items()}, Counter(self._carry_hist)

    @property
    def holding(self) -> bool:
        """Committed rollups not yet written."""
        return bool(self._carry_stats or self._carry_hist)

    def commit(self) -> list[MetricEvent]:
        """The transaction committed: settle the rollups, hand over the metric events."""
        if self._wrote_stats:
            self._carry_stats, self._carry_hist = defaultdict(Counter), Counter()
        else:
            self._carry_stats = _add(self._carry_stats, self._stats)
            self._carry_hist += self._hist
        events = self._events
        self._clear_transaction()
        return events

    def discard(self) -> None:
        """The transaction failed: forget what it added; earlier rollups wait for the next."""
        self._clear_transaction()

    def _clear_transaction(self) -> None:
        self._counts = Counter()
        self._stats = defaultdict(Counter)
        self._hist = Counter()
        self._events = []
        self._wrote_stats = False


def _add(
    a: defaultdict[tuple[int, str, str], Counter[str]],
    b: defaultdict[tuple[int, str, str], Counter[str]],
) -> defaultdict[tuple[int, str, str], Counter[str]]:
    out: defaultdict[tuple[int, str, str], Counter[str]] = defaultdict(Counter)
    for source in (a, b):
        for key, counter in source.items():
            out[key].update(counter)
    return out
