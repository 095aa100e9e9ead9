"""What a handler running a workflow node sees of its workflow: its parents, and spawning.

`TaskContext.workflow` is a `NodeContext` for a node, None for a plain task.
Parents' results come in the assignment while they fit the payload limit
(1 MiB by default, all results together); beyond that, or for a join of more
than 100 parents, `fetch_parents` pages through WorkflowService.ListNodeParents.
Spawning goes through WorkflowService.SpawnNodes with the node's lease as the
proof: only the worker holding the node can add its children, and only while
it holds it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import Any, Protocol, TypeVar, overload

import grpc

from taskyard.v1 import worker_service_pb2, workflow_service_pb2, workflow_service_pb2_grpc
from worker_sdk._errors import TaskyardError
from worker_sdk._types import TaskSpec, TaskState
from worker_sdk._workflows import NodeInfo, ParentResult, spawned_node

T = TypeVar("T")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)
pb = workflow_service_pb2
ChannelOf = Callable[[], grpc.aio.Channel | None]


class NodeContext:
    """A workflow node's view of its workflow (``ctx.workflow``).

    Attributes:
        workflow_id: The workflow's id.
        node: This node's name.
        parents: How each parent ended, by name, as the assignment carried them
            (complete unless ``truncated``).
        truncated: Some parent or result was left out of the assignment; use
            ``await fetch_parents()``.
    """

    def __init__(
        self,
        assignment: worker_service_pb2.Assignment,
        channel_of: ChannelOf,
        loop: asyncio.AbstractEventLoop | None,
    ) -> None:
        self.workflow_id = assignment.workflow_id
        self.node = assignment.workflow_node
        self.parents = {p.node: ParentResult.from_proto(p) for p in assignment.parents}
        self.truncated = assignment.parents_truncated
        self._task_id = assignment.task_id
        self._lease_id = assignment.lease_id
        self._channel_of = channel_of
        self._loop = loop

    @property
    def results(self) -> dict[str, Any]:
        """The results of the parents that succeeded, by node name.

        Raises:
            LookupError: the assignment did not carry them all (``truncated``);
                ``await fetch_parents()`` instead.
        """
        if self.truncated:
            raise LookupError(
                f"node {self.node!r} has more parents (or larger results) than its assignment "
                "carries; use `await ctx.workflow.fetch_parents()`"
            )
        return {n: p.result for n, p in self.parents.items() if p.state is TaskState.SUCCEEDED}

    @overload
    def result(self, node: str) -> Any: ...

    @overload
    def result(self, node: str, as_: _Typed[Awaitable[R]]) -> R: ...  # an async task's

    @overload
    def result(self, node: str, as_: _Typed[R]) -> R: ...

    @overload
    def result(self, node: str, as_: type[R]) -> R: ...

    def result(self, node: str, as_: Any = None) -> Any:
        """A parent's result, typed: converted to what the parent's typed task returns
        (pass its `@task` definition) or to a type (a dataclass, a model, ``list[Row]``…).

        Example::

            @task("etl.load")
            async def load(ctx: TaskContext = CONTEXT) -> int:
                rows = ctx.workflow.result("extract", extract)   # list[Row], checked
                return len(rows)

        Raises:
            LookupError: no parent of that name succeeded, or its result was not in the
                assignment (``truncated``; ``await fetch_parents()`` gets them all).
            ValidationError: the result does not match the type.
        """
        parent = self.parents.get(node)
        if parent is None or parent.state is not TaskState.SUCCEEDED or parent.omitted:
            why = "its result is not in the assignment" if parent else "it is no parent"
            if parent is not None and parent.state is not TaskState.SUCCEEDED:
                why = f"it ended {parent.state.value}"
            raise LookupError(f"no result of parent {node!r} of node {self.node!r}: {why}")
        return typed(parent.result, as_)

    async def fetch_parents(self) -> dict[str, ParentResult]:
        """Every parent's outcome with its result, fetched from the broker when the assignment
        did not carry them all."""
        if not self.truncated:
            return dict(self.parents)
        out: dict[str, ParentResult] = {}
        token = ""
        while True:
            request = pb.ListNodeParentsRequest(
                task_id=self._task_id, lease_id=self._lease_id, page_token=token, page_size=1000
            )
            response = await self._call("ListNodeParents", request)
            out |= {p.node: ParentResult.from_proto(p) for p in response.parents}
            token = response.next_page_token
            if not token:
                return out

    async def spawn(self, children: Mapping[str, TaskSpec] | Sequence[TaskSpec]) -> list[NodeInfo]:
        """Add children to this workflow, keyed (a list is keyed by position: "0", "1", …).

        Children are named ``<node>/<key>`` and start at once; nodes that depend on
        this one with ``join_spawned`` wait for them too. Repeating a key (say, after
        this node is retried) returns the existing child: spawning is idempotent.
        At most 1,000 per call.

        Raises:
            TaskyardError: ``LEASE_LOST`` once this node no longer holds its lease.
        """
        keyed = (
            list(children.items())
            if isinstance(children, Mapping)
            else [(str(i), spec) for i, spec in enumerate(children)]
        )
        request = pb.SpawnNodesRequest(
            task_id=self._task_id,
            lease_id=self._lease_id,
            children=[spawned_node(key, spec) for key, spec in keyed],
        )
        response = await self._call("SpawnNodes", request)
        return [NodeInfo.from_proto(n) for n in response.nodes]

    async def map(self, type: str, items: Sequence[Any], **options: Any) -> list[NodeInfo]:
        """Spawn one child of ``type`` per item (the item as its payload), keyed by position."""
        return await self.spawn([TaskSpec(type, item, **options) for item in items])

    def spawn_sync(self, children: Mapping[str, TaskSpec] | Sequence[TaskSpec]) -> list[NodeInfo]:
        """`spawn` for thread handlers (plain functions): blocks until done."""
        return self._blocking(self.spawn(children))

    def fetch_parents_sync(self) -> dict[str, ParentResult]:
        """`fetch_parents` for thread handlers: blocks until done."""
        return self._blocking(self.fetch_parents())

    def _blocking(self, coroutine: Coroutine[Any, Any, T]) -> T:
        if self._loop is None:
            coroutine.close()
            raise RuntimeError(
                "a handler in a worker's process pool cannot spawn or fetch parents; its "
                "parents' results are in ctx.workflow.parents"
            )
        if _on(self._loop):
            raise RuntimeError("call the async method with await on the event loop")
        future: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(
            coroutine, self._loop
        )
        return future.result()

    async def _call(self, method: str, request: Any) -> Any:
        channel = self._channel_of()
        if channel is None:
            raise TaskyardError(
                grpc.StatusCode.UNAVAILABLE, "UNAVAILABLE", "the worker is not connected"
            )
        stub = workflow_service_pb2_grpc.WorkflowServiceStub(channel)
        try:
            return await getattr(stub, method)(request, timeout=30)
        except grpc.RpcError as error:
            raise TaskyardError.from_rpc_error(error) from None


def _on(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


class _Typed(Protocol[R_co]):
    """A typed task definition as `result` uses it: something with `returns.decode`."""

    @property
    def returns(self) -> _Decoder[R_co]: ...


class _Decoder(Protocol[R_co]):
    def decode(self, data: Any) -> R_co: ...


def typed(value: Any, as_: Any) -> Any:
    """JSON as a typed task's result type, or as a type (pydantic, loaded only when asked)."""
    if as_ is None:
        return value
    returns = getattr(as_, "returns", None)
    if returns is not None and hasattr(returns, "decode"):
        return returns.decode(value)
    from worker_sdk._convert import Returns

    return Returns(as_).decode(value)
