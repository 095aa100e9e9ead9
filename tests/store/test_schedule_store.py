"""The compare-and-set that makes a fire time fire once, against a real database."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa

from broker.core import schedules as core
from broker.core.cron import HOUR
from broker.core.models import NewTask
from broker.core.task_state import TaskState
from broker.store import schedules as store
from broker.store.database import Database, ensure_schema, open_database
from broker.store.schema import schedule_instance, task
from broker.store.tasks import insert_tasks


@pytest.fixture
async def databases(db_url: str, backend: str) -> AsyncIterator[list[Database]]:
    """Two handles on one database, as two replicas would have (one on SQLite)."""
    first = open_database(db_url)
    await ensure_schema(first, auto_migrate=False)
    handles = [first]
    if backend == "postgresql":
        handles.append(open_database(db_url))
    try:
        yield handles
    finally:
        for handle in handles:
            await handle.dispose()


def record(next_fire_at: int) -> core.ScheduleRecord:
    spec = core.Spec(core.TriggerKind.INTERVAL, every_us=HOUR)
    return core.ScheduleRecord(
        id="01SCHEDULE0000000000000000", name="s", description="", spec=spec,
        policies=core.Policies(overlap=core.Overlap.ALLOW_ALL), template=b"", paused=False,
        pause_note=None, revision=1, next_fire_at=next_fire_at, buffered_at=None,
        fired_through=None, last_task_id=None, counts=core.Counts(), created_at=0, updated_at=0,
    )  # fmt: skip


async def fire(db: Database, before: core.ScheduleRecord, now: int) -> bool:
    plan = core.plan_fires(before.spec, before.policies, before.fire_state, now)
    async with db.writer.begin() as conn:
        if not await store.claim_fire(conn, before, plan, now):
            return False
        rows = [
            core.FireRecord(before.id, f.fire_time, False, f.result, now, count=f.count)
            for f in plan.fires
        ]
        await store.record_fires(conn, before.id, rows)
        return True


async def test_of_replicas_planning_the_same_fire_time_exactly_one_records_it(
    databases: list[Database],
) -> None:
    async with databases[0].writer.begin() as conn:
        assert await store.insert_schedule(conn, record(HOUR))
        assert not await store.insert_schedule(conn, record(HOUR))  # the name is taken
    for hour in range(1, 6):
        async with databases[0].reader.connect() as conn:
            current = await store.get_schedule(conn, "s")
        assert current is not None and current.next_fire_at == hour * HOUR
        contenders = [databases[i % len(databases)] for i in range(4)]
        wins = await asyncio.gather(*(fire(db, current, hour * HOUR + 5) for db in contenders))
        assert sum(wins) == 1, wins
    async with databases[0].reader.connect() as conn:
        final = await store.get_schedule(conn, "s")
        history = await store.list_fires(conn, "01SCHEDULE0000000000000000", before=None, limit=10)
    assert final is not None and final.counts.started == 5
    assert [f.fire_time // HOUR for f in history] == [5, 4, 3, 2, 1]


async def test_a_fire_time_recorded_twice_fails_the_transaction(databases: list[Database]) -> None:
    db = databases[0]
    async with db.writer.begin() as conn:
        await store.insert_schedule(conn, record(HOUR))
    row = core.FireRecord("01SCHEDULE0000000000000000", HOUR, False, core.FireResult.STARTED, 0)
    async with db.writer.begin() as conn:
        await store.record_fires(conn, row.schedule_id, [row])
    with pytest.raises(sa.exc.IntegrityError):
        async with db.writer.begin() as conn:
            await store.record_fires(conn, row.schedule_id, [row])


async def test_the_history_keeps_the_newest_records_per_schedule(databases: list[Database]) -> None:
    db = databases[0]
    async with db.writer.begin() as conn:
        await store.insert_schedule(conn, record(HOUR))
        rows = [
            core.FireRecord("01SCHEDULE0000000000000000", t, False, core.FireResult.SKIPPED, 0)
            for t in range(30)
        ]
        await store.record_fires(conn, rows[0].schedule_id, rows)
        assert await store.prune_fires(conn, keep=10) == 20
        kept = await store.list_fires(conn, rows[0].schedule_id, before=None, limit=100)
    assert [f.fire_time for f in kept] == list(range(29, 19, -1))


def new_task(task_id: str) -> NewTask:
    return NewTask(
        id=task_id, type="t", queue="q", priority=0, payload=None, labels=None, run_at=0,
        created_at=0, max_attempts=1, request_id=None,
    )  # fmt: skip


async def running(db: Database) -> tuple[int, int]:
    """(the schedule's running count, rows it keeps in schedule_instance)."""
    async with db.reader.connect() as conn:
        current = await store.get_schedule(conn, "s")
        rows = (
            await conn.execute(sa.select(sa.func.count()).select_from(schedule_instance))
        ).scalar()
    assert current is not None
    return current.running, int(rows or 0)


async def test_running_counts_unfinished_started_tasks_and_forgets_finished_ones(
    databases: list[Database],
) -> None:
    db = databases[0]
    sid = "01SCHEDULE0000000000000000"
    started = [f"01TASK{i:020d}" for i in range(3)]
    async with db.writer.begin() as conn:
        await store.insert_schedule(conn, record(HOUR))
        await insert_tasks(conn, [new_task(t) for t in started])
        rows = [
            core.FireRecord(sid, (i + 1) * HOUR, False, core.FireResult.STARTED, 0, task_id=t)
            for i, t in enumerate(started)
        ] + [core.FireRecord(sid, 9 * HOUR, False, core.FireResult.SKIPPED, 0)]
        await store.record_fires(conn, sid, rows)
    assert await running(db) == (3, 3)
    async with db.writer.begin() as conn:  # one finishes, one is deleted by retention
        await conn.execute(
            sa.update(task)
            .where(task.c.id == started[0])
            .values(state=int(TaskState.SUCCEEDED), finished_at=1)
        )
        await conn.execute(sa.delete(task).where(task.c.id == started[1]))
    assert await running(db) == (1, 3)  # counted right away, the rows pruned at the next fire
    async with db.writer.begin() as conn:
        await store.record_fires(
            conn, sid, [core.FireRecord(sid, 10 * HOUR, True, core.FireResult.SKIPPED, 0)]
        )
    assert await running(db) == (1, 1)
    async with db.writer.begin() as conn:
        assert await store.delete_schedule(conn, "s")
    async with db.reader.connect() as conn:
        left = (
            await conn.execute(sa.select(sa.func.count()).select_from(schedule_instance))
        ).scalar()
    assert left == 0
