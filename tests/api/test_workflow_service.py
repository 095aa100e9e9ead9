"""WorkflowService against a real broker: refusals (code + reason, nothing created), reads,
pagination, idempotency and templates. No worker: nothing here needs a node to run."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest

from taskyard.v1 import workflow_pb2, workflow_service_pb2_grpc
from taskyard.v1 import workflow_service_pb2 as pb
from tests.helpers import Broker
from worker_sdk import (
    Client,
    TaskSpec,
    TaskState,
    TaskyardError,
    TemplateParam,
    Workflow,
    WorkflowState,
)

INVALID = grpc.StatusCode.INVALID_ARGUMENT


async def refused(call: Awaitable[Any]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(TaskyardError) as error:
        await call
    return error.value.code, error.value.reason


def graph(*nodes: tuple[str, list[str]], type_: str = "t") -> Workflow:
    wf = Workflow("g")
    for name, after in nodes:
        wf.node(name, type_, after=after)
    return wf


def too_large() -> Workflow:
    wf = Workflow("big")
    for i in range(10_001):
        wf.node(f"n{i}", "t")
    return wf


def bad_last_task() -> workflow_pb2.WorkflowSpec:
    spec = graph(("a", []), ("b", ["a"])).to_proto()
    spec.nodes.add(name="c", depends_on=["b"]).task.type = "no spaces allowed"
    return spec


# (what, the spec, the reason): every one refused with INVALID_ARGUMENT, nothing created.
CASES: list[tuple[str, Callable[[], Workflow | workflow_pb2.WorkflowSpec], str]] = [
    ("cycle", lambda: graph(("a", ["c"]), ("b", ["a"]), ("c", ["b"])), "WORKFLOW_CYCLE"),
    ("self", lambda: graph(("a", ["a"])), "WORKFLOW_CYCLE"),
    ("unknown parent", lambda: graph(("a", []), ("b", ["nope"])), "UNKNOWN_DEPENDENCY"),
    ("same name twice", lambda: graph(("a", []), ("a", [])), "DUPLICATE_NODE"),
    ("no nodes", lambda: Workflow("empty"), "INVALID_WORKFLOW"),
    ("slash in a name", lambda: graph(("a/b", [])), "INVALID_WORKFLOW"),
    ("10,001 nodes", too_large, "WORKFLOW_TOO_LARGE"),
    ("a bad task last", bad_last_task, "INVALID_TYPE"),
]


@pytest.mark.parametrize("what,make,reason", CASES, ids=[c[0] for c in CASES])
async def test_a_graph_that_cannot_run_is_refused_and_nothing_is_created(
    client: Client, what: str, make: Callable[[], Any], reason: str
) -> None:
    assert await refused(client.create_workflow(make())) == (INVALID, reason)
    assert [w async for w in client.list_workflows()] == []
    assert [t async for t in client.list()] == []


async def test_a_join_of_spawned_children_needs_a_parent(client: Client) -> None:
    wf = Workflow()
    wf.node("j", "t", join_spawned=True)
    assert await refused(client.create_workflow(wf)) == (INVALID, "INVALID_WORKFLOW")


async def test_a_full_root_queue_refuses_the_whole_workflow(client: Client) -> None:
    await client.create_queue("tight", max_depth=1)
    await client.submit("t", queue="tight")
    wf = Workflow()
    a = wf.node("a", "t", queue="tight")
    wf.node("b", "t", after=[a])
    assert await refused(client.create_workflow(wf)) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "QUEUE_FULL",
    )
    assert [w async for w in client.list_workflows()] == []


async def test_unknown_and_malformed_ids(client: Client) -> None:
    missing = "01M90000000000000000000000"
    assert await refused(client.get_workflow(missing)) == (
        grpc.StatusCode.NOT_FOUND,
        "WORKFLOW_NOT_FOUND",
    )
    assert await refused(client.get_workflow("nope")) == (INVALID, "INVALID_ID")
    assert (await refused(client.cancel_workflow(missing)))[1] == "WORKFLOW_NOT_FOUND"
    assert (await refused(client.retry_workflow(missing)))[1] == "WORKFLOW_NOT_FOUND"
    assert (await refused(client.add_workflow_nodes(missing, graph(("x", [])))))[
        1
    ] == "WORKFLOW_NOT_FOUND"


async def test_creation_returns_every_node_roots_pending_the_rest_blocked(client: Client) -> None:
    created = await client.create_workflow(graph(("a", []), ("b", ["a"]), ("c", ["a", "b"])))
    assert created.state is WorkflowState.RUNNING and created.total == 3
    assert {n.name: n.state for n in created.nodes} == {
        "a": TaskState.PENDING,
        "b": TaskState.BLOCKED,
        "c": TaskState.BLOCKED,
    }
    assert created.node("c").depends_on == ("a", "b")
    task = await client.get(created.node("b").task_id)
    assert task.state is TaskState.BLOCKED
    got = await client.get_workflow(created.id)
    assert [n.task_id for n in got.nodes] == [n.task_id for n in created.nodes]


async def test_a_repeated_request_id_returns_the_first_workflow(client: Client) -> None:
    first = await client.create_workflow(graph(("a", []), ("b", ["a"])), request_id="k1")
    again = await client.create_workflow(graph(("a", []), ("b", ["a"])), request_id="k1")
    assert again.id == first.id and again.request_id == "k1"
    assert len([t async for t in client.list()]) == 2


async def test_workflows_page_newest_first_and_filter_by_state(client: Client) -> None:
    ids = [(await client.create_workflow(graph(("a", [])))).id for _ in range(5)]
    cancelled = await client.cancel_workflow(ids[0])
    assert cancelled.state is WorkflowState.CANCELLED
    pages, token = [], ""
    while True:
        page, token = await client.list_workflows_page(page_size=2, page_token=token)
        pages.append([w.id for w in page])
        if not token:
            break
    assert pages == [ids[4:2:-1], ids[2:0:-1], ids[0:1]]
    running = [w.id async for w in client.list_workflows(state="running")]
    assert running == ids[:0:-1]
    assert [w.id async for w in client.list_workflows(state=WorkflowState.CANCELLED)] == ids[:1]
    assert await refused(client.list_workflows_page(page_size=-1)) == (INVALID, "INVALID_PAGE_SIZE")
    _, token = await client.list_workflows_page(page_size=1)
    assert await refused(client.list_workflows_page(state="running", page_token=token)) == (
        INVALID,
        "INVALID_PAGE_TOKEN",
    )


async def test_control_refusals(client: Client) -> None:
    created = await client.create_workflow(graph(("a", []), ("b", ["a"])))
    assert await refused(client.retry_workflow(created.id)) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "WORKFLOW_NOT_RETRYABLE",
    )
    more = graph(("c", ["nope"]))
    assert (await refused(client.add_workflow_nodes(created.id, more)))[1] == "UNKNOWN_DEPENDENCY"
    assert (await refused(client.add_workflow_nodes(created.id, graph(("a", [])))))[
        1
    ] == "DUPLICATE_NODE"
    added = await client.add_workflow_nodes(created.id, graph(("c", ["b"])))
    assert [(n.name, n.state, n.depends_on) for n in added] == [("c", TaskState.BLOCKED, ("b",))]
    await client.cancel_workflow(created.id)
    done = await client.get_workflow(created.id)
    assert done.done and {n.state for n in done.nodes} == {TaskState.CANCELLED}
    assert (await refused(client.add_workflow_nodes(created.id, graph(("d", [])))))[
        1
    ] == "WORKFLOW_FINISHED"


async def test_spawning_and_reading_parents_need_the_lease(broker: Broker, client: Client) -> None:
    created = await client.create_workflow(graph(("a", [])))
    task_id = created.node("a").task_id
    async with broker.channel() as channel:
        stub = workflow_service_pb2_grpc.WorkflowServiceStub(channel)
        child = pb.SpawnedNode(key="k")
        child.task.type = "t"
        for call in (
            stub.SpawnNodes(pb.SpawnNodesRequest(task_id=task_id, lease_id="12", children=[child])),
            stub.ListNodeParents(pb.ListNodeParentsRequest(task_id=task_id, lease_id="12")),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await call
            assert error.value.code() is grpc.StatusCode.FAILED_PRECONDITION
            assert "LEASE_LOST" in str(error.value.trailing_metadata())
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await stub.SpawnNodes(pb.SpawnNodesRequest(task_id=task_id, lease_id="1"))
        assert error.value.code() is INVALID  # no children: BATCH_TOO_LARGE


async def test_templates_are_versioned_by_their_spec(client: Client) -> None:
    wf = graph(("a", []))
    first = await client.register_template("etl", wf, description="one")
    same = await client.register_template("etl", wf, description="one")
    assert (first.version, same.version) == (1, 1)
    changed = await client.register_template("etl", graph(("a", []), ("b", ["a"])))
    assert changed.version == 2 and changed.nodes == ("a", "b")
    assert (await client.get_template("etl")).version == 2
    assert (await client.get_template("etl", version=1)).description == "one"
    await client.register_template("other", wf)
    assert [(t.name, t.version) async for t in client.list_templates()] == [
        ("etl", 2),
        ("other", 1),
    ]
    assert [t.version async for t in client.list_templates(name="etl")] == [2, 1]
    assert await refused(client.get_template("missing")) == (
        grpc.StatusCode.NOT_FOUND,
        "TEMPLATE_NOT_FOUND",
    )
    assert await refused(client.start_workflow("missing")) == (
        grpc.StatusCode.NOT_FOUND,
        "TEMPLATE_NOT_FOUND",
    )


async def test_template_parameters_are_checked_and_substituted(client: Client) -> None:
    wf = Workflow()
    wf.node(
        "a", "t", {"day": "{{ params.day }}", "n": "{{params.n}}", "msg": "on {{ params.day }}"}
    )
    wf.node("b", "t", queue="q-{{ params.day }}", after=["a"])
    params = [
        TemplateParam("day", "string", required=True),
        TemplateParam("n", "integer", 4, has_default=True),
    ]
    await client.register_template("daily", wf, params=params)

    started = await client.start_workflow("daily", {"day": "mon"})
    assert started.template_name == "daily" and started.template_version == 1
    assert started.params == {"day": "mon", "n": 4}
    a = await client.get(started.node("a").task_id)
    assert a.payload == {"day": "mon", "n": 4, "msg": "on mon"}
    assert (await client.get(started.node("b").task_id)).queue == "q-mon"
    assert [w.id async for w in client.list_workflows(template="daily")] == [started.id]

    assert await refused(client.start_workflow("daily")) == (INVALID, "INVALID_PARAMS")
    assert await refused(client.start_workflow("daily", {"day": 3})) == (INVALID, "INVALID_PARAMS")
    assert await refused(client.start_workflow("daily", {"day": "x", "zz": 1})) == (
        INVALID,
        "INVALID_PARAMS",
    )
    bad = Workflow()
    bad.node("a", "t", "{{ params.undeclared }}")
    assert await refused(client.register_template("bad", bad)) == (INVALID, "INVALID_TEMPLATE")
    assert await refused(client.register_template("cyclic", graph(("a", ["a"])))) == (
        INVALID,
        "WORKFLOW_CYCLE",
    )


async def test_a_node_task_cannot_carry_its_own_request_id() -> None:
    with pytest.raises(ValueError, match="request_id"):
        Workflow().add("a", TaskSpec("t", request_id="x"))
