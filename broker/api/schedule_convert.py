"""Protobuf ↔ domain conversion for schedules, and the factory that turns a template into a task.

A schedule's template is stored as a serialized `Task` (input fields only).
Each fire goes through `convert.new_task`, the very function CreateTask
uses, so a fired task gets exactly CreateTask's validation and defaults.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC
from typing import Any

from google.protobuf import duration_pb2, timestamp_pb2
from google.protobuf.message import Message

from broker.api import checks, convert, workflow_convert
from broker.config import Settings
from broker.core import cron, validation
from broker.core import schedules as core
from broker.core.models import NewTask
from broker.core.options import Defaults, TaskOptions
from broker.core.validation import name as check_name
from broker.core.workflows import NewWorkflow
from broker.errors import InvalidArgument
from broker.ids import new_ulid
from broker.security.limits import SubmitBudget, rate_limited
from broker.security.roles import ANONYMOUS
from taskyard.v1 import schedule_pb2, task_pb2, task_service_pb2, workflow_pb2

LABEL_SCHEDULE = "taskyard.schedule"
LABEL_FIRE_TIME = "taskyard.fire_time"
NEXT_SHOWN = 5
MAX_DESCRIPTION = 1000
# The input fields of a Task that a template keeps (the rest are output only).
TEMPLATE_FIELDS = (
    "type",
    "queue",
    "priority",
    "payload",
    "labels",
    "max_attempts",
    "retry_policy",
    "timeouts",
    "concurrency_key",
)


def _us(field: str, ts: timestamp_pb2.Timestamp) -> int:
    return checks.instant_us(field, ts)


def _dur(field: str, d: duration_pb2.Duration) -> int:
    return checks.span_us(field, d)


def _ts(us: int) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    convert.set_timestamp(out, us)
    return out


def rfc3339(us: int) -> str:
    return cron.to_dt(us).astimezone(UTC).isoformat().replace("+00:00", "Z")


# --- Input ----------------------------------------------------------------------------------


def schedule_name(value: str, settings: Settings) -> str:
    return check_name("name", value, settings.limits, reason="INVALID_SCHEDULE_NAME")


def _cron_expression(spec: schedule_pb2.ScheduleSpec) -> str:
    text = spec.cron.expression
    return validation.text("spec.cron.expression", text, reason=cron.REASON).strip()


def spec_in(spec: schedule_pb2.ScheduleSpec, *, now: int) -> core.Spec:
    which = spec.WhichOneof("trigger")
    if which is None:
        raise InvalidArgument(
            "spec needs a trigger: spec.cron, spec.interval, spec.once or spec.recurrence",
            reason=cron.REASON,
        )
    out = core.Spec(
        kind={
            "cron": core.TriggerKind.CRON,
            "interval": core.TriggerKind.INTERVAL,
            "once": core.TriggerKind.ONCE,
            "recurrence": core.TriggerKind.RRULE,
        }[which],
        cron=_cron_expression(spec) if which == "cron" else None,
        rrule=validation.text(
            "spec.recurrence.rule", spec.recurrence.rule, reason=cron.REASON
        ).strip()
        if which == "recurrence"
        else None,
        exclusions=tuple((r.start_date, r.end_date or r.start_date) for r in spec.exclusions),
        every_us=_dur("spec.interval.every", spec.interval.every) if which == "interval" else None,
        once_at=_us("spec.once.fire_time", spec.once.fire_time)
        if which == "once" and spec.once.HasField("fire_time")
        else None,
        time_zone=validation.identifier("spec.time_zone", spec.time_zone, reason=cron.REASON),
        start_at=_us("spec.start_time", spec.start_time) if spec.HasField("start_time") else None,
        end_at=_us("spec.end_time", spec.end_time) if spec.HasField("end_time") else None,
        jitter_us=_dur("spec.jitter", spec.jitter),
    )
    core.check_spec(out, now=now)
    return out


def _enum(field: str, value: int, enum: Any) -> int:
    return checks.enum(field, value, enum.DESCRIPTOR, reason="INVALID_SCHEDULE_POLICY")


def policies_in(p: schedule_pb2.SchedulePolicies) -> core.Policies:
    out = core.Policies(
        misfire_grace_us=_dur("policies.misfire_grace", p.misfire_grace)
        if p.HasField("misfire_grace")
        else core.DEFAULT_GRACE,
        catchup=core.Catchup(_enum("policies.catchup", p.catchup, schedule_pb2.CatchupPolicy))
        if p.catchup
        else core.Catchup.ONE,
        catchup_limit=p.catchup_limit or core.DEFAULT_CATCHUP_LIMIT,
        overlap=core.Overlap(_enum("policies.overlap", p.overlap, schedule_pb2.OverlapPolicy))
        if p.overlap
        else core.Overlap.SKIP,
        max_instances=p.max_instances or 1,
    )
    problems = out.problems()
    if problems:
        raise InvalidArgument("; ".join(problems), reason="INVALID_SCHEDULE_POLICY")
    return out


def template_in(task: task_pb2.Task, settings: Settings) -> bytes:
    """The template's input fields, serialized; checked again by the factory before storing."""
    if task.HasField("run_time"):
        raise InvalidArgument(
            "task.run_time must be unset in a schedule's template: each fire time decides it",
            reason="INVALID_SCHEDULE_TASK",
        )
    kept = task_pb2.Task()
    given: Message = task  # HasField by a name read from TEMPLATE_FIELDS
    for field in TEMPLATE_FIELDS:
        if field == "labels":
            kept.labels.update(task.labels)
        elif field in ("payload", "retry_policy", "timeouts"):
            if given.HasField(field):
                getattr(kept, field).CopyFrom(getattr(task, field))
        else:
            setattr(kept, field, getattr(task, field))
    for key in (LABEL_SCHEDULE, LABEL_FIRE_TIME):
        kept.labels.pop(key, None)
    return kept.SerializeToString(deterministic=True)


# A schedule that starts a workflow keeps, in place of the serialized Task,
# b"W" + the length of the serialized WorkflowTemplateRef (4 bytes, big
# endian) + that ref (version resolved) + the serialized WorkflowTemplate it
# names. A serialized Task never starts with b"W" (0x57 would be field 10 of
# wire type 7, which does not exist), so the two cannot be confused.
_WORKFLOW = b"W"


def is_workflow(template: bytes) -> bool:
    return template[:1] == _WORKFLOW


def workflow_target_in(
    ref: workflow_pb2.WorkflowTemplateRef, found: workflow_pb2.WorkflowTemplate
) -> bytes:
    """A workflow target to store: the ref, its version resolved, and the template itself."""
    kept = workflow_pb2.WorkflowTemplateRef()
    kept.CopyFrom(ref)
    kept.version = found.version
    head = kept.SerializeToString(deterministic=True)
    body = found.SerializeToString(deterministic=True)
    return _WORKFLOW + len(head).to_bytes(4, "big") + head + body


def workflow_target(
    template: bytes,
) -> tuple[workflow_pb2.WorkflowTemplateRef, workflow_pb2.WorkflowTemplate]:
    size = int.from_bytes(template[1:5], "big")
    ref = workflow_pb2.WorkflowTemplateRef.FromString(template[5 : 5 + size])
    return ref, workflow_pb2.WorkflowTemplate.FromString(template[5 + size :])


def description_in(text: str) -> str:
    if len(text) > MAX_DESCRIPTION:
        raise InvalidArgument(
            f"description is {len(text)} characters; the limit is {MAX_DESCRIPTION}",
            reason="INVALID_ARGUMENT",
        )
    return validation.text("description", text, reason="INVALID_TEXT")


def new_record(
    name: str,
    description: str,
    spec: core.Spec,
    policies: core.Policies,
    template: bytes,
    *,
    now: int,
) -> core.ScheduleRecord:
    return core.ScheduleRecord(
        id=new_ulid(),
        name=name,
        description=description,
        spec=spec,
        policies=policies,
        template=template,
        paused=False,
        pause_note=None,
        revision=1,
        next_fire_at=core.first_fire(spec, base=now, fired_through=None),
        buffered_at=None,
        fired_through=None,
        last_task_id=None,
        counts=core.Counts(),
        created_at=now,
        updated_at=now,
    )


# --- The task a fire submits ----------------------------------------------------------------


class Factory:
    """Builds a fire's task with CreateTask's own `new_task` (see loops.ticker.TaskFactory).

    With a `budget`, every fire (manual runs too) is a submission by the
    schedule's owner: it takes one task and the template's bytes from the
    owner's buckets, as CreateTask would, and fails with RATE_LIMITED when
    they are empty (a schedule without an owner draws from `anonymous`).
    """

    def __init__(
        self,
        settings: Settings,
        defaults: Defaults,
        queue_options: Callable[[str], TaskOptions] | None = None,
        budget: SubmitBudget | None = None,
    ) -> None:
        self._settings = settings
        self._defaults = defaults
        self._queue_options = queue_options
        self._budget = budget

    def __call__(
        self, record: core.ScheduleRecord, *, fire_time: int, now: int, manual: bool
    ) -> NewTask | NewWorkflow:
        made = self.build(record, fire_time=fire_time, now=now, manual=manual)
        if self._budget is not None:
            owner = record.owner or ANONYMOUS
            count = 1 if isinstance(made, NewTask) else len(made.nodes)
            over = self._budget.take(owner, tasks=count, size=len(record.template))
            if over is not None:
                raise rate_limited(owner, over)
        return made

    def build(
        self, record: core.ScheduleRecord, *, fire_time: int, now: int, manual: bool
    ) -> NewTask | NewWorkflow:
        """What a fire submits (a task, or a template's workflow), charging no budget."""
        delay = 0 if manual else core.jitter_offset(record.id, fire_time, record.spec.jitter_us)
        if is_workflow(record.template):
            return self._workflow(record, fire_time=fire_time, now=now, delay=delay)
        spec = task_pb2.Task.FromString(record.template)
        spec.labels[LABEL_SCHEDULE] = record.name
        spec.labels[LABEL_FIRE_TIME] = rfc3339(fire_time)
        if delay:
            spec.run_time.CopyFrom(_ts(max(now, fire_time) + delay))
        return convert.new_task(
            task_service_pb2.CreateTaskRequest(task=spec),
            now=now,
            settings=self._settings,
            defaults=self._defaults,
            queue_options=self._queue_options,
        )

    def _workflow(
        self, record: core.ScheduleRecord, *, fire_time: int, now: int, delay: int
    ) -> NewWorkflow:
        """The workflow a fire starts: the stored template with the stored parameters."""
        ref, found = workflow_target(record.template)
        spec, values = workflow_convert.instantiate(found, ref.params)
        spec.labels[LABEL_SCHEDULE] = record.name
        spec.labels[LABEL_FIRE_TIME] = rfc3339(fire_time)
        if delay:
            for node in spec.nodes:
                node.task.run_time.CopyFrom(_ts(max(now, fire_time) + delay))
        factory = workflow_convert.NodeFactory(self._settings, self._defaults, self._queue_options)
        return workflow_convert.new_workflow(
            spec,
            factory=factory,
            now=now,
            owner=record.owner,  # the schedule's owner owns what it starts
            request_id=None,
            template=(found.name, found.version, values),
        )

    def check(self, record: core.ScheduleRecord, now: int) -> None:
        """INVALID_ARGUMENT now, rather than a FAILED fire later, for a bad template."""
        self.build(record, fire_time=now, now=now, manual=True)


# --- Output ---------------------------------------------------------------------------------


def spec_out(spec: core.Spec) -> schedule_pb2.ScheduleSpec:
    out = schedule_pb2.ScheduleSpec(time_zone=spec.time_zone)
    if spec.kind is core.TriggerKind.CRON:
        out.cron.expression = spec.cron or ""
    elif spec.kind is core.TriggerKind.INTERVAL:
        out.interval.every.FromMicroseconds(spec.every_us or 0)
    elif spec.once_at is not None:
        out.once.fire_time.CopyFrom(_ts(spec.once_at))
    if spec.start_at is not None:
        out.start_time.CopyFrom(_ts(spec.start_at))
    if spec.end_at is not None:
        out.end_time.CopyFrom(_ts(spec.end_at))
    if spec.jitter_us:
        out.jitter.FromMicroseconds(spec.jitter_us)
    if spec.kind is core.TriggerKind.RRULE:
        out.recurrence.rule = spec.rrule or ""
    for first, last in spec.exclusions:
        out.exclusions.add(start_date=first, end_date=last)
    return out


def policies_out(p: core.Policies) -> schedule_pb2.SchedulePolicies:
    out = schedule_pb2.SchedulePolicies(
        catchup=schedule_pb2.CatchupPolicy.ValueType(p.catchup),
        catchup_limit=p.catchup_limit,
        overlap=schedule_pb2.OverlapPolicy.ValueType(p.overlap),
        max_instances=p.max_instances,
    )
    out.misfire_grace.FromMicroseconds(p.misfire_grace_us)
    return out


def fire_out(f: core.FireRecord, *, workflow: bool = False) -> schedule_pb2.ScheduleFire:
    """A fire record; for a schedule starting workflows, `task_id` holds the workflow's id."""
    out = schedule_pb2.ScheduleFire(
        result=schedule_pb2.ScheduleFireResult.ValueType(f.result),
        task_id="" if workflow else f.task_id or "",
        workflow_id=(f.task_id or "") if workflow else "",
        task_state=task_pb2.TaskState.ValueType(0 if workflow else f.task_state or 0),
        manual=f.manual,
        missed_count=f.count,
        message=f.message or "",
    )
    out.fire_time.CopyFrom(_ts(f.fire_time))
    out.record_time.CopyFrom(_ts(f.recorded_at))
    if f.last_missed_at is not None:
        out.last_missed_time.CopyFrom(_ts(f.last_missed_at))
    if f.run_at is not None:
        out.run_time.CopyFrom(_ts(f.run_at))
    return out


def schedule_out(
    record: core.ScheduleRecord, last: core.FireRecord | None, *, now: int
) -> schedule_pb2.Schedule:
    out = schedule_pb2.Schedule(
        name=record.name,
        description=record.description,
        spec=spec_out(record.spec),
        policies=policies_out(record.policies),
        state=schedule_pb2.ScheduleState.ValueType(record.state),
        pause_note=record.pause_note or "",
    )
    if is_workflow(record.template):
        out.workflow.CopyFrom(workflow_target(record.template)[0])
    else:
        out.task.CopyFrom(task_pb2.Task.FromString(record.template))
    info = out.info
    if record.state is core.ScheduleState.ACTIVE and record.next_fire_at is not None:
        upcoming = [record.next_fire_at, *record.spec.upcoming(record.next_fire_at, NEXT_SHOWN - 1)]
        info.next_fire_times.extend(_ts(t) for t in upcoming)
    if last is not None:
        info.last_fire.CopyFrom(fire_out(last, workflow=is_workflow(record.template)))
    c = record.counts
    info.started_count, info.skipped_count = c.started, c.skipped
    info.missed_count, info.failed_count = c.missed, c.failed
    if record.buffered_at is not None:
        info.buffered_fire_time.CopyFrom(_ts(record.buffered_at))
    info.running_count = record.running
    out.create_time.CopyFrom(_ts(record.created_at))
    out.update_time.CopyFrom(_ts(record.updated_at))
    return out
