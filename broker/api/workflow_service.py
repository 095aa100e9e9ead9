"""WorkflowService: create, extend, read, watch, cancel and retry workflows; spawn; templates.

The servicer checks requests and converts them (api/workflow_convert.py);
every write is a committer op (engine/workflow_ops.py), and what a node's
end does to its workflow happens in the transaction that ends it
(engine/flows.py), not here.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from broker.api import convert
from broker.api import workflow_convert as wc
from broker.api.runtime import Runtime
from broker.api.status import maps_errors
from broker.core import validation
from broker.core.queues import DEFAULT_QUEUE
from broker.core.task_state import TaskState
from broker.core.workflows import MAX_SPAWN, WorkflowState, node_name
from broker.engine.events import TaskEvent
from broker.engine.workflow_ops import (
    AddNodes,
    CancelWorkflow,
    CreateWorkflow,
    Refusal,
    RetryWorkflow,
    SaveTemplate,
    SpawnNodes,
)
from broker.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    ShuttingDown,
    TaskyardError,
)
from broker.security import access
from broker.store import tasks
from broker.store import workflow_reads as reads
from broker.store.workflow_reads import NodeRow, WorkflowRecord
from taskyard.v1 import workflow_pb2, workflow_service_pb2, workflow_service_pb2_grpc

Context = Any  # grpc.aio.ServicerContext; untyped in the generated stubs
pb = workflow_service_pb2
WATCH_COALESCE_S = 0.05  # changes this close together go out as one message
CLOCK_MARGIN_US = 2_000_000  # replicas' clocks may disagree this much (NTP keeps them close)

_REFUSALS: dict[str, type[TaskyardError]] = {
    "QUEUE_FULL": ResourceExhausted,
    "WORKFLOW_TOO_LARGE": ResourceExhausted,
    "WORKFLOW_NOT_FOUND": NotFound,
    "WORKFLOW_FINISHED": FailedPrecondition,
    "WORKFLOW_NOT_RETRYABLE": FailedPrecondition,
    "LEASE_LOST": FailedPrecondition,
    "NOT_A_WORKFLOW_NODE": FailedPrecondition,
}


def _raise(refusal: Refusal | None) -> None:
    if refusal is not None:
        kind = _REFUSALS.get(refusal.reason, InvalidArgument)
        raise kind(refusal.message, reason=refusal.reason)


def _workflow_id(value: str) -> str:
    if not value:
        raise InvalidArgument("id is required", reason="INVALID_ID")
    try:
        return validation.task_id(value)
    except InvalidArgument:
        raise InvalidArgument(
            f"id {value[:40]!r} is not a workflow id (26 characters of Crockford base32)",
            reason="INVALID_ID",
        ) from None


class WorkflowService(workflow_service_pb2_grpc.WorkflowServiceServicer):
    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime
        self._factory = wc.NodeFactory(runtime.settings, runtime.defaults, runtime.queues.options)

    def _now(self) -> int:
        return self._rt.clock.now_us()

    # --- Reading --------------------------------------------------------------------------

    async def _record(
        self, wf_id: str, *, nodes: bool = True
    ) -> tuple[WorkflowRecord, list[NodeRow]]:
        async with self._rt.db.reader.connect() as conn:
            record = await reads.get_workflow(conn, wf_id)
            _check_owner(record, wf_id)
            assert record is not None
            rows = await reads.nodes_of(conn, wf_id) if nodes else []
        return record, rows

    async def _out(self, wf_id: str) -> workflow_pb2.Workflow:
        record, rows = await self._record(wf_id)
        return wc.workflow_out(record, rows)

    # --- Creating -------------------------------------------------------------------------

    @maps_errors
    async def CreateWorkflow(
        self, request: pb.CreateWorkflowRequest, context: Context
    ) -> pb.CreateWorkflowResponse:
        if self._rt.shutting_down:
            raise ShuttingDown()
        now = self._now()
        source = request.WhichOneof("source")
        template: tuple[str, int, dict[str, Any]] | None = None
        if source == "template":
            ref = request.template
            found = await self._template(ref.name, ref.version)
            spec, values = wc.instantiate(found, ref.params)
            template = (found.name, found.version, values)
        elif source == "spec":
            spec = request.spec
        else:
            raise InvalidArgument(
                "set spec (the graph) or template (a registered one)", reason="INVALID_WORKFLOW"
            )
        _check_queues([n.task.queue for n in spec.nodes])
        wf = wc.new_workflow(
            spec,
            factory=self._factory,
            now=now,
            owner=access.owner_of_new_task(),
            request_id=request.request_id,
            template=template,
        )
        done = await self._rt.committer.submit(CreateWorkflow(wf))
        _raise(done.refusal)
        if done.existing:  # a repeated request_id: the first request's workflow
            return pb.CreateWorkflowResponse(workflow=await self._out(done.workflow_id))
        return pb.CreateWorkflowResponse(workflow=wc.created_out(wf, done.leased))

    @maps_errors
    async def AddWorkflowNodes(
        self, request: pb.AddWorkflowNodesRequest, context: Context
    ) -> pb.AddWorkflowNodesResponse:
        if self._rt.shutting_down:
            raise ShuttingDown()
        wf_id = _workflow_id(request.workflow_id)
        record, rows = await self._record(wf_id)
        if record.finished_at is not None:
            raise FailedPrecondition(
                f"workflow {wf_id} has finished (every node did)", reason="WORKFLOW_FINISHED"
            )
        _check_queues([n.task.queue for n in request.nodes])
        nodes = wc.nodes_in(
            request.nodes,
            workflow_id=wf_id,
            factory=self._factory,
            now=self._now(),
            owner=access.owner_of_new_task(),
            existing=[r.name for r in rows],
        )
        done = await self._rt.committer.submit(AddNodes(wf_id, nodes))
        _raise(done.refusal)
        async with self._rt.db.reader.connect() as conn:
            added = await reads.nodes_of(conn, wf_id, done.task_ids)
        return pb.AddWorkflowNodesResponse(nodes=[wc.node_out(n) for n in added])

    # --- Reading --------------------------------------------------------------------------

    @maps_errors
    async def GetWorkflow(
        self, request: pb.GetWorkflowRequest, context: Context
    ) -> pb.GetWorkflowResponse:
        return pb.GetWorkflowResponse(workflow=await self._out(_workflow_id(request.id)))

    @maps_errors
    async def ListWorkflows(
        self, request: pb.ListWorkflowsRequest, context: Context
    ) -> pb.ListWorkflowsResponse:
        limit = validation.page_size(request.page_size, self._rt.settings.limits)
        state = _state_filter(request.state)
        template = request.template_name or None
        fingerprint = convert.filter_fingerprint("workflows", state, template)
        after = convert.parse_page_token(request.page_token, fingerprint)
        async with self._rt.db.reader.connect() as conn:
            records = await reads.list_workflows(
                conn,
                state=state,
                template_name=template,
                owner=access.owner_filter(),
                before_id=after,
                limit=limit + 1,
            )
        response = pb.ListWorkflowsResponse(workflows=[wc.workflow_out(r) for r in records[:limit]])
        if len(records) > limit:
            response.next_page_token = convert.page_token(records[limit - 1].id, fingerprint)
        return response

    @maps_errors
    async def WatchWorkflow(
        self, request: pb.WatchWorkflowRequest, context: Context
    ) -> AsyncIterator[pb.WatchWorkflowResponse]:
        wf_id = _workflow_id(request.id)
        events = self._rt.events
        queue = events.subscribe(wf_id)  # before the first read: nothing slips in between
        try:
            since = self._now() - CLOCK_MARGIN_US
            record, rows = await self._record(wf_id)
            yield pb.WatchWorkflowResponse(workflow=wc.workflow_out(record, rows))
            seen = {n.task_id: _fingerprint(n) for n in rows}
            summary = _summary(record)
            while record.finished_at is None:
                await self._next_change(queue)
                # Only nodes written lately (replicas' clocks may differ by the margin).
                read_at = self._now()
                async with self._rt.db.reader.connect() as conn:
                    found = await reads.get_workflow(conn, wf_id)
                    if found is None:
                        return  # purged meanwhile
                    record = found
                    rows = await reads.changed_nodes(conn, wf_id, since)
                since = read_at - CLOCK_MARGIN_US
                changed = [n for n in rows if seen.get(n.task_id) != _fingerprint(n)]
                if changed or _summary(record) != summary:
                    seen |= {n.task_id: _fingerprint(n) for n in changed}
                    summary = _summary(record)
                    yield pb.WatchWorkflowResponse(workflow=wc.workflow_out(record, changed))
        finally:
            events.unsubscribe(wf_id, queue)

    async def _next_change(self, queue: asyncio.Queue[TaskEvent]) -> None:
        """Until a node changed here (then a moment more, to coalesce), or the poll interval
        passed (changes made on other replicas)."""
        try:
            await asyncio.wait_for(queue.get(), self._rt.settings.promote_poll_s)
        except TimeoutError:
            return
        await asyncio.sleep(WATCH_COALESCE_S)  # let a burst of changes go out as one message
        while not queue.empty():
            queue.get_nowait()

    # --- Control --------------------------------------------------------------------------

    @maps_errors
    async def CancelWorkflow(
        self, request: pb.CancelWorkflowRequest, context: Context
    ) -> pb.CancelWorkflowResponse:
        wf_id = _workflow_id(request.id)
        if len(request.reason) > 1000:
            raise InvalidArgument("reason is over 1000 characters", reason="INVALID_ARGUMENT")
        await self._record(wf_id, nodes=False)  # ownership
        result = await self._rt.committer.submit(CancelWorkflow(wf_id, request.reason))
        _raise(result if isinstance(result, Refusal) else None)
        return pb.CancelWorkflowResponse(workflow=await self._out(wf_id))

    @maps_errors
    async def RetryWorkflow(
        self, request: pb.RetryWorkflowRequest, context: Context
    ) -> pb.RetryWorkflowResponse:
        wf_id = _workflow_id(request.id)
        result = await self._rt.committer.submit(RetryWorkflow(wf_id))
        _raise(result if isinstance(result, Refusal) else None)
        return pb.RetryWorkflowResponse(workflow=await self._out(wf_id))

    # --- Workers: spawning and parents ----------------------------------------------------

    @maps_errors
    async def SpawnNodes(
        self, request: pb.SpawnNodesRequest, context: Context
    ) -> pb.SpawnNodesResponse:
        if self._rt.shutting_down:
            raise ShuttingDown()
        task_id = validation.task_id(request.task_id)
        lease = _lease(request.lease_id)
        count = len(request.children)
        if not 1 <= count <= MAX_SPAWN:
            raise InvalidArgument(
                f"children holds {count} items; spawn 1 to {MAX_SPAWN} per call",
                reason="BATCH_TOO_LARGE",
            )
        now, owner = self._now(), access.owner_of_new_task()
        children = []
        keys: set[str] = set()
        for index, child in enumerate(request.children):
            key = node_name(child.key, f"children[{index}].key")
            if key in keys:
                raise InvalidArgument(
                    f"children[{index}].key {key!r} is given twice", reason="INVALID_WORKFLOW"
                )
            keys.add(key)
            new = self._factory.task(child.task, now, owner, f"children[{index}].task")
            children.append((key, new))
        spawned = await self._rt.committer.submit(SpawnNodes(task_id, lease, children))
        _raise(spawned.refusal)
        async with self._rt.db.reader.connect() as conn:
            rows = {n.task_id: n for n in await reads.nodes_of(conn, "", spawned.task_ids)}
        return pb.SpawnNodesResponse(nodes=[wc.node_out(rows[i]) for i in spawned.task_ids])

    @maps_errors
    async def ListNodeParents(
        self, request: pb.ListNodeParentsRequest, context: Context
    ) -> pb.ListNodeParentsResponse:
        task_id = validation.task_id(request.task_id)
        lease = _lease(request.lease_id)
        limit = validation.page_size(request.page_size, self._rt.settings.limits)
        fingerprint = convert.filter_fingerprint("parents", task_id)
        after = convert.parse_page_token(request.page_token, fingerprint)
        async with self._rt.db.reader.connect() as conn:
            await _check_lease(conn, task_id, lease)
            page, last = await reads.list_parents(
                conn,
                task_id,
                after=after,
                limit=limit,
                budget=self._rt.settings.limits.max_payload_bytes,
            )
        response = pb.ListNodeParentsResponse(parents=[wc.parent_out(p) for p in page])
        if last is not None:
            response.next_page_token = convert.page_token(last, fingerprint)
        return response

    # --- Templates ------------------------------------------------------------------------

    async def _template(self, name: str, version: int) -> workflow_pb2.WorkflowTemplate:
        if version < 0:
            raise InvalidArgument(f"version must be 0 (latest) or more, got {version}")
        async with self._rt.db.reader.connect() as conn:
            row = await reads.get_template(conn, name, version)
        if row is None:
            which = f"version {version} of " if version else ""
            raise NotFound(
                f"no {which}template named {name!r}; register it with CreateWorkflowTemplate",
                reason="TEMPLATE_NOT_FOUND",
            )
        return wc.template_out(row)

    @maps_errors
    async def CreateWorkflowTemplate(
        self, request: pb.CreateWorkflowTemplateRequest, context: Context
    ) -> pb.CreateWorkflowTemplateResponse:
        data, digest = wc.template_in(request.template, self._rt.settings)
        op = SaveTemplate(request.template.name, data, digest)
        row, created = await self._rt.committer.submit(op)
        return pb.CreateWorkflowTemplateResponse(template=wc.template_out(row), created=created)

    @maps_errors
    async def GetWorkflowTemplate(
        self, request: pb.GetWorkflowTemplateRequest, context: Context
    ) -> pb.GetWorkflowTemplateResponse:
        found = await self._template(request.name, request.version)
        return pb.GetWorkflowTemplateResponse(template=found)

    @maps_errors
    async def ListWorkflowTemplates(
        self, request: pb.ListWorkflowTemplatesRequest, context: Context
    ) -> pb.ListWorkflowTemplatesResponse:
        limit = validation.page_size(request.page_size, self._rt.settings.limits)
        name = request.name or None
        fingerprint = convert.filter_fingerprint("templates", name)
        token = convert.parse_page_token(request.page_token, fingerprint)
        after = None
        if token is not None:
            last_name, _, version = token.rpartition(" ")
            after = (last_name, int(version) if version.isdigit() else 0)
        async with self._rt.db.reader.connect() as conn:
            rows = await reads.list_templates(conn, name=name, after=after, limit=limit + 1)
        response = pb.ListWorkflowTemplatesResponse(
            templates=[wc.template_out(r) for r in rows[:limit]]
        )
        if len(rows) > limit:
            last = rows[limit - 1]
            response.next_page_token = convert.page_token(
                f"{last.name} {last.version}", fingerprint
            )
        return response


def _check_owner(record: WorkflowRecord | None, wf_id: str) -> None:
    """Submitters act on their own workflows only; an unknown id is refused the same way."""
    grant = access.current()
    mine = record is not None and grant is not None and record.owner == grant.principal.name
    if grant is not None and grant.own_only and not mine:
        raise PermissionDenied(
            f"{grant.principal.describe()} may act only on workflows it created; "
            f"{wf_id} is not one",
            reason="NOT_WORKFLOW_OWNER",
        )
    if record is None:
        raise NotFound(
            f"no workflow with id {wf_id!r}; it may never have existed or been purged",
            reason="WORKFLOW_NOT_FOUND",
        )


def _check_queues(queues: list[str]) -> None:
    """An identity limited to some queues creates nodes only in them (templates' queues are
    known only here, once instantiated; the interceptor checks what a request states)."""
    grant = access.current()
    allowed = grant.principal.queues if grant is not None else None
    if allowed is None or grant is None:
        return
    outside = sorted({q or DEFAULT_QUEUE for q in queues} - allowed)
    if outside:
        raise PermissionDenied(
            f"{grant.principal.describe()} may not use queue {', '.join(map(repr, outside))}",
            reason="QUEUE_NOT_ALLOWED",
        )


def _lease(text: str) -> int:
    lease = convert.lease_id(text)
    if lease is None:
        raise FailedPrecondition(
            "lease_id is not a lease this broker issued; pass the Assignment's lease_id",
            reason="LEASE_LOST",
        )
    return lease


async def _check_lease(conn: Any, task_id: str, lease: int) -> None:
    record = await tasks.get_task(conn, task_id, full=False)
    if record is None or record.state is not TaskState.RUNNING or record.lease_id != lease:
        raise FailedPrecondition(
            f"the lease on task {task_id} is no longer held", reason="LEASE_LOST"
        )


def _state_filter(value: int) -> WorkflowState | None:
    if value == 0:
        return None
    try:
        return WorkflowState(value)
    except ValueError:
        raise InvalidArgument(
            f"state {value} is not a WorkflowState", reason="INVALID_STATE"
        ) from None


def _fingerprint(n: NodeRow) -> tuple[object, ...]:
    return (n.state, n.attempt, n.started_at, n.finished_at)


def _summary(r: WorkflowRecord) -> tuple[object, ...]:
    return (r.state, r.nodes_total, r.nodes_open, r.finished_at, r.generation)
