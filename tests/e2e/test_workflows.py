"""Workflows run end to end: dependencies, results between nodes, trigger rules, failure policies.

A real broker (SQLite and PostgreSQL) and real worker processes running
tests/workflow_workers.py; executions are counted from the workers' record.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from tests.helpers import Broker, WorkerProcess, read_record, start_worker
from worker_sdk import (
    Client,
    NodeInfo,
    TaskSpec,
    TaskState,
    TaskyardError,
    Workflow,
    WorkflowState,
    chain,
    chord,
    group,
)

APP = "tests.workflow_workers:worker"
WAIT_S = 60


@pytest.fixture
async def worker(broker: Broker, tmp_path: Path) -> AsyncIterator[WorkerProcess]:
    process = await start_worker(broker, tmp_path, name="wf", app=APP, concurrency=8)
    yield process
    await process.stop()


def error_type(node: NodeInfo) -> str:
    assert node.error is not None, node
    return node.error.type


def runs(tmp_path: Path, event: str = "run") -> Counter[str]:
    """How many times each node ran, by node name."""
    return Counter(line[4] for line in read_record(tmp_path) if line[0] == event)


async def test_a_diamond_runs_each_node_once_after_its_parents_with_their_results(
    client: Client, worker: WorkerProcess, tmp_path: Path
) -> None:
    wf = Workflow("diamond")
    a = wf.node("a", "wf.collect", "A")
    b = wf.node("b", "wf.collect", "B", after=[a])
    c = wf.node("c", "wf.collect", "C", after=[a])
    wf.node("d", "wf.collect", "D", after=[b, c])
    created = await client.create_workflow(wf)
    assert [n.name for n in created.nodes] == ["a", "b", "c", "d"]
    assert created.node("d").state in (TaskState.BLOCKED,)

    done = await client.wait_workflow(created.id, timeout=WAIT_S)

    assert done.state is WorkflowState.SUCCEEDED and done.unfinished == 0
    assert {n.name: n.state for n in done.nodes} == dict.fromkeys("abcd", TaskState.SUCCEEDED)
    d = await client.get(done.node("d").task_id)
    b_result = {"node": "b", "payload": "B", "parents": {"a": _leaf("a", "A")}}
    b_result["states"] = {"a": "succeeded"}
    assert d.result["parents"]["b"] == b_result
    assert set(d.result["parents"]) == {"b", "c"}
    assert runs(tmp_path) == dict.fromkeys("abcd", 1)
    starts = {line[4]: float(line[5]) for line in read_record(tmp_path)}
    ends = {n.name: n.finish_time.timestamp() for n in done.nodes if n.finish_time}
    assert starts["b"] >= ends["a"] - 0.01 and starts["d"] >= max(ends["b"], ends["c"]) - 0.01


def _leaf(node: str, payload: str) -> dict[str, object]:
    return {"node": node, "payload": payload, "parents": {}, "states": {}}


async def test_results_past_the_payload_limit_are_fetched_by_reference(
    client: Client, worker: WorkerProcess
) -> None:
    # Two 700 kB results: one fits the 1 MiB the assignment carries, the other goes by reference.
    wf = Workflow("big")
    p1 = wf.node("p1", "wf.big", {"size": 700_000})
    p2 = wf.node("p2", "wf.big", {"size": 700_000})
    wf.node("inline", "wf.inline", after=[p1, p2])
    wf.node("all", "wf.collect", {"sizes": True}, after=[p1, p2])
    done = await client.wait_workflow((await client.create_workflow(wf)).id, timeout=WAIT_S)

    assert done.state is WorkflowState.SUCCEEDED
    seen = (await client.get(done.node("inline").task_id)).result
    assert seen == {"truncated": True, "inline": ["p1"], "omitted": ["p2"], "count": 2}
    fetched = (await client.get(done.node("all").task_id)).result["sizes"]
    assert fetched == {"p1": 700_000, "p2": 700_000}


async def test_a_join_of_more_than_100_parents_gets_them_all_by_reference(
    client: Client, worker: WorkerProcess
) -> None:
    wf = Workflow("wide")
    parents = [wf.node(f"p{i}", "wf.noop") for i in range(101)]
    wf.node("inline", "wf.inline", after=parents)
    wf.node("join", "wf.collect", after=parents)
    done = await client.wait_workflow((await client.create_workflow(wf)).id, timeout=WAIT_S)

    seen = (await client.get(done.node("inline").task_id)).result
    assert seen == {"truncated": True, "inline": [], "omitted": [], "count": 0}
    joined = (await client.get(done.node("join").task_id)).result
    assert len(joined["parents"]) == 101 and set(joined["states"].values()) == {"succeeded"}


async def test_a_failure_skips_what_needs_it_and_runs_finalizers_and_cleanups(
    client: Client, worker: WorkerProcess, tmp_path: Path
) -> None:
    wf = Workflow("rules")
    bad = wf.node("bad", "wf.fail")
    ok = wf.node("ok", "wf.collect")
    needs = wf.node("needs", "wf.collect", after=[bad, ok])  # all_succeeded
    wf.node("below", "wf.collect", after=[needs])
    wf.node("report", "wf.collect", after=[bad, ok], trigger_rule="all_finished")
    wf.node("cleanup", "wf.collect", after=[bad, ok], trigger_rule="any_failed")
    done = await client.wait_workflow((await client.create_workflow(wf)).id, timeout=WAIT_S)

    states = {n.name: n.state for n in done.nodes}
    assert states == {
        "bad": TaskState.FAILED,
        "ok": TaskState.SUCCEEDED,
        "needs": TaskState.SKIPPED,
        "below": TaskState.SKIPPED,
        "report": TaskState.SUCCEEDED,
        "cleanup": TaskState.SUCCEEDED,
    }
    assert error_type(done.node("needs")) == "UpstreamFailed"
    assert error_type(done.node("below")) == "UpstreamSkipped"
    assert done.state is WorkflowState.FAILED
    report = (await client.get(done.node("report").task_id)).result
    assert report["states"] == {"bad": "failed", "ok": "succeeded"}
    assert "needs" not in runs(tmp_path) and "below" not in runs(tmp_path)


async def test_a_cleanup_node_is_skipped_when_nothing_failed_and_the_workflow_succeeds(
    client: Client, worker: WorkerProcess
) -> None:
    wf = Workflow("clean")
    a = wf.node("a", "wf.noop")
    wf.node("cleanup", "wf.collect", after=[a], trigger_rule="any_failed")
    done = await client.wait_workflow((await client.create_workflow(wf)).id, timeout=WAIT_S)

    assert done.node("cleanup").state is TaskState.SKIPPED
    assert error_type(done.node("cleanup")) == "NoParentFailed"
    assert done.state is WorkflowState.SUCCEEDED


async def test_under_continue_independent_branches_finish_after_a_failure(
    client: Client, worker: WorkerProcess
) -> None:
    wf = Workflow("continue", failure_policy="continue")
    slow = wf.node("slow", "wf.slow", {"seconds": 1})
    wf.node("after_slow", "wf.noop", after=[slow])
    bad = wf.node("bad", "wf.fail")
    wf.node("after_bad", "wf.noop", after=[bad])
    done = await client.wait_workflow((await client.create_workflow(wf)).id, timeout=WAIT_S)

    states = {n.name: n.state for n in done.nodes}
    assert states["after_slow"] is TaskState.SUCCEEDED
    assert states["after_bad"] is TaskState.SKIPPED
    assert done.state is WorkflowState.FAILED


async def test_fail_fast_stops_running_nodes_within_a_second_and_cancels_the_rest(
    client: Client, worker: WorkerProcess, tmp_path: Path
) -> None:
    wf = Workflow("fast", failure_policy="fail_fast")
    slow = wf.node("slow", "wf.slow", {"seconds": 60})
    wf.node("after_slow", "wf.noop", after=[slow])
    gate = wf.node("gate", "wf.slow", {"seconds": 0.5})  # lets `slow` start first
    bad = wf.node("bad", "wf.fail", after=[gate])
    wf.node("cleanup", "wf.collect", after=[bad], trigger_rule="any_failed")
    created = await client.create_workflow(wf)
    done = await client.wait_workflow(created.id, timeout=WAIT_S)

    states = {n.name: n.state for n in done.nodes}
    assert states == {
        "slow": TaskState.CANCELLED,
        "after_slow": TaskState.CANCELLED,
        "gate": TaskState.SUCCEEDED,
        "bad": TaskState.FAILED,
        "cleanup": TaskState.SUCCEEDED,  # clean-up nodes are spared
    }
    assert done.state is WorkflowState.FAILED
    failed_at = done.node("bad").finish_time
    assert failed_at is not None
    stopped = [float(line[5]) for line in read_record(tmp_path) if line[0] == "cancelled"]
    assert len(stopped) == 1 and stopped[0] - failed_at.timestamp() < 1.0
    assert error_type(done.node("after_slow")) == "WorkflowFailed"


async def test_fail_fast_finishes_a_workflow_whose_only_unfinished_node_failed(
    client: Client, worker: WorkerProcess
) -> None:
    wf = Workflow("alone", failure_policy="fail_fast")
    wf.node("ok", "wf.noop")
    wf.node("bad", "wf.fail", after=["ok"])
    done = await client.wait_workflow((await client.create_workflow(wf)).id, timeout=WAIT_S)
    assert done.state is WorkflowState.FAILED and done.done


async def test_retry_reruns_failed_nodes_and_their_dependents_never_succeeded_ones(
    client: Client, worker: WorkerProcess, tmp_path: Path
) -> None:
    marker = tmp_path / "fixed"
    wf = Workflow("retry")
    first = wf.node("first", "wf.noop")
    flaky = wf.node("flaky", "wf.flaky", {"marker": str(marker)}, after=[first])
    side = wf.node("side", "wf.noop", after=[first])
    wf.node("last", "wf.collect", after=[flaky, side])
    created = await client.create_workflow(wf)
    failed = await client.wait_workflow(created.id, timeout=WAIT_S)
    assert failed.state is WorkflowState.FAILED
    assert failed.node("last").state is TaskState.SKIPPED

    marker.touch()
    retried = await client.retry_workflow(created.id)
    assert retried.state is WorkflowState.RUNNING and retried.generation == 1
    done = await client.wait_workflow(created.id, timeout=WAIT_S)

    assert done.state is WorkflowState.SUCCEEDED
    assert runs(tmp_path) == {"first": 1, "side": 1, "flaky": 2, "last": 1}
    last = (await client.get(done.node("last").task_id)).result
    assert last["parents"] == {"flaky": "fixed", "side": None}
    with pytest.raises(TaskyardError) as refused:
        await client.retry_workflow(created.id)
    assert refused.value.code is grpc.StatusCode.FAILED_PRECONDITION
    assert refused.value.reason == "WORKFLOW_NOT_RETRYABLE"
    with pytest.raises(TaskyardError) as node:
        await client.retry(done.node("flaky").task_id)
    assert node.value.reason == "WORKFLOW_NODE"


async def test_cancel_workflow_stops_running_nodes_and_cancels_blocked_ones(
    client: Client, worker: WorkerProcess, tmp_path: Path
) -> None:
    wf = Workflow("cancel")
    slow = wf.node("slow", "wf.slow", {"seconds": 60})
    wf.node("next", "wf.noop", after=[slow])
    created = await client.create_workflow(wf)
    async for update in client.watch_workflow(created.id, timeout=WAIT_S):
        if any(n.name == "slow" and n.state is TaskState.RUNNING for n in update.nodes):
            break
    cancelled = await client.cancel_workflow(created.id, "no longer needed")
    assert cancelled.state is WorkflowState.CANCELLED
    done = await client.wait_workflow(created.id, timeout=WAIT_S)

    assert {n.name: n.state for n in done.nodes} == {
        "slow": TaskState.CANCELLED,
        "next": TaskState.CANCELLED,
    }
    assert done.state is WorkflowState.CANCELLED
    assert runs(tmp_path, "cancelled") == {"slow": 1}
    again = await client.cancel_workflow(created.id)  # cancelling a cancelled one: no-op
    assert again.state is WorkflowState.CANCELLED


async def test_watch_starts_with_every_node_and_ends_once_all_finished(
    client: Client, worker: WorkerProcess
) -> None:
    flow = chain(TaskSpec("wf.noop"), TaskSpec("wf.noop", {"seconds": 0.2}), TaskSpec("wf.noop"))
    created = await client.create_workflow(flow.to_workflow("watched"))
    updates = [u async for u in client.watch_workflow(created.id, timeout=WAIT_S)]

    assert [n.name for n in updates[0].nodes] == ["0", "1", "2"]
    assert updates[-1].done and updates[-1].state is WorkflowState.SUCCEEDED
    finals: dict[str, TaskState] = {}
    for u in updates:
        finals |= {n.name: n.state for n in u.nodes}
    assert finals == dict.fromkeys(["0", "1", "2"], TaskState.SUCCEEDED)
    assert len(updates) >= 2


async def test_a_spawner_fans_out_and_its_join_waits_for_every_child(
    client: Client, worker: WorkerProcess, tmp_path: Path
) -> None:
    wf = Workflow("map")
    split = wf.node("split", "wf.spawn", {"n": 5})
    wf.node("join", "wf.collect", after=[split], join_spawned=True)
    empty = wf.node("split0", "wf.spawn", {"n": 0})
    wf.node("join0", "wf.collect", after=[empty], join_spawned=True)
    done = await client.wait_workflow((await client.create_workflow(wf)).id, timeout=WAIT_S)

    assert done.state is WorkflowState.SUCCEEDED
    children = [n for n in done.nodes if n.spawned_by == "split"]
    assert sorted(n.name for n in children) == [f"split/{i}" for i in range(5)]
    joined = (await client.get(done.node("join").task_id)).result["parents"]
    assert joined["split"] == 5
    assert {k: v["payload"] for k, v in joined.items() if k != "split"} == {
        f"split/{i}": i for i in range(5)
    }
    assert (await client.get(done.node("join0").task_id)).result["parents"] == {"split0": 0}
    counts = runs(tmp_path)
    assert all(counts[f"split/{i}"] == 1 for i in range(5)) and counts["join"] == 1


async def test_nodes_added_later_wait_for_existing_ones_and_a_finished_workflow_takes_none(
    client: Client, worker: WorkerProcess, tmp_path: Path
) -> None:
    wf = Workflow("grow")
    wf.node("done", "wf.noop")
    wf.node("slow", "wf.slow", {"seconds": 1})
    created = await client.create_workflow(wf)
    async for update in client.watch_workflow(created.id, timeout=WAIT_S):
        if any(n.name == "done" and n.state is TaskState.SUCCEEDED for n in update.nodes):
            break
    more = Workflow()
    more.node("late", "wf.collect", after=["done", "slow"])
    more.node("later", "wf.collect", after=["late"])
    added = await client.add_workflow_nodes(created.id, more)
    assert [n.name for n in added] == ["late", "later"]
    finished = await client.wait_workflow(created.id, timeout=WAIT_S)

    assert finished.state is WorkflowState.SUCCEEDED
    late = (await client.get(finished.node("late").task_id)).result
    assert late["parents"] == {"done": None, "slow": "slept"}
    with pytest.raises(TaskyardError) as refused:
        await client.add_workflow_nodes(created.id, more)
    assert refused.value.code is grpc.StatusCode.FAILED_PRECONDITION
    assert refused.value.reason == "WORKFLOW_FINISHED"


async def test_celery_style_chord_hands_every_header_result_to_the_body(
    client: Client, worker: WorkerProcess
) -> None:
    flow = chain(
        TaskSpec("wf.collect", "start"),
        chord([TaskSpec("wf.collect", i) for i in range(3)], TaskSpec("wf.collect", "sum")),
        group(TaskSpec("wf.noop"), TaskSpec("wf.noop")),
    )
    done = await client.wait_workflow(
        (await client.create_workflow(flow.to_workflow("canvas"))).id, timeout=WAIT_S
    )
    assert [n.name for n in done.nodes] == ["0", "1.0.0", "1.0.1", "1.0.2", "1.1", "2.0", "2.1"]
    assert done.node("2.0").depends_on == ("1.1",)
    body = (await client.get(done.node("1.1").task_id)).result
    assert {k: v["payload"] for k, v in body["parents"].items()} == {
        "1.0.0": 0,
        "1.0.1": 1,
        "1.0.2": 2,
    }


async def test_a_workflow_finishes_with_no_client_connected(
    broker: Broker, worker: WorkerProcess
) -> None:
    async with Client(broker.target) as first:
        wf = Workflow("alone")
        a = wf.node("a", "wf.noop", {"seconds": 0.3})
        wf.node("b", "wf.noop", after=[a])
        created = await first.create_workflow(wf)
    deadline = time.monotonic() + WAIT_S
    async with Client(broker.target) as later:
        done = await later.wait_workflow(created.id, timeout=max(1.0, deadline - time.monotonic()))
    assert done.state is WorkflowState.SUCCEEDED


async def test_typed_tasks_build_nodes_and_read_their_parents_typed(
    client: Client, worker: WorkerProcess
) -> None:
    from tests.workflow_workers import point, total

    wf = Workflow("typed")
    p1 = wf.add("p1", point.call(1, 2))
    p2 = wf.add("p2", point.call(x=3, y=4))
    wf.add("sum", total.call(), after=[p1, p2])
    done = await client.wait_workflow((await client.create_workflow(wf)).id, timeout=WAIT_S)

    assert done.state is WorkflowState.SUCCEEDED
    assert (await client.get(done.node("sum").task_id)).result == {"sum": 10, "types": ["Point"]}
