"""Schedules in the SDK: typed values, request building, and the methods `Client` gets from
the mixin below (see ``taskyard.v1.ScheduleService``); `SyncClient` derives its own from those.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from google.protobuf import field_mask_pb2

from taskyard.v1 import (
    schedule_pb2,
    schedule_service_pb2,
    schedule_service_pb2_grpc,
    task_pb2,
)
from worker_sdk._payload import from_payload
from worker_sdk._requests import create_request
from worker_sdk._types import RetryPolicy, Task, TaskSpec, TaskState, Timeouts

pb = schedule_service_pb2
_CATCHUP = ("skip", "one", "all")
_OVERLAP = ("skip", "buffer_one", "allow_all")
_RESULTS = ("started", "skipped", "missed", "buffered", "failed")
Seconds = float | timedelta
# An excluded date, or an inclusive (first, last) range of them; dates or ISO 8601 strings.
Exclusion = date | str | tuple[date | str, date | str]


def _secs(value: Seconds) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def _time(message: Any, name: str) -> datetime | None:
    if not message.HasField(name):
        return None
    ts = getattr(message, name)
    return datetime.fromtimestamp(ts.seconds + ts.nanos / 1e9, tz=UTC)


@dataclass(frozen=True, slots=True)
class ScheduleFire:
    """One record of a schedule's fire history (see ``Client.schedule_fires``).

    Attributes:
        fire_time: The nominal fire time (for a manual run, when it ran).
        result: "started", "skipped", "missed", "buffered" or "failed".
        task_id: The submitted task, for started fires.
        task_state: That task's state now; None when there is none (any more).
        manual: True for a run started by ``run_schedule``.
        missed_count: For "missed" records, how many fire times the record stands for.
        last_missed_time: For "missed" records, the last of them.
        message: For "failed" fires, why no task was submitted; for "skipped"
            ones, how many runs were unfinished.
        run_time: When the submitted task was due: the fire time plus the
            schedule's jitter (``fire_time`` stays the nominal time).
    """

    fire_time: datetime | None
    result: str
    task_id: str
    task_state: TaskState | None
    manual: bool
    record_time: datetime | None
    missed_count: int = 1
    last_missed_time: datetime | None = None
    message: str = ""
    run_time: datetime | None = None

    @classmethod
    def from_proto(cls, f: schedule_pb2.ScheduleFire) -> ScheduleFire:
        return cls(
            fire_time=_time(f, "fire_time"),
            result=_RESULTS[f.result - 1] if f.result else "unspecified",
            task_id=f.task_id,
            task_state=TaskState.from_proto(f.task_state) if f.task_state else None,
            manual=f.manual,
            record_time=_time(f, "record_time"),
            missed_count=f.missed_count,
            last_missed_time=_time(f, "last_missed_time"),
            message=f.message,
            run_time=_time(f, "run_time"),
        )


@dataclass(frozen=True, slots=True)
class Schedule:
    """A schedule as the broker holds it (see ``Client.create_schedule`` for the settings).

    Attributes:
        state: "active", "paused" or "completed".
        next_fire_times: The next few fire times, soonest first (empty unless active).
        last_fire: The most recently recorded fire.
        started_count: Fires that submitted a task; ``skipped_count``, ``missed_count``
            and ``failed_count`` count the others.
        rrule: The RFC 5545 recurrence rule, for a recurrence trigger.
        exclusions: Excluded dates as (first, last) pairs, both included.
        max_instances: Runs that may be unfinished at once (1 unless set).
        running_count: Runs whose task has not finished yet.
    """

    name: str
    description: str
    cron: str | None
    every: float | None
    at: datetime | None
    time_zone: str
    start_time: datetime | None
    end_time: datetime | None
    jitter: float | None
    misfire_grace: float
    catchup: str
    catchup_limit: int
    overlap: str
    task: TaskSpec
    state: str
    pause_note: str = ""
    next_fire_times: list[datetime] = field(default_factory=list)
    last_fire: ScheduleFire | None = None
    started_count: int = 0
    skipped_count: int = 0
    missed_count: int = 0
    failed_count: int = 0
    buffered_fire_time: datetime | None = None
    create_time: datetime | None = None
    update_time: datetime | None = None
    rrule: str | None = None
    exclusions: list[tuple[date, date]] = field(default_factory=list)
    max_instances: int = 1
    running_count: int = 0

    @classmethod
    def from_proto(cls, s: schedule_pb2.Schedule) -> Schedule:
        spec, info, pol = s.spec, s.info, s.policies
        which = spec.WhichOneof("trigger")
        return cls(
            name=s.name,
            description=s.description,
            cron=spec.cron.expression if which == "cron" else None,
            every=spec.interval.every.ToTimedelta().total_seconds()
            if which == "interval"
            else None,
            at=_time(spec.once, "fire_time") if which == "once" else None,
            time_zone=spec.time_zone or "UTC",
            start_time=_time(spec, "start_time"),
            end_time=_time(spec, "end_time"),
            jitter=spec.jitter.ToTimedelta().total_seconds() if spec.HasField("jitter") else None,
            misfire_grace=pol.misfire_grace.ToTimedelta().total_seconds(),
            catchup=_CATCHUP[pol.catchup - 1] if pol.catchup else "one",
            catchup_limit=pol.catchup_limit,
            overlap=_OVERLAP[pol.overlap - 1] if pol.overlap else "skip",
            task=_spec_of(s.task),
            state=schedule_pb2.ScheduleState.Name(s.state).removeprefix("SCHEDULE_STATE_").lower(),
            pause_note=s.pause_note,
            next_fire_times=[
                datetime.fromtimestamp(t.seconds + t.nanos / 1e9, tz=UTC)
                for t in info.next_fire_times
            ],
            last_fire=ScheduleFire.from_proto(info.last_fire)
            if info.HasField("last_fire")
            else None,
            started_count=info.started_count,
            skipped_count=info.skipped_count,
            missed_count=info.missed_count,
            failed_count=info.failed_count,
            buffered_fire_time=_time(info, "buffered_fire_time"),
            create_time=_time(s, "create_time"),
            update_time=_time(s, "update_time"),
            rrule=spec.recurrence.rule if which == "recurrence" else None,
            exclusions=[
                (date.fromisoformat(r.start_date), date.fromisoformat(r.end_date or r.start_date))
                for r in spec.exclusions
            ],
            max_instances=pol.max_instances or 1,
            running_count=info.running_count,
        )


def _spec_of(t: task_pb2.Task) -> TaskSpec:
    return TaskSpec(
        type=t.type,
        payload=from_payload(t.payload) if t.HasField("payload") else None,
        queue=t.queue or None,
        priority=t.priority,
        labels=dict(t.labels),
        max_attempts=t.max_attempts or None,
        retry_policy=RetryPolicy.from_proto(t.retry_policy) if t.HasField("retry_policy") else None,
        timeouts=Timeouts.from_proto(t.timeouts) if t.HasField("timeouts") else None,
    )


def schedule_request(
    name: str,
    *,
    task: TaskSpec | None = None,
    cron: str | None = None,
    every: Seconds | None = None,
    at: datetime | None = None,
    rrule: str | None = None,
    time_zone: str | None = None,
    start_time: datetime | None = None,
    end_time: datetime | None = None,
    jitter: Seconds | None = None,
    exclusions: Iterable[Exclusion] | None = None,
    misfire_grace: Seconds | None = None,
    catchup: str | None = None,
    catchup_limit: int | None = None,
    overlap: str | None = None,
    max_instances: int | None = None,
    description: str | None = None,
) -> tuple[schedule_pb2.Schedule, list[str]]:
    """A Schedule message and the field-mask paths of what was given."""
    out = schedule_pb2.Schedule(name=name)
    paths: list[str] = []
    given = (("cron", cron), ("every", every), ("at", at), ("rrule", rrule))
    if len([k for k, v in given if v is not None]) > 1:
        raise ValueError("pass one of cron, every, at and rrule")
    spec = out.spec
    if cron is not None:
        spec.cron.expression = cron
        paths.append("spec.cron")
    if rrule is not None:
        spec.recurrence.rule = rrule
        paths.append("spec.recurrence")
    if exclusions is not None:
        for item in exclusions:
            first, last = item if isinstance(item, tuple) else (item, item)
            spec.exclusions.add(start_date=_iso_date(first), end_date=_iso_date(last))
        paths.append("spec.exclusions")
    if every is not None:
        spec.interval.every.FromTimedelta(timedelta(seconds=_secs(every)))
        paths.append("spec.interval")
    if at is not None:
        spec.once.fire_time.FromDatetime(_aware(at, "at"))
        paths.append("spec.once")
    for key, value in (("start_time", start_time), ("end_time", end_time)):
        if value is not None:
            getattr(spec, key).FromDatetime(_aware(value, key))
            paths.append(f"spec.{key}")
    if time_zone is not None:
        spec.time_zone = time_zone
        paths.append("spec.time_zone")
    if jitter is not None:
        spec.jitter.FromTimedelta(timedelta(seconds=_secs(jitter)))
        paths.append("spec.jitter")
    paths += _policies(out.policies, misfire_grace, catchup, catchup_limit, overlap)
    if max_instances is not None:
        out.policies.max_instances = max_instances
        paths.append("policies.max_instances")
    if task is not None:
        if task.run_at is not None or task.request_id is not None:
            raise ValueError("a schedule's task takes neither run_at nor request_id")
        out.task.CopyFrom(create_request(task).task)
        paths.append("task")
    if description is not None:
        out.description = description
        paths.append("description")
    for head in {path.partition(".")[0] for path in paths} & {"spec", "policies"}:
        # A field mask applies `spec.x` only if `spec` is present: an empty list or
        # string given on purpose (clearing exclusions, say) must still arrive.
        getattr(out, head).SetInParent()
    return out, paths


def _policies(
    out: schedule_pb2.SchedulePolicies,
    misfire_grace: Seconds | None,
    catchup: str | None,
    catchup_limit: int | None,
    overlap: str | None,
) -> list[str]:
    paths = []
    if misfire_grace is not None:
        out.misfire_grace.FromTimedelta(timedelta(seconds=_secs(misfire_grace)))
        paths.append("policies.misfire_grace")
    if catchup is not None:
        out.catchup = _choice(catchup, _CATCHUP, "catchup")  # type: ignore[assignment]
        paths.append("policies.catchup")
    if catchup_limit is not None:
        out.catchup_limit = catchup_limit
        paths.append("policies.catchup_limit")
    if overlap is not None:
        out.overlap = _choice(overlap, _OVERLAP, "overlap")  # type: ignore[assignment]
        paths.append("policies.overlap")
    return paths


def _choice(value: str, names: tuple[str, ...], what: str) -> int:
    if value not in names:
        raise ValueError(f"{what} must be one of {', '.join(names)}, got {value!r}")
    return names.index(value) + 1


def _iso_date(value: date | str) -> str:
    if isinstance(value, datetime):
        raise ValueError(f"exclusions take dates, not times: {value!r}")
    return value.isoformat() if isinstance(value, date) else value


def _aware(value: datetime, what: str) -> datetime:
    if value.tzinfo is None:
        raise ValueError(f"{what} must be time-zone aware, e.g. datetime.now(UTC)")
    return value


def preview_request(
    name: str | None, options: dict[str, Any], count: int, after: datetime | None
) -> schedule_service_pb2.PreviewScheduleRequest:
    request = pb.PreviewScheduleRequest(name=name or "", count=count)
    if name is None and options:
        message, _ = schedule_request("", **options)
        request.spec.CopyFrom(message.spec)
    elif options:
        raise ValueError("pass a schedule name or a spec (cron, every, at, ...), not both")
    if after is not None:
        request.start_time.FromDatetime(_aware(after, "after"))
    return request


def _times(response: schedule_service_pb2.PreviewScheduleResponse) -> list[datetime]:
    return [datetime.fromtimestamp(t.seconds + t.nanos / 1e9, tz=UTC) for t in response.fire_times]


class ScheduleMethods:
    """ScheduleService methods of `Client`; every one raises `TaskyardError` on refusal."""

    _channel: Any

    async def _call(self, method: Any, request: Any) -> Any:
        raise NotImplementedError

    @property
    def _schedules(self) -> schedule_service_pb2_grpc.ScheduleServiceStub:
        stub: schedule_service_pb2_grpc.ScheduleServiceStub = (
            schedule_service_pb2_grpc.ScheduleServiceStub(self._channel)
        )
        return stub

    async def create_schedule(self, /, name: str, task: TaskSpec, **options: Any) -> Schedule:
        """Create a schedule that submits `task` at each fire time.

        Args:
            name: The schedule's name (letters, digits and _ . : - /).
            task: The task to submit (no run_at, no request_id).
            **options: One trigger: ``cron`` (expression), ``every`` (seconds or
                timedelta), ``at`` (aware datetime) or ``rrule`` (an RFC 5545
                rule such as ``"FREQ=MONTHLY;BYDAY=-1FR;BYHOUR=17"``); and
                optionally ``time_zone``, ``start_time``, ``end_time``,
                ``jitter`` (spread each fire by up to this), ``exclusions``
                (dates, or (first, last) date ranges, not to fire on, read in
                ``time_zone``), ``misfire_grace``, ``catchup`` ("skip", "one",
                "all"), ``catchup_limit``, ``overlap`` ("skip", "buffer_one",
                "allow_all"), ``max_instances`` (runs that may be unfinished at
                once) and ``description``.

        Raises:
            TaskyardError: e.g. reason ``SCHEDULE_EXISTS`` or ``INVALID_SCHEDULE_SPEC``.
        """
        message, _ = schedule_request(name, task=task, **options)
        response = await self._call(
            self._schedules.CreateSchedule, pb.CreateScheduleRequest(schedule=message)
        )
        return Schedule.from_proto(response.schedule)

    async def get_schedule(self, name: str) -> Schedule:
        """One schedule, with its next fire times, last fire and counters."""
        response = await self._call(self._schedules.GetSchedule, pb.GetScheduleRequest(name=name))
        return Schedule.from_proto(response.schedule)

    async def list_schedules(self, *, page_size: int = 100) -> AsyncIterator[Schedule]:
        """Every schedule, by name, page after page."""
        token = ""
        while True:
            request = pb.ListSchedulesRequest(page_size=page_size, page_token=token)
            response = await self._call(self._schedules.ListSchedules, request)
            for s in response.schedules:
                yield Schedule.from_proto(s)
            token = response.next_page_token
            if not token:
                return

    async def update_schedule(self, /, name: str, **changes: Any) -> Schedule:
        """Change only the settings given (as for ``create_schedule``, plus ``task``)."""
        message, paths = schedule_request(name, **changes)
        if not paths:
            raise ValueError("nothing to change")
        request = pb.UpdateScheduleRequest(
            schedule=message, update_mask=field_mask_pb2.FieldMask(paths=paths)
        )
        return Schedule.from_proto(
            (await self._call(self._schedules.UpdateSchedule, request)).schedule
        )

    async def delete_schedule(self, name: str) -> None:
        """Delete a schedule and its fire history (not the tasks it submitted)."""
        await self._call(self._schedules.DeleteSchedule, pb.DeleteScheduleRequest(name=name))

    async def pause_schedule(self, name: str, note: str = "") -> Schedule:
        """Stop firing; fire times that pass while paused are neither run nor missed."""
        request = pb.PauseScheduleRequest(name=name, note=note)
        return Schedule.from_proto(
            (await self._call(self._schedules.PauseSchedule, request)).schedule
        )

    async def resume_schedule(self, name: str) -> Schedule:
        """Fire again, from the first fire time at or after now."""
        request = pb.ResumeScheduleRequest(name=name)
        response = await self._call(self._schedules.ResumeSchedule, request)
        return Schedule.from_proto(response.schedule)

    async def run_schedule(self, name: str) -> Task:
        """Submit the schedule's task once, now; the timetable is unchanged."""
        response = await self._call(self._schedules.RunSchedule, pb.RunScheduleRequest(name=name))
        return Task.from_proto(response.task)

    async def preview_schedule(
        self,
        /,
        name: str | None = None,
        *,
        count: int = 10,
        after: datetime | None = None,
        **spec: Any,
    ) -> list[datetime]:
        """The next fire times of a saved schedule, or of a spec (``cron=...`` etc.).

        A spec may carry ``exclusions``: the preview leaves excluded dates out.
        """
        request = preview_request(name, spec, count, after)
        return _times(await self._call(self._schedules.PreviewSchedule, request))

    async def schedule_fires(
        self, name: str, *, page_size: int = 100
    ) -> AsyncIterator[ScheduleFire]:
        """The fire history, newest fire time first."""
        token = ""
        while True:
            request = pb.ListScheduleFiresRequest(name=name, page_size=page_size, page_token=token)
            response = await self._call(self._schedules.ListScheduleFires, request)
            for f in response.fires:
                yield ScheduleFire.from_proto(f)
            token = response.next_page_token
            if not token:
                return
