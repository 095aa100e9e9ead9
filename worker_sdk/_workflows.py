"""Workflows in the SDK: a builder for DAGs, Celery-style chain/group/chord, and typed results.

A `Workflow` is built node by node, each node a task and the nodes it waits
for; `chain`, `group` and `chord` build the common shapes and compile to the
same graph. The broker runs it to the end on its own (docs/workflows.md).

    wf = Workflow("etl", failure_policy="fail_fast")
    extract = wf.node("extract", "etl.extract", {"day": "2026-12-01"})
    parts = [wf.node(f"t{i}", "etl.transform", i, after=[extract]) for i in range(3)]
    wf.node("load", "etl.load", after=parts)
    info = await client.create_workflow(wf)

    # The same shape, Celery-style: chord(header, body) after a first task.
    flow = chain(TaskSpec("etl.extract"), chord([TaskSpec("etl.transform", i) for i in
                 range(3)], TaskSpec("etl.load")))
    info = await client.create_workflow(flow.to_workflow("etl"))
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from google.protobuf import json_format, struct_pb2

from taskyard.v1 import task_pb2, workflow_pb2, workflow_service_pb2
from worker_sdk._payload import from_payload
from worker_sdk._requests import create_request
from worker_sdk._types import TaskError, TaskSpec, TaskState

_RULES = ("all_succeeded", "all_finished", "any_failed")
_POLICIES = ("continue", "fail_fast")


class WorkflowState(StrEnum):
    """Where a workflow is in its life; see ``taskyard.v1.WorkflowState``."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @classmethod
    def from_proto(cls, value: int) -> WorkflowState:
        return list(cls)[value - 1]

    def to_proto(self) -> workflow_pb2.WorkflowState.ValueType:
        return workflow_pb2.WorkflowState.ValueType(list(WorkflowState).index(self) + 1)


def _time(message: Any, name: str) -> datetime | None:
    if not message.HasField(name):
        return None
    ts = getattr(message, name)
    return datetime.fromtimestamp(ts.seconds + ts.nanos / 1e9, tz=UTC)


def _error(message: Any) -> TaskError | None:
    if not message.HasField("error"):
        return None
    e = message.error
    return TaskError(e.type, e.message, e.details, e.non_retryable, e.attempt)


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """One node of a workflow as it stands (see ``Client.get_workflow``).

    Attributes:
        name: The node's name (``spawner/key`` for spawned children).
        task_id: Its task (``Client.get`` shows the task's result).
        state: Its task's state; ``blocked`` while it waits for parents,
            ``skipped`` when its trigger rule could no longer hold.
        depends_on: Its parents, by name.
        trigger_rule: "all_succeeded", "all_finished" or "any_failed".
        error: The task's last error (for a skipped node: why).
    """

    name: str
    task_id: str
    type: str
    queue: str
    state: TaskState
    depends_on: tuple[str, ...]
    trigger_rule: str
    join_spawned: bool
    spawned_by: str
    attempt: int
    error: TaskError | None
    start_time: datetime | None
    finish_time: datetime | None

    @classmethod
    def from_proto(cls, n: workflow_pb2.WorkflowNodeInfo) -> NodeInfo:
        return cls(
            name=n.name,
            task_id=n.task_id,
            type=n.type,
            queue=n.queue,
            state=TaskState.from_proto(n.state),
            depends_on=tuple(n.depends_on),
            trigger_rule=_RULES[(n.trigger_rule or 1) - 1],
            join_spawned=n.join_spawned,
            spawned_by=n.spawned_by,
            attempt=n.attempt,
            error=_error(n),
            start_time=_time(n, "start_time"),
            finish_time=_time(n, "finish_time"),
        )


@dataclass(frozen=True, slots=True)
class WorkflowInfo:
    """A workflow as the broker reports it (see ``Client.get_workflow``).

    Attributes:
        nodes: Every node (get, create, cancel, retry, the first watch
            message), the changed ones (later watch messages), or none (list).
        finish_time: When its last node finished; None while one is unfinished.
        unfinished: How many nodes have not finished.
    """

    id: str
    name: str
    state: WorkflowState
    failure_policy: str
    nodes: tuple[NodeInfo, ...]
    labels: dict[str, str]
    create_time: datetime | None
    finish_time: datetime | None
    template_name: str
    template_version: int
    params: dict[str, Any]
    generation: int
    total: int
    unfinished: int
    failed: int
    cancelled: int
    request_id: str

    @property
    def done(self) -> bool:
        """Every node finished."""
        return self.finish_time is not None

    def node(self, name: str) -> NodeInfo:
        """The node of this name (in the nodes this value holds)."""
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(f"no node named {name!r} here; nodes: {[n.name for n in self.nodes]}")

    @classmethod
    def from_proto(cls, w: workflow_pb2.Workflow) -> WorkflowInfo:
        return cls(
            id=w.id,
            name=w.name,
            state=WorkflowState.from_proto(w.state),
            failure_policy=_POLICIES[(w.failure_policy or 1) - 1],
            nodes=tuple(NodeInfo.from_proto(n) for n in w.nodes),
            labels=dict(w.labels),
            create_time=_time(w, "create_time"),
            finish_time=_time(w, "finish_time"),
            template_name=w.template_name,
            template_version=w.template_version,
            params=json_format.MessageToDict(w.params),
            generation=w.generation,
            total=w.counts.total,
            unfinished=w.counts.unfinished,
            failed=w.counts.failed,
            cancelled=w.counts.cancelled,
            request_id=w.request_id,
        )


@dataclass(frozen=True, slots=True)
class TemplateParam:
    """A template parameter: its JSON type ("" for any), default, and whether it is required."""

    name: str
    type: str = ""
    default: Any = None
    required: bool = False
    description: str = ""
    has_default: bool = False

    def to_proto(self) -> workflow_pb2.WorkflowTemplateParam:
        out = workflow_pb2.WorkflowTemplateParam(
            name=self.name, type=self.type, required=self.required, description=self.description
        )
        if self.has_default or self.default is not None:
            json_format.ParseDict(self.default, out.default_value)
        return out


@dataclass(frozen=True, slots=True)
class WorkflowTemplate:
    """One version of a registered template (see ``Client.register_template``)."""

    name: str
    version: int
    description: str
    params: tuple[TemplateParam, ...]
    nodes: tuple[str, ...]
    create_time: datetime | None

    @classmethod
    def from_proto(cls, t: workflow_pb2.WorkflowTemplate) -> WorkflowTemplate:
        params = tuple(
            TemplateParam(
                p.name,
                p.type,
                json_format.MessageToDict(p.default_value) if p.HasField("default_value") else None,
                p.required,
                p.description,
                p.HasField("default_value"),
            )
            for p in t.params
        )
        nodes = tuple(n.name for n in t.spec.nodes)
        return cls(t.name, t.version, t.description, params, nodes, _time(t, "create_time"))


@dataclass(frozen=True, slots=True)
class TemplateStart:
    """A registered template and its parameters: what a schedule starts at each fire
    (``Client.create_schedule(name, TemplateStart("etl", {"day": "today"}), cron=...)``).

    ``version`` 0 means the latest at the time the schedule is created or updated.
    """

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    version: int = 0

    def to_proto(self) -> workflow_pb2.WorkflowTemplateRef:
        return workflow_pb2.WorkflowTemplateRef(
            name=self.name, version=self.version, params=params_struct(self.params)
        )

    @classmethod
    def from_proto(cls, ref: workflow_pb2.WorkflowTemplateRef) -> TemplateStart:
        return cls(ref.name, json_format.MessageToDict(ref.params), ref.version)


# --- Building a graph -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Node:
    """A node of a `Workflow` being built; pass it in another node's ``after``."""

    name: str


def _choice(value: str, names: tuple[str, ...], what: str) -> int:
    if value not in names:
        raise ValueError(f"{what} must be one of {', '.join(names)}, got {value!r}")
    return names.index(value) + 1


@dataclass
class Workflow:
    """A graph of tasks to create in one go (``Client.create_workflow``).

    Args:
        name: A display name.
        failure_policy: "continue" (independent branches finish; the default)
            or "fail_fast" (the first failure cancels the rest).
        labels: String metadata.
    """

    name: str = ""
    failure_policy: str = "continue"
    labels: dict[str, str] = field(default_factory=dict)
    _nodes: list[workflow_pb2.WorkflowNode] = field(default_factory=list)

    def node(
        self,
        name: str,
        type: str,
        payload: Any = None,
        *,
        after: Iterable[Node | str] = (),
        trigger_rule: str = "all_succeeded",
        join_spawned: bool = False,
        **options: Any,
    ) -> Node:
        """Add a node running a task of ``type``; returns it, to name in ``after``.

        Args:
            name: Unique in the workflow: letters, digits and _ . : -.
            type: The task type.
            payload: The task's input.
            after: The nodes it waits for (none: it starts at once).
            trigger_rule: "all_succeeded" (default), "all_finished" or "any_failed".
            join_spawned: Also wait for every child its parents spawn.
            **options: As for ``Client.submit``: queue, priority, labels,
                max_attempts, retry_policy, timeouts, concurrency_key.
        """
        return self.add(
            name,
            TaskSpec(type, payload, **options),
            after=after,
            trigger_rule=trigger_rule,
            join_spawned=join_spawned,
        )

    def add(
        self,
        name: str,
        task: TaskSpec | Any,
        *,
        after: Iterable[Node | str] = (),
        trigger_rule: str = "all_succeeded",
        join_spawned: bool = False,
    ) -> Node:
        """Add a node running ``task``: a `TaskSpec`, or a typed task's call
        (``resize.call(path="a.png")``, checked against its signature); see `node`."""
        task = _spec(task)
        if task.request_id is not None:
            raise ValueError("a node's task takes no request_id; give create_workflow one")
        message = workflow_pb2.WorkflowNode(
            name=name,
            task=_task(task),
            depends_on=[a.name if isinstance(a, Node) else a for a in after],
            trigger_rule=workflow_pb2.TriggerRule.ValueType(
                _choice(trigger_rule, _RULES, "trigger_rule")
            ),
            join_spawned=join_spawned,
        )
        self._nodes.append(message)
        return Node(name)

    @property
    def nodes(self) -> list[str]:
        return [n.name for n in self._nodes]

    def to_proto(self) -> workflow_pb2.WorkflowSpec:
        return workflow_pb2.WorkflowSpec(
            name=self.name,
            nodes=self._nodes,
            failure_policy=workflow_pb2.FailurePolicy.ValueType(
                _choice(self.failure_policy, _POLICIES, "failure_policy")
            ),
            labels=self.labels,
        )


def _task(spec: TaskSpec) -> task_pb2.Task:
    return create_request(spec).task


def _spec(task: Any) -> TaskSpec:
    """A TaskSpec, or the spec of a typed task's `TaskCall` (kept duck-typed: the typed
    SDK, and pydantic with it, load only for applications that use them)."""
    if isinstance(task, TaskSpec):
        return task
    spec = getattr(task, "spec", None)
    if not isinstance(spec, TaskSpec):
        raise TypeError(f"a node runs a TaskSpec or a typed task's call, not {task!r}")
    return spec


# --- Celery-style canvas --------------------------------------------------------------------


class Canvas:
    """A shape of tasks (`chain`, `group`, `chord`) that compiles to a `Workflow`."""

    def to_workflow(self, name: str = "", *, failure_policy: str = "continue") -> Workflow:
        """The graph: node names follow positions ("0", "1.0", …)."""
        wf = Workflow(name, failure_policy)
        self._build(wf, "", [])
        return wf

    def _build(self, wf: Workflow, prefix: str, after: list[Node]) -> list[Node]:
        raise NotImplementedError


Item = TaskSpec | Canvas | Any  # Any: a typed task's TaskCall


def _position(prefix: str, index: int) -> str:
    return f"{prefix}.{index}" if prefix else str(index)


def _build(item: Item, wf: Workflow, position: str, after: list[Node]) -> list[Node]:
    """Add `item` at `position`; return its last nodes (what comes next waits for)."""
    if isinstance(item, Canvas):
        return item._build(wf, position, after)
    return [wf.add(position or "0", item, after=after)]


class _Chain(Canvas):
    def __init__(self, items: Sequence[Item]) -> None:
        self.items = list(items)

    def _build(self, wf: Workflow, prefix: str, after: list[Node]) -> list[Node]:
        for index, item in enumerate(self.items):
            after = _build(item, wf, _position(prefix, index), after)
        return after


class _Group(Canvas):
    def __init__(self, items: Sequence[Item]) -> None:
        self.items = list(items)

    def _build(self, wf: Workflow, prefix: str, after: list[Node]) -> list[Node]:
        ends: list[Node] = []
        for index, item in enumerate(self.items):
            ends += _build(item, wf, _position(prefix, index), after)
        return ends


def chain(*items: Item) -> Canvas:
    """Run items one after another; each waits for the previous one's nodes to succeed
    and sees their results as its parents'. Celery's ``chain`` (``a | b``)."""
    return _Chain(items)


def group(*items: Item) -> Canvas:
    """Run items side by side. Celery's ``group``."""
    return _Group(items)


def chord(header: Iterable[Item], body: Item) -> Canvas:
    """Run the header items side by side, then ``body`` once all of them succeeded, with all
    their results as its parents'. Celery's ``chord``."""
    return _Chain([_Group(list(header)), body])


# --- A node's view of its parents (worker side) ---------------------------------------------


@dataclass(frozen=True, slots=True)
class ParentResult:
    """How one parent of a running node ended.

    Attributes:
        node: The parent's name.
        state: SUCCEEDED, or for "all_finished"/"any_failed" nodes any final state.
        result: Its result (None when it did not succeed, or when ``omitted``).
        omitted: The result did not fit the assignment (fetch_parents gets it).
    """

    node: str
    task_id: str
    state: TaskState
    result: Any
    error: TaskError | None
    omitted: bool = False

    @classmethod
    def from_proto(cls, p: Any) -> ParentResult:
        result = from_payload(p.result) if p.HasField("result") else None
        return cls(
            p.node, p.task_id, TaskState.from_proto(p.state), result, _error(p), p.result_omitted
        )


def params_struct(params: dict[str, Any] | None) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    if params:
        json_format.ParseDict(params, out)
    return out


def spawned_node(key: str, task: TaskSpec | Any) -> workflow_service_pb2.SpawnedNode:
    task = _spec(task)
    if task.request_id is not None:
        raise ValueError("a spawned task takes no request_id; its key makes the spawn idempotent")
    return workflow_service_pb2.SpawnedNode(key=key, task=_task(task))
