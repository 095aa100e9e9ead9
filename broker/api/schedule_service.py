"""ScheduleService: create, read, change, pause, run and preview schedules, and read their history.

Changes are compare-and-set writes through the committer: a change computed
from a schedule that fired (or changed) meanwhile is recomputed from a fresh
read, so a change never undoes a fire and a fire never uses stale settings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from google.protobuf import field_mask_pb2

from broker.api import convert, workflow_convert
from broker.api import schedule_convert as sc
from broker.api.runtime import Runtime
from broker.api.status import maps_errors
from broker.core import schedules as core
from broker.core import validation
from broker.core.models import NewTask
from broker.core.workflows import NewWorkflow
from broker.engine.schedule_ops import (
    DeleteSchedule,
    Hint,
    Inserted,
    InsertSchedule,
    ReplaceSchedule,
    RunNow,
)
from broker.errors import (
    AlreadyExists,
    InvalidArgument,
    NotFound,
    QueueFull,
    ResourceExhausted,
    ScheduleNotFound,
    ShuttingDown,
    Unavailable,
)
from broker.security.access import owner_of_new_task
from broker.store import schedules as store
from broker.store import tasks, workflow_reads
from taskyard.v1 import schedule_pb2, schedule_service_pb2, schedule_service_pb2_grpc, task_pb2

Context = Any  # grpc.aio.ServicerContext; untyped in the generated stubs
pb = schedule_service_pb2
CAS_ATTEMPTS = 20
MAX_PREVIEW = 1000
_SUBFIELDS = {
    "spec": {
        "cron",
        "interval",
        "once",
        "recurrence",
        "time_zone",
        "start_time",
        "end_time",
        "jitter",
        "exclusions",
    },
    "task": set(sc.TEMPLATE_FIELDS),
    "policies": {"misfire_grace", "catchup", "catchup_limit", "overlap", "max_instances"},
}
_SETTABLE = ("description", "spec", "task", "policies", "workflow")
# A change computed from a fresh read: (schedule, now) -> changed schedule, or the same one.
Change = Callable[[core.ScheduleRecord, int], core.ScheduleRecord]


class ScheduleService(schedule_service_pb2_grpc.ScheduleServiceServicer):
    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime
        self._factory = sc.Factory(
            runtime.settings, runtime.defaults, runtime.queues.options, budget=runtime.budget
        )

    @property
    def _hint(self) -> Hint:
        return self._rt.schedule_hint

    def _now(self) -> int:
        return self._rt.clock.now_us()

    def _name(self, value: str) -> str:
        return sc.schedule_name(value, self._rt.settings)

    async def _get(self, name: str) -> core.ScheduleRecord:
        async with self._rt.db.reader.connect() as conn:
            record = await store.get_schedule(conn, name)
        if record is None:
            raise ScheduleNotFound(name)
        return record

    async def _out(self, record: core.ScheduleRecord) -> schedule_pb2.Schedule:
        async with self._rt.db.reader.connect() as conn:
            last = await store.last_fire(conn, record.id)
        return sc.schedule_out(record, last, now=self._now())

    def _build(
        self, s: schedule_pb2.Schedule, now: int, workflow: bytes | None = None
    ) -> core.ScheduleRecord:
        record = sc.new_record(
            self._name(s.name),
            sc.description_in(s.description),
            sc.spec_in(s.spec, now=now),
            sc.policies_in(s.policies),
            workflow or sc.template_in(s.task, self._rt.settings),
            now=now,
        )
        self._factory.check(record, now)
        return record

    async def _workflow_target(self, s: schedule_pb2.Schedule) -> bytes | None:
        """A schedule that starts a workflow: its template, read now (the version resolved)."""
        if not s.HasField("workflow"):
            return None
        if s.HasField("task"):
            raise InvalidArgument(
                "give a schedule either a task or a workflow, not both",
                reason="INVALID_SCHEDULE_TASK",
            )
        ref = s.workflow
        async with self._rt.db.reader.connect() as conn:
            row = await workflow_reads.get_template(conn, ref.name, ref.version)
        if row is None:
            raise NotFound(
                f"no template named {ref.name!r}"
                + (f" with version {ref.version}" if ref.version else ""),
                reason="TEMPLATE_NOT_FOUND",
            )
        return sc.workflow_target_in(ref, workflow_convert.template_out(row))

    @maps_errors
    async def CreateSchedule(
        self, request: pb.CreateScheduleRequest, context: Context
    ) -> pb.CreateScheduleResponse:
        if self._rt.shutting_down:
            raise ShuttingDown()
        # Owned by its creator: for the per-identity cap and its fires' submission budget.
        workflow = await self._workflow_target(request.schedule)
        record = replace(
            self._build(request.schedule, self._now(), workflow), owner=owner_of_new_task()
        )
        cap = self._rt.settings.limits.max_schedules_per_identity
        inserted = await self._rt.committer.submit(
            InsertSchedule(record, self._hint, max_owned=cap)
        )
        if inserted is Inserted.OVER_CAP:
            who = record.owner or "this broker without authentication"
            raise ResourceExhausted(
                f"{who} owns {cap} schedules, the limit (--max-schedules-per-identity); "
                "delete one first",
                reason="TOO_MANY_SCHEDULES",
            )
        if inserted is Inserted.NAME_TAKEN:
            raise AlreadyExists(
                f"a schedule named {record.name!r} exists; change it with UpdateSchedule or "
                "delete it first",
                reason="SCHEDULE_EXISTS",
            )
        return pb.CreateScheduleResponse(schedule=await self._out(record))

    @maps_errors
    async def GetSchedule(
        self, request: pb.GetScheduleRequest, context: Context
    ) -> pb.GetScheduleResponse:
        record = await self._get(self._name(request.name))
        return pb.GetScheduleResponse(schedule=await self._out(record))

    @maps_errors
    async def ListSchedules(
        self, request: pb.ListSchedulesRequest, context: Context
    ) -> pb.ListSchedulesResponse:
        limit = validation.page_size(request.page_size, self._rt.settings.limits)
        after = convert.parse_page_token(request.page_token, "schedules")
        async with self._rt.db.reader.connect() as conn:
            records = await store.list_schedules(conn, after=after, limit=limit + 1)
        response = pb.ListSchedulesResponse(schedules=[await self._out(r) for r in records[:limit]])
        if len(records) > limit:
            response.next_page_token = convert.page_token(records[limit - 1].name, "schedules")
        return response

    @maps_errors
    async def UpdateSchedule(
        self, request: pb.UpdateScheduleRequest, context: Context
    ) -> pb.UpdateScheduleResponse:
        name = self._name(request.schedule.name)
        paths = _paths(request.update_mask)
        workflow = None
        if "workflow" in paths and request.schedule.HasField("workflow"):
            # A new workflow target, resolved now; it replaces a task target.
            workflow = await self._workflow_target(request.schedule)
            paths = [p for p in paths if not p.startswith("task")]
        paths = [p for p in paths if p != "workflow"]

        def change(before: core.ScheduleRecord, now: int) -> core.ScheduleRecord:
            return self._changed(before, request.schedule, paths, now, workflow)

        return pb.UpdateScheduleResponse(schedule=await self._replace(name, change))

    def _changed(
        self,
        before: core.ScheduleRecord,
        given: schedule_pb2.Schedule,
        paths: list[str],
        now: int,
        workflow: bytes | None = None,
    ) -> core.ScheduleRecord:
        merged = schedule_pb2.Schedule(
            description=before.description,
            spec=sc.spec_out(before.spec),
            policies=sc.policies_out(before.policies),
        )
        starts_workflow = sc.is_workflow(before.template)
        if not starts_workflow:
            merged.task.CopyFrom(task_pb2.Task.FromString(before.template))
        field_mask_pb2.FieldMask(paths=paths).MergeMessage(
            given, merged, replace_message_field=True, replace_repeated_field=True
        )
        template = workflow
        if template is None:
            # A workflow target stays unless a task path replaces it with a task.
            task_given = any(p.startswith("task") for p in paths) and given.HasField("task")
            keep = starts_workflow and not task_given
            template = before.template if keep else sc.template_in(merged.task, self._rt.settings)
        after = core.with_settings(
            before,
            description=sc.description_in(merged.description),
            spec=sc.spec_in(merged.spec, now=now),
            policies=sc.policies_in(merged.policies),
            template=template,
            now=now,
        )
        self._factory.check(after, now)
        return after

    async def _replace(self, name: str, change: Change) -> schedule_pb2.Schedule:
        for _ in range(CAS_ATTEMPTS):
            before = await self._get(name)
            after = change(before, self._now())
            if after is before:
                return await self._out(before)
            if await self._rt.committer.submit(ReplaceSchedule(before, after, self._hint)):
                return await self._out(await self._get(name))
        raise Unavailable(
            f"schedule {name!r} kept firing or changing while being updated; retry",
            reason="SCHEDULE_BUSY",
        )

    @maps_errors
    async def DeleteSchedule(
        self, request: pb.DeleteScheduleRequest, context: Context
    ) -> pb.DeleteScheduleResponse:
        name = self._name(request.name)
        if not await self._rt.committer.submit(DeleteSchedule(name)):
            raise ScheduleNotFound(name)
        return pb.DeleteScheduleResponse()

    @maps_errors
    async def PauseSchedule(
        self, request: pb.PauseScheduleRequest, context: Context
    ) -> pb.PauseScheduleResponse:
        name = self._name(request.name)
        if len(request.note) > 1000:
            raise InvalidArgument(
                f"note is {len(request.note)} characters; the limit is 1000",
                reason="INVALID_ARGUMENT",
            )
        validation.text("note", request.note, reason="INVALID_TEXT")

        def pause(before: core.ScheduleRecord, now: int) -> core.ScheduleRecord:
            note = request.note or None
            if before.paused and before.pause_note == note:
                return before
            return replace(
                before, paused=True, pause_note=note, revision=before.revision + 1, updated_at=now
            )

        return pb.PauseScheduleResponse(schedule=await self._replace(name, pause))

    @maps_errors
    async def ResumeSchedule(
        self, request: pb.ResumeScheduleRequest, context: Context
    ) -> pb.ResumeScheduleResponse:
        def resume(before: core.ScheduleRecord, now: int) -> core.ScheduleRecord:
            if not before.paused:
                return before
            next_fire = core.resume_fire(before.spec, now=now, fired_through=before.fired_through)
            return replace(
                before,
                paused=False,
                pause_note=None,
                next_fire_at=next_fire,
                revision=before.revision + 1,
                updated_at=now,
            )

        schedule = await self._replace(self._name(request.name), resume)
        return pb.ResumeScheduleResponse(schedule=schedule)

    @maps_errors
    async def RunSchedule(
        self, request: pb.RunScheduleRequest, context: Context
    ) -> pb.RunScheduleResponse:
        if self._rt.shutting_down:
            raise ShuttingDown()
        name = self._name(request.name)
        record = await self._get(name)
        self._factory.check(record, self._now())  # a bad template fails here, not in a commit

        def make(rec: core.ScheduleRecord, at: int) -> NewTask | NewWorkflow:
            return self._factory(rec, fire_time=at, now=at, manual=True)

        run = await self._rt.committer.submit(RunNow(name, make))
        if run.refused:
            made = self._factory.build(record, fire_time=0, now=0, manual=True)
            queue = made.queue if isinstance(made, NewTask) else made.nodes[0].task.queue
            settings = self._rt.queues.get(queue)
            raise QueueFull(queue, settings.max_depth if settings else None)
        if run.task_id is None:
            raise ScheduleNotFound(name)
        if sc.is_workflow(record.template):
            return pb.RunScheduleResponse(workflow_id=run.task_id)
        async with self._rt.db.reader.connect() as conn:
            found = await tasks.get_task(conn, run.task_id, full=True)
        assert found is not None
        task = convert.task(found, full=True, default_policy=self._rt.defaults.retry)
        return pb.RunScheduleResponse(task=task)

    @maps_errors
    async def PreviewSchedule(
        self, request: pb.PreviewScheduleRequest, context: Context
    ) -> pb.PreviewScheduleResponse:
        now = self._now()
        if bool(request.name) == request.HasField("spec"):
            raise InvalidArgument("give exactly one of name and spec", reason="INVALID_ARGUMENT")
        count = request.count or 10
        if not 1 <= count <= MAX_PREVIEW:
            raise InvalidArgument(
                f"count must be from 0 to {MAX_PREVIEW}, got {request.count}",
                reason="INVALID_ARGUMENT",
            )
        if request.name:
            spec = (await self._get(self._name(request.name))).spec
        else:
            spec = sc.spec_in(request.spec, now=now)
        start = (
            convert.micros("start_time", request.start_time)
            if request.HasField("start_time")
            else now
        )
        times = spec.upcoming(start, count)
        response = pb.PreviewScheduleResponse()
        for at in times:
            convert.set_timestamp(response.fire_times.add(), at)
        return response

    @maps_errors
    async def ListScheduleFires(
        self, request: pb.ListScheduleFiresRequest, context: Context
    ) -> pb.ListScheduleFiresResponse:
        record = await self._get(self._name(request.name))
        limit = validation.page_size(request.page_size, self._rt.settings.limits)
        token = convert.parse_page_token(request.page_token, record.id)
        before = None if token is None else _fire_cursor(token)
        async with self._rt.db.reader.connect() as conn:
            fires = await store.list_fires(conn, record.id, before=before, limit=limit + 1)
        workflow = sc.is_workflow(record.template)
        response = pb.ListScheduleFiresResponse(
            fires=[sc.fire_out(f, workflow=workflow) for f in fires[:limit]]
        )
        if len(fires) > limit:
            last = fires[limit - 1]
            cursor = f"{last.fire_time}:{int(last.manual)}"
            response.next_page_token = convert.page_token(cursor, record.id)
        return response


def _fire_cursor(token: str) -> tuple[int, bool]:
    at, _, manual = token.partition(":")
    try:
        return int(at), manual == "1"
    except ValueError:
        raise InvalidArgument(
            "page_token is not a token this broker issued; pass next_page_token unchanged",
            reason="INVALID_PAGE_TOKEN",
        ) from None


def _paths(mask: field_mask_pb2.FieldMask) -> list[str]:
    if not mask.paths:
        return list(_SETTABLE)
    for path in mask.paths:
        head, _, rest = path.partition(".")
        ok = head in _SETTABLE and (
            not rest
            or (head not in ("description", "workflow") and rest.split(".")[0] in _SUBFIELDS[head])
        )
        if not ok:
            raise InvalidArgument(
                f"update_mask path {path!r} cannot be updated; use description, spec, task, "
                "policies or a field inside the last three (e.g. spec.time_zone)",
                reason="INVALID_UPDATE_MASK",
            )
    return list(mask.paths)
