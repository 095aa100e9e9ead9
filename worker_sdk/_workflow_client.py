"""The WorkflowService methods `Client` gets from the mixin below; `SyncClient` derives its own."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Any

import grpc

from taskyard.v1 import workflow_pb2, workflow_service_pb2, workflow_service_pb2_grpc
from worker_sdk._errors import TaskyardError
from worker_sdk._workflows import (
    Canvas,
    NodeInfo,
    TemplateParam,
    Workflow,
    WorkflowInfo,
    WorkflowState,
    WorkflowTemplate,
    params_struct,
)

pb = workflow_service_pb2
Graph = Workflow | Canvas | workflow_pb2.WorkflowSpec


def _spec(graph: Graph) -> workflow_pb2.WorkflowSpec:
    if isinstance(graph, workflow_pb2.WorkflowSpec):
        return graph
    if isinstance(graph, Canvas):
        graph = graph.to_workflow()
    return graph.to_proto()


class WorkflowMethods:
    """WorkflowService methods of `Client`; every one raises `TaskyardError` on refusal."""

    _channel: Any

    async def _call(self, method: Any, request: Any) -> Any:
        raise NotImplementedError

    @property
    def _workflows(self) -> workflow_service_pb2_grpc.WorkflowServiceStub:
        stub: workflow_service_pb2_grpc.WorkflowServiceStub = (
            workflow_service_pb2_grpc.WorkflowServiceStub(self._channel)
        )
        return stub

    async def create_workflow(
        self, workflow: Graph, *, request_id: str | None = None
    ) -> WorkflowInfo:
        """Create a workflow (a `Workflow`, or a `chain`/`group`/`chord`) with all its nodes.

        Args:
            workflow: The graph.
            request_id: Idempotency key: repeating it returns the first workflow.

        Raises:
            TaskyardError: e.g. reason ``WORKFLOW_CYCLE``, ``UNKNOWN_DEPENDENCY``,
                ``DUPLICATE_NODE`` or ``WORKFLOW_TOO_LARGE`` (nothing was created).
        """
        request = pb.CreateWorkflowRequest(spec=_spec(workflow), request_id=request_id or "")
        response = await self._call(self._workflows.CreateWorkflow, request)
        return WorkflowInfo.from_proto(response.workflow)

    async def start_workflow(
        self,
        template: str,
        params: dict[str, Any] | None = None,
        *,
        version: int = 0,
        request_id: str | None = None,
    ) -> WorkflowInfo:
        """Start a registered template (its latest version unless ``version``) with ``params``."""
        ref = workflow_pb2.WorkflowTemplateRef(
            name=template, version=version, params=params_struct(params)
        )
        request = pb.CreateWorkflowRequest(template=ref, request_id=request_id or "")
        response = await self._call(self._workflows.CreateWorkflow, request)
        return WorkflowInfo.from_proto(response.workflow)

    async def add_workflow_nodes(self, workflow_id: str, nodes: Workflow) -> list[NodeInfo]:
        """Add the nodes of ``nodes`` (a `Workflow` used as a builder) to a running workflow;
        they may depend on its existing nodes by name."""
        request = pb.AddWorkflowNodesRequest(workflow_id=workflow_id, nodes=nodes.to_proto().nodes)
        response = await self._call(self._workflows.AddWorkflowNodes, request)
        return [NodeInfo.from_proto(n) for n in response.nodes]

    async def get_workflow(self, workflow_id: str) -> WorkflowInfo:
        """A workflow with every node's state."""
        request = pb.GetWorkflowRequest(id=workflow_id)
        response = await self._call(self._workflows.GetWorkflow, request)
        return WorkflowInfo.from_proto(response.workflow)

    async def list_workflows(
        self,
        *,
        state: WorkflowState | str | None = None,
        template: str | None = None,
        page_size: int = 100,
    ) -> AsyncIterator[WorkflowInfo]:
        """Workflows (without their nodes), newest first, page after page."""
        token = ""
        while True:
            items, token = await self.list_workflows_page(
                state=state, template=template, page_size=page_size, page_token=token
            )
            for item in items:
                yield item
            if not token:
                return

    async def list_workflows_page(
        self,
        *,
        state: WorkflowState | str | None = None,
        template: str | None = None,
        page_size: int = 100,
        page_token: str = "",
    ) -> tuple[list[WorkflowInfo], str]:
        """One page of `list_workflows` and the next page's token ("" after the last)."""
        request = pb.ListWorkflowsRequest(
            state=WorkflowState(state).to_proto() if state else 0,  # type: ignore[arg-type]
            template_name=template or "",
            page_size=page_size,
            page_token=page_token,
        )
        response = await self._call(self._workflows.ListWorkflows, request)
        items = [WorkflowInfo.from_proto(w) for w in response.workflows]
        return items, response.next_page_token

    async def cancel_workflow(self, workflow_id: str, reason: str = "") -> WorkflowInfo:
        """Cancel every unfinished node (running ones are asked to stop)."""
        request = pb.CancelWorkflowRequest(id=workflow_id, reason=reason)
        response = await self._call(self._workflows.CancelWorkflow, request)
        return WorkflowInfo.from_proto(response.workflow)

    async def retry_workflow(self, workflow_id: str) -> WorkflowInfo:
        """Re-run a finished workflow's failed and cancelled nodes and what depends on them."""
        request = pb.RetryWorkflowRequest(id=workflow_id)
        response = await self._call(self._workflows.RetryWorkflow, request)
        return WorkflowInfo.from_proto(response.workflow)

    async def watch_workflow(
        self, workflow_id: str, *, timeout: float | None = None
    ) -> AsyncIterator[WorkflowInfo]:
        """Yield the workflow with every node, then with the nodes that changed, until every
        node finished.

        Raises:
            TimeoutError: the stream lasted longer than ``timeout`` seconds.
        """
        request = pb.WatchWorkflowRequest(id=workflow_id)
        call: Any = self._workflows.WatchWorkflow(request, timeout=timeout)
        try:
            async for response in call:
                yield WorkflowInfo.from_proto(response.workflow)
        except grpc.RpcError as error:
            if error.code() is grpc.StatusCode.DEADLINE_EXCEEDED:
                raise TimeoutError(
                    f"workflow {workflow_id} did not finish within {timeout}s"
                ) from None
            raise TaskyardError.from_rpc_error(error) from None
        finally:
            call.cancel()

    async def wait_workflow(
        self, workflow_id: str, *, timeout: float | None = None
    ) -> WorkflowInfo:
        """Wait until every node finished; returns the workflow with every node.

        Raises:
            TimeoutError: it did not finish within ``timeout`` seconds.
        """
        async for _ in self.watch_workflow(workflow_id, timeout=timeout):
            pass
        return await self.get_workflow(workflow_id)

    async def register_template(
        self,
        name: str,
        workflow: Graph,
        *,
        params: Iterable[TemplateParam] = (),
        description: str = "",
    ) -> WorkflowTemplate:
        """Register a template; an unchanged one keeps its version, a changed one gets the next.

        Payloads, queues and labels may hold ``{{ params.NAME }}`` placeholders.
        """
        template = workflow_pb2.WorkflowTemplate(
            name=name,
            description=description,
            params=[p.to_proto() for p in params],
            spec=_spec(workflow),
        )
        request = pb.CreateWorkflowTemplateRequest(template=template)
        response = await self._call(self._workflows.CreateWorkflowTemplate, request)
        return WorkflowTemplate.from_proto(response.template)

    async def get_template(self, name: str, *, version: int = 0) -> WorkflowTemplate:
        """One version of a template (the latest by default)."""
        request = pb.GetWorkflowTemplateRequest(name=name, version=version)
        response = await self._call(self._workflows.GetWorkflowTemplate, request)
        return WorkflowTemplate.from_proto(response.template)

    async def list_templates(
        self, *, name: str | None = None, page_size: int = 100
    ) -> AsyncIterator[WorkflowTemplate]:
        """Each template's latest version by name, or every version of ``name``, newest first."""
        token = ""
        while True:
            request = pb.ListWorkflowTemplatesRequest(
                name=name or "", page_size=page_size, page_token=token
            )
            response = await self._call(self._workflows.ListWorkflowTemplates, request)
            for t in response.templates:
                yield WorkflowTemplate.from_proto(t)
            token = response.next_page_token
            if not token:
                return
