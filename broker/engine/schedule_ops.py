"""The committer's ops for schedules: fire, run now, save, delete, prune the history.

Fires are planned outside the transaction (by the ticker, from a read) and
applied here with a compare-and-set on everything the plan was computed
from; the fire records and the tasks go into the same transaction, through
`CreateTasks`, so a fired task gets exactly the hand-off, accounting and
wake-ups of a submitted one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum

from sqlalchemy.ext.asyncio import AsyncConnection

from broker.core import schedules as core
from broker.core.models import NewTask
from broker.engine.metrics import fires_committed
from broker.engine.ops import CreateTasks, Env, Op
from broker.store import schedules as store

Hint = Callable[[int | None], None]


def _no_hint(at: int | None) -> None:
    return None


@dataclass
class FireItem:
    """One schedule's plan, ready to apply: its records and the tasks its fires submit."""

    before: core.ScheduleRecord
    plan: core.FirePlan
    records: list[core.FireRecord]
    released: list[core.FireRecord] = field(default_factory=list)  # BUFFERED rows now settled
    tasks: list[NewTask] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Fired:
    won: int  # schedules whose plan was applied
    lost: int  # plans that lost their compare-and-set (another replica, a change)
    task_ids: tuple[str, ...]


async def _insert_tasks(
    conn: AsyncConnection, new: list[NewTask], env: Env, now: int
) -> tuple[CreateTasks | None, list[str], set[str]]:
    """Insert through CreateTasks; returns the op (for after_commit), its ids, and refusals."""
    if not new:
        return None, [], set()
    inner = CreateTasks(new)
    (ids,) = await CreateTasks.apply_all(conn, [inner], env, now)
    refused = {t.id for t, got in zip(new, ids, strict=True) if not got}
    return inner, ids, refused


def _settle(record: core.FireRecord, refused: set[str]) -> core.FireRecord:
    if record.task_id is None or record.task_id not in refused:
        return record
    return replace(
        record,
        result=core.FireResult.FAILED,
        task_id=None,
        run_at=None,
        message="the task's queue is at its max_depth",
    )


def _journal_fires(
    env: Env, name: str, records: Sequence[core.FireRecord], tasks: Sequence[NewTask]
) -> None:
    by_id = {t.id: t for t in tasks}
    some = tasks[0] if tasks else None
    for r in records:
        task = by_id.get(r.task_id or "", some)
        env.journal.fire(name, r, task.queue if task else "", task.type if task else "")


def _last_started(records: Sequence[core.FireRecord]) -> str | None:
    started = [r.task_id for r in records if r.result is core.FireResult.STARTED and r.task_id]
    return started[-1] if started else None


class FireSchedules(Op[Fired]):
    order = 12

    def __init__(self, items: Sequence[FireItem]) -> None:
        super().__init__()
        self.items = items
        self._inner: CreateTasks | None = None
        self._ids: list[str] = []
        self._settled: list[tuple[str, list[core.FireRecord]]] = []  # for telemetry

    @classmethod
    async def apply_all(
        cls, conn: AsyncConnection, ops: Sequence[FireSchedules], env: Env, now: int
    ) -> list[Fired]:
        return [await op._apply(conn, env, now) for op in ops]

    async def _apply(self, conn: AsyncConnection, env: Env, now: int) -> Fired:
        won = [i for i in self.items if await store.claim_fire(conn, i.before, i.plan, now)]
        self._settled = []  # a retried transaction applies the op again
        new = [t for i in won for t in i.tasks]
        self._inner, self._ids, refused = await _insert_tasks(conn, new, env, now)
        for item in won:
            records = [_settle(r, refused) for r in item.records]
            released = [_settle(r, refused) for r in item.released]
            await store.record_fires(
                conn,
                item.before.id,
                records,
                released=released,
                last_task_id=_last_started([*released, *records]),
            )
            self._settled.append((item.before.name, [*released, *records]))
            _journal_fires(env, item.before.name, [*released, *records], item.tasks)
        started = tuple(i for i in self._ids if i)
        return Fired(len(won), len(self.items) - len(won), started)

    def after_commit(self, result: Fired, env: Env) -> None:
        if self._inner is not None:
            self._inner.after_commit(self._ids, env)
        for name, records in self._settled:
            fires_committed(env.metrics, name, records)


@dataclass(frozen=True, slots=True)
class ManualRun:
    task_id: str | None  # None: the schedule does not exist
    refused: bool = False  # the queue was at its max_depth


class RunNow(Op[ManualRun]):
    """RunSchedule: one task now, recorded as a manual fire; the timetable is untouched."""

    order = 13

    def __init__(self, name: str, make: Callable[[core.ScheduleRecord, int], NewTask]) -> None:
        super().__init__()
        self.name = name
        self.make = make  # may raise InvalidArgument: the op then fails alone
        self._inner: CreateTasks | None = None
        self._ids: list[str] = []
        self._committed: tuple[str, core.FireRecord] | None = None

    @classmethod
    async def apply_all(
        cls, conn: AsyncConnection, ops: Sequence[RunNow], env: Env, now: int
    ) -> list[ManualRun]:
        out = []
        for offset, op in enumerate(ops):
            out.append(await op._apply(conn, env, now + offset))
        return out

    async def _apply(self, conn: AsyncConnection, env: Env, at: int) -> ManualRun:
        record = await store.get_schedule(conn, self.name)
        if record is None:
            return ManualRun(None)
        new = self.make(record, at)
        self._inner, self._ids, refused = await _insert_tasks(conn, [new], env, at)
        if refused:
            return ManualRun(None, refused=True)
        fire = core.FireRecord(
            record.id,
            at,
            True,
            core.FireResult.STARTED,
            recorded_at=at,
            task_id=new.id,
            run_at=new.run_at,
        )
        await store.record_fires(conn, record.id, [fire], last_task_id=new.id)
        self._committed = (record.name, fire)
        env.journal.fire(record.name, fire, new.queue, new.type)
        return ManualRun(new.id)

    def after_commit(self, result: ManualRun, env: Env) -> None:
        if self._inner is not None:
            self._inner.after_commit(self._ids, env)
        if self._committed is not None:
            fires_committed(env.metrics, self._committed[0], [self._committed[1]])


class Inserted(Enum):
    INSERTED = 1
    NAME_TAKEN = 2
    OVER_CAP = 3  # its owner has max_owned schedules already


class InsertSchedule(Op[Inserted]):
    """Create a schedule, unless the name is taken or its owner has `max_owned` (0: no cap).

    The count and the insert share the committer's transaction, so concurrent
    creations cannot pass the cap together.
    """

    order = 14

    def __init__(
        self, record: core.ScheduleRecord, hint: Hint = _no_hint, *, max_owned: int = 0
    ) -> None:
        super().__init__()
        self.record = record
        self.hint = hint
        self.max_owned = max_owned

    @classmethod
    async def apply_all(
        cls, conn: AsyncConnection, ops: Sequence[InsertSchedule], env: Env, now: int
    ) -> list[Inserted]:
        return [await op._apply(conn) for op in ops]

    async def _apply(self, conn: AsyncConnection) -> Inserted:
        if self.max_owned and await store.count_owned(conn, self.record.owner) >= self.max_owned:
            return Inserted.OVER_CAP
        if await store.insert_schedule(conn, self.record):
            return Inserted.INSERTED
        return Inserted.NAME_TAKEN

    def after_commit(self, result: Inserted, env: Env) -> None:
        if result is Inserted.INSERTED:
            self.hint(self.record.next_fire_at)


class ReplaceSchedule(Op[bool]):
    """Write changed settings unless the schedule fired or changed since it was read."""

    order = 15

    def __init__(
        self, before: core.ScheduleRecord, after: core.ScheduleRecord, hint: Hint = _no_hint
    ) -> None:
        super().__init__()
        self.before = before
        self.after = after
        self.hint = hint

    @classmethod
    async def apply_all(
        cls, conn: AsyncConnection, ops: Sequence[ReplaceSchedule], env: Env, now: int
    ) -> list[bool]:
        return [await store.replace_settings(conn, op.before, op.after) for op in ops]

    def after_commit(self, result: bool, env: Env) -> None:
        if result and not self.after.paused:
            self.hint(self.after.next_fire_at)


class DeleteSchedule(Op[bool]):
    order = 16

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    @classmethod
    async def apply_all(
        cls, conn: AsyncConnection, ops: Sequence[DeleteSchedule], env: Env, now: int
    ) -> list[bool]:
        return [await store.delete_schedule(conn, op.name) for op in ops]


class PruneFires(Op[int]):
    """Keep the newest records of each schedule's history (task retention never touches it)."""

    order = 92

    @classmethod
    async def apply_all(
        cls, conn: AsyncConnection, ops: Sequence[PruneFires], env: Env, now: int
    ) -> list[int]:
        return [await store.prune_fires(conn)] + [0 for _ in ops[1:]]


__all__ = [
    "DeleteSchedule",
    "FireItem",
    "FireSchedules",
    "Fired",
    "InsertSchedule",
    "Inserted",
    "ManualRun",
    "PruneFires",
    "ReplaceSchedule",
    "RunNow",
]
