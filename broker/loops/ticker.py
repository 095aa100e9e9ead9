"""Fires schedules: sleeps until the earliest fire time, plans the due ones, commits the plans.

Any replica may fire; none leads. A plan is computed from a read (outside
the write transaction, so a long catch-up never holds the writer) and
applied by the committer with a compare-and-set: of two replicas that
planned the same fire time, one wins and the other's plan is dropped. The
ticker learns the next fire time from the database after every fire and
from its alarm, which schedule changes on this replica ring, with a periodic
re-read for changes made on other replicas. A crash is the supervisor's to
restart (loops/supervisor.py); the schedules file is reconciled again then.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Protocol

from broker.clock import MICROS, Clock
from broker.core import schedules as core
from broker.core.models import NewTask
from broker.engine.committer import Committer
from broker.engine.schedule_ops import FireItem, FireSchedules, PruneFires
from broker.errors import InvalidArgument, ResourceExhausted
from broker.loops.alarm import Alarm
from broker.store import schedules as store
from broker.store.database import Database

log = logging.getLogger(__name__)

BATCH = 100
PRUNE_EVERY_US = 600 * MICROS


class TaskFactory(Protocol):
    """Turns a schedule's template into the task one fire submits (see api.schedule_convert).

    Raises InvalidArgument when the template no longer passes CreateTask's checks.
    """

    def __call__(
        self, record: core.ScheduleRecord, *, fire_time: int, now: int, manual: bool
    ) -> NewTask: ...


class Ticker:
    def __init__(
        self,
        *,
        db: Database,
        committer: Committer,
        clock: Clock,
        factory: TaskFactory,
        alarm: Alarm,
        poll_interval_s: float,
        reconcile: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._db = db
        self._committer = committer
        self._clock = clock
        self._factory = factory
        self._alarm = alarm  # rung with a changed schedule's next fire time
        self._poll_us = int(poll_interval_s * MICROS)
        self._reconcile = reconcile
        self._buffered = False
        self._pruned_at = 0
        self.fired = 0

    async def run(self) -> None:
        if self._reconcile is not None:
            await self._reconcile()
        alarm = self._alarm
        await self._refresh()
        while True:
            now = self._clock.now_us()
            if alarm.next is not None and alarm.next <= now:
                more = await self._fire(now)
                if not more:
                    await self._refresh()
                continue
            if self._buffered:
                await self._fire(now)
            await self._prune(now)
            rang = await alarm.sleep(now, self._poll_us)
            if not rang and (alarm.next is None or alarm.next > self._clock.now_us()):
                # The periodic re-read (changes on other replicas). A wait that
                # ended because the next fire time came goes straight to firing.
                await self._refresh()

    async def _fire(self, now: int) -> bool:
        """Plan and commit every due schedule (a batch); True when more may be due."""
        async with self._db.reader.connect() as conn:
            due = await store.due_schedules(conn, now=now, limit=BATCH)
        items = [item for r in due if (item := self._item(r, now)) is not None]
        if items:
            fired = await self._committer.submit(FireSchedules(items))
            self.fired += len(fired.task_ids)
            if fired.lost:
                log.debug("%d schedule plans lost their compare-and-set", fired.lost)
        return len(due) == BATCH

    def _item(self, record: core.ScheduleRecord, now: int) -> FireItem | None:
        plan = core.plan_fires(record.spec, record.policies, record.fire_state, now)
        if not plan.fires and plan.next_fire_at == record.next_fire_at:
            return None
        return plan_item(record, plan, self._factory, now)

    async def _refresh(self) -> None:
        self._alarm.reading()
        async with self._db.reader.connect() as conn:
            found = await store.next_due(conn)
        self._buffered = found.buffered
        self._alarm.read(found.at)

    async def _prune(self, now: int) -> None:
        if now - self._pruned_at >= PRUNE_EVERY_US:
            self._pruned_at = now
            deleted = await self._committer.submit(PruneFires())
            if deleted:
                log.info("pruned %d old schedule fire records", deleted)


def plan_item(
    record: core.ScheduleRecord, plan: core.FirePlan, factory: TaskFactory, now: int
) -> FireItem:
    """The records and tasks a plan's fires make."""
    item = FireItem(record, plan, records=[])
    for fire in plan.fires:
        released = fire.result is core.FireResult.STARTED and fire.fire_time == record.buffered_at
        out = _fire_record(record, fire, now)
        if fire.result is core.FireResult.STARTED:
            try:
                task = factory(record, fire_time=fire.fire_time, now=now, manual=False)
            except (InvalidArgument, ResourceExhausted) as error:  # a bad template, a rate
                out = _failed(out, error.message)
            else:
                item.tasks.append(task)
                out = replace(out, task_id=task.id, run_at=task.run_at)
        (item.released if released else item.records).append(out)
    return item


def _fire_record(record: core.ScheduleRecord, fire: core.Fire, now: int) -> core.FireRecord:
    message = None
    if fire.result is core.FireResult.SKIPPED:
        cap = record.policies.max_instances
        message = f"{fire.unfinished} earlier run(s) unfinished; max_instances is {cap}"
    return core.FireRecord(
        schedule_id=record.id,
        fire_time=fire.fire_time,
        manual=False,
        result=fire.result,
        recorded_at=now,
        count=fire.count,
        last_missed_at=fire.last_missed,
        message=message,
    )


def _failed(record: core.FireRecord, message: str) -> core.FireRecord:
    return replace(record, result=core.FireResult.FAILED, message=message[:1000])
