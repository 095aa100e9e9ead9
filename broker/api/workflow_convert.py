"""Protobuf ↔ domain conversion for workflows, their nodes and templates, in one place.

Each node's task goes through `convert.new_task`, the function CreateTask
uses, so a node gets exactly CreateTask's validation and defaults.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from google.protobuf import json_format, struct_pb2

from broker.api import convert
from broker.config import Settings
from broker.core import templates, validation, workflows
from broker.core.models import ParentOutcome
from broker.core.options import Defaults, TaskOptions
from broker.core.task_state import TaskState
from broker.core.validation import name as check_name
from broker.core.workflows import FailurePolicy, NewNode, NewWorkflow, Rule
from broker.errors import InvalidArgument
from broker.ids import new_ulid
from broker.store.workflow_reads import NodeRow, TemplateRow, WorkflowRecord
from taskyard.v1 import (
    task_pb2,
    task_service_pb2,
    worker_service_pb2,
    workflow_pb2,
)

MAX_DESCRIPTION = 1000


@dataclass(frozen=True, slots=True)
class NodeFactory:
    """What turns a node's Task into a NewTask: CreateTask's settings and defaults."""

    settings: Settings
    defaults: Defaults
    queue_options: Callable[[str], TaskOptions] | None = None

    def task(self, spec: task_pb2.Task, now: int, owner: str | None, where: str) -> Any:
        try:
            return convert.new_task(
                task_service_pb2.CreateTaskRequest(task=spec),
                now=now,
                settings=self.settings,
                defaults=self.defaults,
                queue_options=self.queue_options,
                owner=owner,
            )
        except InvalidArgument as error:
            raise InvalidArgument(f"{where}: {error.message}", reason=error.reason) from None


# --- Input ----------------------------------------------------------------------------------


def nodes_in(
    given: Sequence[workflow_pb2.WorkflowNode],
    *,
    workflow_id: str,
    factory: NodeFactory,
    now: int,
    owner: str | None,
    existing: Iterable[str] = (),
) -> list[NewNode]:
    """Check a graph (or an addition to one) and build its nodes; nothing is created yet."""
    graph = [(n.name, list(n.depends_on)) for n in given]
    workflows.check_graph(graph, existing=existing)
    out = []
    for index, n in enumerate(given):
        where = f"nodes[{index}] ({n.name})"
        parents = tuple(sorted(set(n.depends_on)))
        if n.join_spawned and not parents:
            raise InvalidArgument(
                f"{where} joins what its parents spawn, but has no parents",
                reason="INVALID_WORKFLOW",
            )
        task = factory.task(n.task, now, owner, f"{where}.task")
        task = replace(task, workflow_id=workflow_id, node=n.name, blocked=bool(parents))
        out.append(NewNode(task, parents, _rule(n.trigger_rule), n.join_spawned))
    return out


def _rule(value: int) -> Rule:
    return Rule(value) if value else Rule.ALL_SUCCEEDED


def new_workflow(
    spec: workflow_pb2.WorkflowSpec,
    *,
    factory: NodeFactory,
    now: int,
    owner: str | None,
    request_id: str | None,
    template: tuple[str, int, dict[str, Any]] | None = None,
) -> NewWorkflow:
    limits = factory.settings.limits
    if len(spec.name) > limits.max_string:
        raise InvalidArgument(
            f"name is {len(spec.name)} characters; the limit is {limits.max_string}",
            reason="INVALID_WORKFLOW",
        )
    labels = validation.labels(dict(spec.labels), limits) if spec.labels else None
    wf_id = new_ulid()
    nodes = nodes_in(spec.nodes, workflow_id=wf_id, factory=factory, now=now, owner=owner)
    return NewWorkflow(
        id=wf_id,
        name=spec.name,
        nodes=nodes,
        failure_policy=FailurePolicy(spec.failure_policy or FailurePolicy.CONTINUE),
        created_at=now,
        request_id=validation.request_id(request_id or "", limits),
        owner=owner,
        labels=json.dumps(labels, separators=(",", ":")) if labels else None,
        template_name=template[0] if template else None,
        template_version=template[1] if template else None,
        params=json.dumps(template[2], separators=(",", ":")) if template else None,
    )


# --- Output ---------------------------------------------------------------------------------


def node_out(
    n: NodeRow, out: workflow_pb2.WorkflowNodeInfo | None = None
) -> workflow_pb2.WorkflowNodeInfo:
    out = out if out is not None else workflow_pb2.WorkflowNodeInfo()
    out.name = n.name
    out.task_id = n.task_id
    out.type = n.type
    out.queue = n.queue
    out.state = task_pb2.TaskState.ValueType(n.state)
    out.depends_on.extend(n.parents)
    out.trigger_rule = workflow_pb2.TriggerRule.ValueType(n.rule)
    out.join_spawned = n.join_spawned
    if "/" in n.name:
        out.spawned_by = n.name.rsplit("/", 1)[0]
    out.attempt = n.attempt
    if n.error is not None:
        e = n.error
        out.error.CopyFrom(
            task_pb2.TaskError(
                type=e.type, message=e.message, details=e.details,
                non_retryable=e.non_retryable, attempt=n.error_attempt or 0,
            )
        )  # fmt: skip
    if n.started_at is not None:
        convert.set_timestamp(out.start_time, n.started_at)
    if n.finished_at is not None:
        convert.set_timestamp(out.finish_time, n.finished_at)
    return out


def workflow_out(r: WorkflowRecord, nodes: Iterable[NodeRow] = ()) -> workflow_pb2.Workflow:
    out = workflow_pb2.Workflow(
        id=r.id,
        name=r.name,
        state=workflow_pb2.WorkflowState.ValueType(r.state),
        failure_policy=workflow_pb2.FailurePolicy.ValueType(r.failure_policy),
        template_name=r.template_name or "",
        template_version=r.template_version or 0,
        generation=r.generation,
        request_id=r.request_id or "",
        counts=workflow_pb2.WorkflowNodeCounts(
            total=r.nodes_total,
            unfinished=r.nodes_open,
            failed=r.nodes_failed,
            cancelled=r.nodes_cancelled,
        ),
    )
    if r.labels:
        out.labels.update(json.loads(r.labels))
    if r.params:
        out.params.update(json.loads(r.params))
    convert.set_timestamp(out.create_time, r.created_at)
    if r.finished_at is not None:
        convert.set_timestamp(out.finish_time, r.finished_at)
    for n in nodes:
        node_out(n, out.nodes.add())
    return out


def created_out(wf: NewWorkflow, leased: Iterable[str]) -> workflow_pb2.Workflow:
    """The response for a workflow just created, built without reading it back.

    `leased` are the roots handed straight to an idle worker (RUNNING already).
    """
    running = set(leased)
    out = workflow_pb2.Workflow(
        id=wf.id,
        name=wf.name,
        state=workflow_pb2.WORKFLOW_STATE_RUNNING,
        failure_policy=workflow_pb2.FailurePolicy.ValueType(wf.failure_policy),
        template_name=wf.template_name or "",
        template_version=wf.template_version or 0,
        request_id=wf.request_id or "",
        counts=workflow_pb2.WorkflowNodeCounts(total=len(wf.nodes), unfinished=len(wf.nodes)),
    )
    if wf.labels:
        out.labels.update(json.loads(wf.labels))
    if wf.params:
        out.params.update(json.loads(wf.params))
    convert.set_timestamp(out.create_time, wf.created_at)
    add = out.nodes.add
    for n in wf.nodes:
        t = n.task
        state = TaskState.RUNNING if t.id in running else t.initial_state
        node = add(
            name=n.name,
            task_id=t.id,
            type=t.type,
            queue=t.queue,
            state=task_pb2.TaskState.ValueType(state),
            trigger_rule=workflow_pb2.TriggerRule.ValueType(n.rule),
            join_spawned=n.join_spawned,
            attempt=1 if t.id in running else 0,
        )
        node.depends_on.extend(n.parents)
        if t.id in running:
            convert.set_timestamp(node.start_time, wf.created_at)
    return out


def parent_out(p: ParentOutcome) -> worker_service_pb2.ParentOutcome:
    return convert.parent_outcome(p)


# --- Templates ------------------------------------------------------------------------------


def _params(t: workflow_pb2.WorkflowTemplate) -> list[templates.Param]:
    return [
        templates.Param(
            name=p.name,
            type=p.type,
            default=json_format.MessageToDict(p.default_value)
            if p.HasField("default_value")
            else None,
            has_default=p.HasField("default_value"),
            required=p.required,
        )
        for p in t.params
    ]


def _fields(task: task_pb2.Task) -> list[Any]:
    """The parts of a node's task that may hold placeholders, as JSON values."""
    out: list[Any] = [task.queue, task.concurrency_key, dict(task.labels)]
    if task.payload.WhichOneof("data") == "json":
        out.append(json_format.MessageToDict(task.payload.json))
    return out


def template_in(t: workflow_pb2.WorkflowTemplate, settings: Settings) -> tuple[bytes, str]:
    """A template to register, checked: its serialized form and the hash that versions it."""
    check_name("template.name", t.name, settings.limits, reason="INVALID_TEMPLATE")
    if len(t.description) > MAX_DESCRIPTION:
        raise InvalidArgument(
            f"template.description is {len(t.description)} characters; the limit is "
            f"{MAX_DESCRIPTION}",
            reason="INVALID_TEMPLATE",
        )
    params = _params(t)
    templates.check_params(params)
    declared = {p.name for p in params}
    workflows.check_graph([(n.name, list(n.depends_on)) for n in t.spec.nodes])
    for index, n in enumerate(t.spec.nodes):
        for value in _fields(n.task):
            unknown = sorted(set(templates.placeholders(value)) - declared)
            if unknown:
                raise InvalidArgument(
                    f"nodes[{index}] ({n.name}) uses {{{{ params.{unknown[0]} }}}}, which the "
                    "template does not declare",
                    reason="INVALID_TEMPLATE",
                )
    kept = workflow_pb2.WorkflowTemplate()
    kept.CopyFrom(t)
    kept.ClearField("version")
    kept.ClearField("create_time")
    data = kept.SerializeToString(deterministic=True)
    return data, hashlib.sha256(data).hexdigest()


def template_out(row: TemplateRow) -> workflow_pb2.WorkflowTemplate:
    out = workflow_pb2.WorkflowTemplate.FromString(row.spec)
    out.version = row.version
    convert.set_timestamp(out.create_time, row.created_at)
    return out


def instantiate(
    t: workflow_pb2.WorkflowTemplate, given: struct_pb2.Struct
) -> tuple[workflow_pb2.WorkflowSpec, dict[str, Any]]:
    """The template's spec with the start's parameters substituted, and those parameters."""
    values = templates.resolve(_params(t), json_format.MessageToDict(given))
    spec = workflow_pb2.WorkflowSpec()
    spec.CopyFrom(t.spec)
    if not spec.name:
        spec.name = t.name
    for node in spec.nodes:
        task = node.task
        task.queue = _text(templates.substitute(task.queue, values))
        task.concurrency_key = _text(templates.substitute(task.concurrency_key, values))
        labels = templates.substitute(dict(task.labels), values)
        task.labels.clear()
        task.labels.update({k: _text(v) for k, v in labels.items()})
        if task.payload.WhichOneof("data") == "json":
            data = templates.substitute(json_format.MessageToDict(task.payload.json), values)
            value = struct_pb2.Value()
            json_format.ParseDict(data, value)
            task.payload.json.CopyFrom(value)
    return spec, values


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
