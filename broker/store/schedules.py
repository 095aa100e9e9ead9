"""Named queries for schedules, their fire records and their unfinished runs (both dialects).

Writes run inside the committer's transaction; reads on the reader pool. A
fire is claimed with a compare-and-set on everything its plan was computed
from (revision, next fire time, buffered fire, last task), so of two
replicas that planned the same fire time exactly one records it. The count
of unfinished runs a plan used can only have gone down since it was read
(runs are started only by fires and manual runs, both of which move the
compared columns), so a plan never starts more than `max_instances`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.core import schedules as core
from broker.core.task_state import TERMINAL
from broker.store.dialect import insert, is_pg
from broker.store.schema import schedule, schedule_fire, schedule_instance, task

_TERMINAL = [int(s) for s in TERMINAL]
HISTORY_KEEP = 1000


def _running() -> sa.ScalarSelect[Any]:
    """How many of the schedule's runs have a task that exists and has not finished."""
    return (
        sa.select(sa.func.count())
        .select_from(schedule_instance.join(task, task.c.id == schedule_instance.c.task_id))
        .where(schedule_instance.c.schedule_id == schedule.c.id, task.c.state.not_in(_TERMINAL))
        .scalar_subquery()
    )


def _select() -> sa.Select[Any]:
    return sa.select(schedule, _running().label("running"))


def _record(row: sa.Row[Any]) -> core.ScheduleRecord:
    m = row._mapping
    return core.ScheduleRecord(
        id=m["id"],
        name=m["name"],
        description=m["description"],
        spec=core.spec_from_json(m["spec"]),
        policies=core.policies_from_json(m["policies"]),
        template=bytes(m["template"]),
        paused=bool(m["paused"]),
        pause_note=m["pause_note"],
        revision=m["revision"],
        next_fire_at=m["next_fire_at"],
        buffered_at=m["buffered_at"],
        fired_through=m["fired_through"],
        last_task_id=m["last_task_id"],
        counts=core.Counts(
            m["started_count"], m["skipped_count"], m["missed_count"], m["failed_count"]
        ),
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        running=int(m["running"] or 0),
        owner=m["owner"],
    )


def _values(r: core.ScheduleRecord) -> dict[str, Any]:
    return {
        "id": r.id,
        "name": r.name,
        "description": r.description,
        "spec": core.spec_to_json(r.spec),
        "policies": core.policies_to_json(r.policies),
        "template": r.template,
        "paused": r.paused,
        "pause_note": r.pause_note,
        "revision": r.revision,
        "next_fire_at": r.next_fire_at,
        "buffered_at": r.buffered_at,
        "fired_through": r.fired_through,
        "last_task_id": r.last_task_id,
        "started_count": r.counts.started,
        "skipped_count": r.counts.skipped,
        "missed_count": r.counts.missed,
        "failed_count": r.counts.failed,
        "created_at": r.created_at,
        "updated_at": r.updated_at,
        "owner": r.owner,
    }


# --- Settings -------------------------------------------------------------------------------


async def insert_schedule(conn: AsyncConnection, record: core.ScheduleRecord) -> bool:
    """Insert unless the name is taken (by anyone, on any replica); True if inserted."""
    result = await conn.execute(
        insert(schedule, pg=is_pg(conn))
        .values(**_values(record))
        .on_conflict_do_nothing(index_elements=["name"])
    )
    return bool(result.rowcount)


async def count_owned(conn: AsyncConnection, owner: str | None) -> int:
    """Schedules of this owner (None: those without one)."""
    owned = schedule.c.owner.is_(None) if owner is None else schedule.c.owner == owner
    return int((await conn.execute(sa.select(sa.func.count()).where(owned))).scalar() or 0)


async def get_schedule(conn: AsyncConnection, name: str) -> core.ScheduleRecord | None:
    row = (await conn.execute(_select().where(schedule.c.name == name))).first()
    return None if row is None else _record(row)


async def list_schedules(
    conn: AsyncConnection, *, after: str | None, limit: int
) -> list[core.ScheduleRecord]:
    query = _select().order_by(schedule.c.name).limit(limit)
    if after is not None:
        query = query.where(schedule.c.name > after)
    return [_record(r) for r in await conn.execute(query)]


async def replace_settings(
    conn: AsyncConnection, before: core.ScheduleRecord, after: core.ScheduleRecord
) -> bool:
    """Write a changed schedule if nobody changed or fired it since `before` was read."""
    result = await conn.execute(
        sa.update(schedule)
        .where(
            schedule.c.id == before.id,
            schedule.c.revision == before.revision,
            schedule.c.next_fire_at.is_not_distinct_from(before.next_fire_at),
            schedule.c.buffered_at.is_not_distinct_from(before.buffered_at),
        )
        .values(**{k: v for k, v in _values(after).items() if not k.endswith("_count")})
    )
    return bool(result.rowcount)


async def delete_schedule(conn: AsyncConnection, name: str) -> bool:
    found = (await conn.execute(sa.select(schedule.c.id).where(schedule.c.name == name))).scalar()
    if found is None:
        return False
    # The schedule row first: a fire locks it first too (its compare-and-set).
    await conn.execute(sa.delete(schedule).where(schedule.c.id == found))
    await conn.execute(sa.delete(schedule_fire).where(schedule_fire.c.schedule_id == found))
    await conn.execute(sa.delete(schedule_instance).where(schedule_instance.c.schedule_id == found))
    return True


# --- Firing ---------------------------------------------------------------------------------


async def due_schedules(
    conn: AsyncConnection, *, now: int, limit: int
) -> list[core.ScheduleRecord]:
    """Active schedules with a fire time due, or a buffered fire waiting."""
    query = (
        _select()
        .where(
            sa.not_(schedule.c.paused),
            sa.or_(schedule.c.next_fire_at <= now, schedule.c.buffered_at.is_not(None)),
        )
        .order_by(schedule.c.next_fire_at)
        .limit(limit)
    )
    return [_record(r) for r in await conn.execute(query)]


@dataclass(frozen=True, slots=True)
class NextDue:
    at: int | None  # the earliest pending fire time of an active schedule
    buffered: bool  # some schedule waits for a previous run to finish


async def next_due(conn: AsyncConnection) -> NextDue:
    active = sa.not_(schedule.c.paused)
    at = (
        await conn.execute(sa.select(sa.func.min(schedule.c.next_fire_at)).where(active))
    ).scalar()
    buffered = (
        await conn.execute(
            sa.select(schedule.c.id).where(active, schedule.c.buffered_at.is_not(None)).limit(1)
        )
    ).first()
    return NextDue(at, buffered is not None)


async def claim_fire(
    conn: AsyncConnection, before: core.ScheduleRecord, plan: core.FirePlan, now: int
) -> bool:
    """Advance the schedule past a plan's fire times, unless another fire or change won."""
    result = await conn.execute(
        sa.update(schedule)
        .where(
            schedule.c.id == before.id,
            schedule.c.revision == before.revision,
            sa.not_(schedule.c.paused),
            schedule.c.next_fire_at.is_not_distinct_from(before.next_fire_at),
            schedule.c.buffered_at.is_not_distinct_from(before.buffered_at),
            schedule.c.last_task_id.is_not_distinct_from(before.last_task_id),
        )
        .values(
            next_fire_at=plan.next_fire_at,
            buffered_at=plan.buffered_at,
            fired_through=sa.func.coalesce(plan.fired_through, schedule.c.fired_through),
        )
    )
    return bool(result.rowcount)


async def record_fires(
    conn: AsyncConnection,
    schedule_id: str,
    fires: Sequence[core.FireRecord],
    *,
    released: Sequence[core.FireRecord] = (),
    last_task_id: str | None = None,
) -> None:
    """Insert fire records, settle `released` BUFFERED ones, count them, track their runs.

    A duplicate (schedule, fire time) violates the primary key and fails the
    whole transaction: the backstop should a compare-and-set ever be wrong.
    """
    if fires:
        await conn.execute(schedule_fire.insert(), [_fire_row(f) for f in fires])
    for f in released:
        await conn.execute(
            sa.update(schedule_fire)
            .where(
                schedule_fire.c.schedule_id == f.schedule_id,
                schedule_fire.c.fire_time == f.fire_time,
                schedule_fire.c.manual == sa.false(),
            )
            .values(result=int(f.result), task_id=f.task_id, message=f.message, run_at=f.run_at)
        )
    counts = _counts([*fires, *released])
    values: dict[str, Any] = {
        f"{name}_count": schedule.c[f"{name}_count"] + n
        for name, n in (
            ("started", counts.started),
            ("skipped", counts.skipped),
            ("missed", counts.missed),
            ("failed", counts.failed),
        )
        if n
    }
    if last_task_id is not None:
        values["last_task_id"] = last_task_id
    if values:
        await conn.execute(sa.update(schedule).where(schedule.c.id == schedule_id).values(values))
    # After the schedule row is locked (by the fire's compare-and-set, or by the
    # update above for a manual run), so that two writers never lock these rows
    # in opposite orders.
    started = [
        f.task_id for f in (*fires, *released) if f.result is core.FireResult.STARTED and f.task_id
    ]
    await _track_runs(conn, schedule_id, started)


async def _track_runs(conn: AsyncConnection, schedule_id: str, started: list[str]) -> None:
    """Forget the schedule's runs that finished, and remember the ones just started."""
    unfinished = sa.exists().where(
        task.c.id == schedule_instance.c.task_id, task.c.state.not_in(_TERMINAL)
    )
    await conn.execute(
        sa.delete(schedule_instance).where(
            schedule_instance.c.schedule_id == schedule_id, sa.not_(unfinished)
        )
    )
    if started:
        await conn.execute(
            schedule_instance.insert(),
            [{"schedule_id": schedule_id, "task_id": task_id} for task_id in started],
        )


def _fire_row(f: core.FireRecord) -> dict[str, Any]:
    return {
        "schedule_id": f.schedule_id,
        "fire_time": f.fire_time,
        "manual": f.manual,
        "result": int(f.result),
        "task_id": f.task_id,
        "count": f.count,
        "last_missed_at": f.last_missed_at,
        "message": f.message,
        "recorded_at": f.recorded_at,
        "run_at": f.run_at,
    }


def _counts(fires: Sequence[core.FireRecord]) -> core.Counts:
    total = core.Counts()
    for f in fires:
        total = total + core.Counts(
            started=f.count if f.result is core.FireResult.STARTED else 0,
            skipped=f.count if f.result is core.FireResult.SKIPPED else 0,
            missed=f.count if f.result is core.FireResult.MISSED else 0,
            failed=f.count if f.result is core.FireResult.FAILED else 0,
        )
    return total


# --- History --------------------------------------------------------------------------------


def _fire_select() -> sa.Select[Any]:
    return sa.select(schedule_fire, task.c.state.label("task_state")).outerjoin(
        task, task.c.id == schedule_fire.c.task_id
    )


def _fire(row: sa.Row[Any]) -> core.FireRecord:
    m = row._mapping
    return core.FireRecord(
        schedule_id=m["schedule_id"],
        fire_time=m["fire_time"],
        manual=bool(m["manual"]),
        result=core.FireResult(m["result"]),
        recorded_at=m["recorded_at"],
        task_id=m["task_id"],
        count=m["count"],
        last_missed_at=m["last_missed_at"],
        message=m["message"],
        task_state=m["task_state"],
        run_at=m["run_at"],
    )


async def list_fires(
    conn: AsyncConnection,
    schedule_id: str,
    *,
    before: tuple[int, bool] | None,
    limit: int,
) -> list[core.FireRecord]:
    """Newest fire time first; `before` is the previous page's last (fire_time, manual)."""
    query = _fire_select().where(schedule_fire.c.schedule_id == schedule_id)
    if before is not None:
        at, manual = before
        later = schedule_fire.c.fire_time < at
        if manual:  # at one fire time the manual record sorts first
            later = sa.or_(
                later,
                sa.and_(schedule_fire.c.fire_time == at, schedule_fire.c.manual == sa.false()),
            )
        query = query.where(later)
    query = query.order_by(schedule_fire.c.fire_time.desc(), schedule_fire.c.manual.desc())
    return [_fire(r) for r in await conn.execute(query.limit(limit))]


async def last_fire(conn: AsyncConnection, schedule_id: str) -> core.FireRecord | None:
    query = (
        _fire_select()
        .where(schedule_fire.c.schedule_id == schedule_id)
        .order_by(schedule_fire.c.recorded_at.desc(), schedule_fire.c.fire_time.desc())
        .limit(1)
    )
    row = (await conn.execute(query)).first()
    return None if row is None else _fire(row)


async def prune_fires(conn: AsyncConnection, *, keep: int = HISTORY_KEEP) -> int:
    """Delete all but the newest `keep` records of each schedule; returns how many."""
    crowded = await conn.execute(
        sa.select(schedule_fire.c.schedule_id)
        .group_by(schedule_fire.c.schedule_id)
        .having(sa.func.count() > keep)
    )
    deleted = 0
    for (schedule_id,) in crowded.all():
        cutoff = (
            sa.select(schedule_fire.c.fire_time)
            .where(schedule_fire.c.schedule_id == schedule_id)
            .order_by(schedule_fire.c.fire_time.desc())
            .offset(keep - 1)
            .limit(1)
            .scalar_subquery()
        )
        result = await conn.execute(
            sa.delete(schedule_fire).where(
                schedule_fire.c.schedule_id == schedule_id, schedule_fire.c.fire_time < cutoff
            )
        )
        deleted += result.rowcount or 0
    return deleted
