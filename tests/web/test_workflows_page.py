"""The Workflows pages: the list, a workflow drawn as a graph whose nodes follow the broker.

The layout (`lib/dag.js`) is tested on its own in the browser, without a broker: the page
is served from the package's files by Playwright's request routing. The pages run against
a real broker (both backends) and a real worker process running
tests/workflow_workers.py; node states are awaited on the page, never slept for, and
compared with what the broker itself reports.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from playwright.async_api import Browser, Page, Route, expect

import broker.http
from tests.helpers import Broker, start_worker
from tests.web.conftest import Dashboard
from worker_sdk import Client, Workflow, WorkflowInfo, WorkflowState

STATIC = Path(broker.http.__file__).parent / "static"
APP = "tests.workflow_workers:worker"
WAIT_S = 60
TYPES = {".js": "text/javascript", ".mjs": "text/javascript", ".html": "text/html"}


# --- the layout, alone ------------------------------------------------------------------


@pytest.fixture
async def dag(browser: Browser) -> AsyncIterator[Page]:
    """A blank page that can import the dashboard's modules (served from the package)."""
    context = await browser.new_context()
    page = await context.new_page()

    async def serve(route: Route) -> None:
        path = urlparse(route.request.url).path
        if path == "/":
            await route.fulfill(body="<!doctype html><title>dag</title>", content_type="text/html")
            return
        file = STATIC / path.removeprefix("/static/")
        if not path.startswith("/static/") or not file.is_file():
            await route.fulfill(status=404)
            return
        kind = TYPES.get(file.suffix, "text/plain")
        await route.fulfill(body=file.read_bytes(), content_type=kind)

    await page.route("http://dag.test/**", serve)
    await page.goto("http://dag.test/")
    try:
        yield page
    finally:
        await context.close()


async def lay_out(page: Page, nodes: list[dict[str, Any]]) -> dict[str, Any]:
    """edgesOf + layout of these nodes (proto3 JSON WorkflowNodeInfo fields)."""
    result: dict[str, Any] = await page.evaluate(
        """async (nodes) => {
            const dag = await import("/static/lib/dag.js");
            const edges = dag.edgesOf(nodes);
            const l = dag.layout(nodes.map((n) => n.name), edges);
            return {
                edges: edges.map((e) => [e.from, e.to, e.kind]),
                layers: l.layers,
                positions: Object.fromEntries(l.positions),
                width: l.width,
                height: l.height,
                box: dag.BOX,
            };
        }""",
        nodes,
    )
    return result


def node(name: str, *parents: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "dependsOn": list(parents), **extra}


async def test_a_diamond_is_laid_out_in_three_layers(dag: Page) -> None:
    got = await lay_out(dag, [node("a"), node("b", "a"), node("c", "a"), node("d", "b", "c")])
    assert got["layers"] == [["a"], ["b", "c"], ["d"]]
    assert sorted(got["edges"]) == [
        ["a", "b", "depends"],
        ["a", "c", "depends"],
        ["b", "d", "depends"],
        ["c", "d", "depends"],
    ]
    at = got["positions"]
    assert at["a"]["x"] < at["b"]["x"] == at["c"]["x"] < at["d"]["x"]
    assert at["b"]["y"] != at["c"]["y"]


async def test_a_layer_is_the_longest_path_from_a_root_whatever_the_order(dag: Page) -> None:
    # c waits for a directly and through b: it goes after b, not beside it.
    nodes = [node("c", "a", "b"), node("b", "a"), node("a")]
    got = await lay_out(dag, nodes)
    assert got["layers"] == [["a"], ["b"], ["c"]]


async def test_repeated_unknown_and_self_dependencies_draw_nothing(dag: Page) -> None:
    got = await lay_out(dag, [node("a"), node("b", "a", "a", "ghost", "b")])
    assert got["edges"] == [["a", "b", "depends"]]
    assert got["layers"] == [["a"], ["b"]]


async def test_spawned_children_sit_between_their_spawner_and_its_join(dag: Page) -> None:
    nodes = [
        node("s"),
        node("j", "s", joinSpawned=True),
        node("s/0", spawnedBy="s"),
        node("s/1", spawnedBy="s"),
    ]
    got = await lay_out(dag, nodes)
    assert got["layers"] == [["s"], ["s/0", "s/1"], ["j"]]
    assert sorted(got["edges"]) == [
        ["s", "j", "depends"],
        ["s", "s/0", "spawned"],
        ["s", "s/1", "spawned"],
        ["s/0", "j", "join"],
        ["s/1", "j", "join"],
    ]


async def test_nodes_are_ordered_by_their_parents_rows(dag: Page) -> None:
    got = await lay_out(dag, [node("r1"), node("r2"), node("x", "r2"), node("y", "r1")])
    assert got["layers"] == [["r1", "r2"], ["y", "x"]]  # no crossing


async def test_a_cycle_does_not_hang_the_page(dag: Page) -> None:
    got = await lay_out(dag, [node("c"), node("a", "b"), node("b", "a")])
    assert got["layers"] == [["c"], ["a", "b"]]


async def test_a_big_graph_keeps_every_edge_forward_and_no_boxes_overlap(dag: Page) -> None:
    rng = random.Random(19)
    names = [f"n{i}" for i in range(2000)]
    nodes = [
        node(name, *{names[rng.randrange(i)] for _ in range(rng.randint(0, 3))} if i else ())
        for i, name in enumerate(names)
    ]
    got = await lay_out(dag, nodes)
    at, box = got["positions"], got["box"]
    assert set(at) == set(names)
    for parent, child, _ in got["edges"]:
        assert at[parent]["layer"] < at[child]["layer"]
    corners = {(p["x"], p["y"]) for p in at.values()}
    assert len(corners) == len(names)
    for p in at.values():
        assert p["x"] + box["width"] <= got["width"] and p["y"] + box["height"] <= got["height"]


# --- the pages, against a broker ------------------------------------------------------


def diamond(
    name: str, types: dict[str, str] | None = None, payloads: dict[str, Any] | None = None
) -> Workflow:
    """a → b, c → d; each node a wf.noop unless `types` says otherwise ({node: type})."""
    wf = Workflow(name)
    kind = {n: (types or {}).get(n, "wf.noop") for n in "abcd"}
    data = {n: (payloads or {}).get(n) for n in "abcd"}
    a = wf.node("a", kind["a"], data["a"])
    b = wf.node("b", kind["b"], data["b"], after=[a])
    c = wf.node("c", kind["c"], data["c"], after=[a])
    wf.node("d", kind["d"], data["d"], after=[b, c])
    return wf


async def expect_states(page: Page, states: dict[str, str]) -> None:
    for name, state in states.items():
        await expect(page.get_by_test_id(f"node-{name}")).to_have_attribute("data-state", state)


async def expect_the_brokers_states(page: Page, flow: WorkflowInfo) -> None:
    """The page shows every node as the broker reports it."""
    assert flow.nodes
    await expect_states(page, {n.name: n.state.value.upper() for n in flow.nodes})
    await expect(page.get_by_test_id("workflow-state")).to_have_text(flow.state.value.upper())


async def test_a_diamond_is_listed_drawn_and_its_nodes_turn_as_a_worker_runs_them(
    broker: Broker, dashboard: Dashboard, client: Client, tmp_path: Path
) -> None:
    created = await client.create_workflow(diamond("web-diamond"))
    page = dashboard.page
    await dashboard.open("workflows")
    row = page.get_by_test_id(f"workflow-{created.id}")
    await expect(row).to_contain_text("web-diamond")
    await expect(page.get_by_test_id(f"workflow-{created.id}-state")).to_have_text("RUNNING")
    await expect(page.get_by_test_id(f"workflow-{created.id}-nodes")).to_contain_text("0 / 4")

    await row.get_by_role("link", name=created.id).click()
    await expect(page.get_by_test_id("workflow-id")).to_have_text(created.id)
    graph = page.get_by_test_id("graph")
    await expect(graph).to_have_attribute("data-layers", "3")
    # No worker yet: the root waits, the rest are blocked on their parents.
    await expect_states(page, {"a": "PENDING", "b": "BLOCKED", "c": "BLOCKED", "d": "BLOCKED"})
    for name, layer in {"a": 0, "b": 1, "c": 1, "d": 2}.items():
        box = page.get_by_test_id(f"node-{name}")
        await expect(box).to_have_attribute("data-layer", str(layer))
        await expect(box).to_have_attribute("href", f"#/tasks/{created.node(name).task_id}")
        await expect(box).to_contain_text(name)
    edges = await graph.locator("path.edge").evaluate_all(
        "paths => paths.map((p) => [p.dataset.from, p.dataset.to])"
    )
    assert sorted(edges) == [["a", "b"], ["a", "c"], ["b", "d"], ["c", "d"]]
    boxes = {n: await page.get_by_test_id(f"node-{n}").bounding_box() for n in "abcd"}
    x = {n: b["x"] for n, b in boxes.items() if b}
    assert x["a"] < x["b"] == x["c"] < x["d"]  # layers left to right, a layer in one column
    assert boxes["b"] and boxes["c"] and boxes["b"]["y"] != boxes["c"]["y"]

    loads = dashboard.navigations
    worker = await start_worker(broker, tmp_path, name="web-wf", app=APP)
    await expect_states(page, dict.fromkeys("abcd", "SUCCEEDED"))
    await expect(page.get_by_test_id("workflow-state")).to_have_text("SUCCEEDED")
    await expect(page.get_by_test_id("workflow-nodes")).to_contain_text("4 / 4")
    assert dashboard.navigations == loads  # the event stream did it, no reload
    await expect_the_brokers_states(page, await client.get_workflow(created.id))

    # A node leads to its task.
    await page.get_by_test_id("node-d").click()
    await expect(page.get_by_test_id("task-id")).to_have_text(created.node("d").task_id)
    await page.get_by_test_id("nav-workflows").click()
    await expect(page.get_by_test_id(f"workflow-{created.id}-state")).to_have_text("SUCCEEDED")
    await expect(page.get_by_test_id(f"workflow-{created.id}-nodes")).to_contain_text("4 / 4")
    await worker.stop()


async def test_a_failed_node_skips_its_dependant_and_retry_runs_them_again(
    broker: Broker, dashboard: Dashboard, client: Client, tmp_path: Path
) -> None:
    marker = tmp_path / "fixed"
    worker = await start_worker(broker, tmp_path, name="web-wf-fail", app=APP)
    created = await client.create_workflow(
        diamond("web-failing", {"b": "wf.flaky"}, {"b": {"marker": str(marker)}})
    )
    page = dashboard.page
    await dashboard.open(f"workflows/{created.id}")
    await expect(page.get_by_test_id("workflow-state")).to_have_text("FAILED")
    await expect_states(page, {"a": "SUCCEEDED", "b": "FAILED", "c": "SUCCEEDED", "d": "SKIPPED"})
    failed = await client.wait_workflow(created.id, timeout=WAIT_S)
    assert failed.state is WorkflowState.FAILED
    await expect_the_brokers_states(page, failed)

    marker.touch()
    await page.get_by_test_id("retry-workflow").click()
    await expect_states(page, dict.fromkeys("abcd", "SUCCEEDED"))
    await expect(page.get_by_test_id("workflow-state")).to_have_text("SUCCEEDED")
    done = await client.wait_workflow(created.id, timeout=WAIT_S)
    assert done.state is WorkflowState.SUCCEEDED and done.generation == 1
    await expect_the_brokers_states(page, done)
    await worker.stop()


async def test_the_cancel_button_cancels_a_running_workflow(
    broker: Broker, dashboard: Dashboard, client: Client, tmp_path: Path
) -> None:
    worker = await start_worker(broker, tmp_path, name="web-wf-cancel", app=APP)
    slow = diamond("web-cancel", {"b": "wf.slow"}, {"b": {"seconds": 120}})
    created = await client.create_workflow(slow)
    page = dashboard.page
    await dashboard.open(f"workflows/{created.id}")
    await expect_states(page, {"a": "SUCCEEDED", "b": "RUNNING", "c": "SUCCEEDED", "d": "BLOCKED"})
    assert await page.get_by_test_id("retry-workflow").count() == 0
    await page.get_by_test_id("cancel-workflow").click()
    await page.get_by_test_id("cancel-workflow-confirm").click()
    await expect(page.get_by_test_id("workflow-state")).to_have_text("CANCELLED")
    await expect_states(page, {"b": "CANCELLED", "d": "CANCELLED"})
    done = await client.wait_workflow(created.id, timeout=WAIT_S)
    assert done.state is WorkflowState.CANCELLED
    await expect_the_brokers_states(page, done)
    assert await page.get_by_test_id("cancel-workflow").count() == 0
    await worker.stop()


async def test_a_workflow_too_big_to_draw_is_listed_as_a_table(
    broker: Broker, dashboard: Dashboard, client: Client
) -> None:
    wf = Workflow("web-wide")
    root = wf.node("root", "wf.noop")
    for i in range(300):  # 301 nodes: one above what is drawn
        wf.node(f"leaf-{i}", "wf.noop", after=[root])
    created = await client.create_workflow(wf)
    page = dashboard.page
    await dashboard.open(f"workflows/{created.id}")
    await expect(page.get_by_test_id("graph-too-large")).to_contain_text("301 nodes")
    await expect(page.get_by_test_id("node-table").locator("tbody tr")).to_have_count(301)
    assert await page.get_by_test_id("graph").count() == 0
    await expect_states(page, {"root": "PENDING", "leaf-0": "BLOCKED", "leaf-299": "BLOCKED"})
