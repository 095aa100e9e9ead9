"""Workflow logic without I/O: trigger rules, graph checks, template parameters, canvas shapes."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.core.templates import Param, check_params, placeholders, resolve, substitute
from broker.core.workflows import (
    Counts,
    Outcome,
    Rule,
    Verdict,
    WorkflowState,
    check_graph,
    decide,
    final_state,
)
from broker.errors import InvalidArgument
from worker_sdk import TaskSpec, chain, chord, group

R, V = Rule, Verdict

# (rule, total, ok, failed, cancelled, skipped, open spawners) -> verdict (reason)
TABLE = [
    # all_succeeded: every parent ok; any other outcome decides a skip at once.
    (R.ALL_SUCCEEDED, 2, 2, 0, 0, 0, 0, V.RELEASE, ""),
    (R.ALL_SUCCEEDED, 2, 1, 0, 0, 0, 0, V.WAIT, ""),
    (R.ALL_SUCCEEDED, 3, 0, 1, 0, 0, 0, V.SKIP, "UpstreamFailed"),  # 2 still running
    (R.ALL_SUCCEEDED, 2, 1, 0, 1, 0, 0, V.SKIP, "UpstreamCancelled"),
    (R.ALL_SUCCEEDED, 2, 1, 0, 0, 1, 0, V.SKIP, "UpstreamSkipped"),
    (R.ALL_SUCCEEDED, 2, 0, 1, 1, 1, 0, V.SKIP, "UpstreamFailed"),  # failure named first
    (R.ALL_SUCCEEDED, 2, 2, 0, 0, 0, 1, V.WAIT, ""),  # a spawner may add children still
    # all_finished: however they ended, once all did.
    (R.ALL_FINISHED, 3, 1, 1, 1, 0, 0, V.RELEASE, ""),
    (R.ALL_FINISHED, 3, 0, 0, 0, 2, 0, V.WAIT, ""),
    (R.ALL_FINISHED, 1, 1, 0, 0, 0, 1, V.WAIT, ""),
    # any_failed: at the first failure, even with parents running; skipped once all
    # finished with none failed (cancelled and skipped are not failures).
    (R.ANY_FAILED, 3, 0, 1, 0, 0, 0, V.RELEASE, ""),
    (R.ANY_FAILED, 2, 1, 0, 1, 0, 0, V.SKIP, "NoParentFailed"),
    (R.ANY_FAILED, 2, 1, 0, 0, 0, 0, V.WAIT, ""),
    (R.ANY_FAILED, 1, 0, 1, 0, 0, 1, V.RELEASE, ""),
]


@pytest.mark.parametrize("rule,total,ok,failed,cancelled,skipped,spawners,verdict,reason", TABLE)
def test_decide(
    rule: Rule,
    total: int,
    ok: int,
    failed: int,
    cancelled: int,
    skipped: int,
    spawners: int,
    verdict: Verdict,
    reason: str,
) -> None:
    d = decide(rule, Counts(total, ok, failed, cancelled, skipped, spawners))
    assert (d.verdict, d.reason) == (verdict, reason)


def test_a_workflow_fails_over_being_cancelled_and_succeeds_only_clean() -> None:
    assert final_state(1, 1) is WorkflowState.FAILED
    assert final_state(0, 2) is WorkflowState.CANCELLED
    assert final_state(0, 0) is WorkflowState.SUCCEEDED


# --- Counting in any order decides as the final outcomes would ------------------------------


@st.composite
def dags(draw: st.DrawFn) -> tuple[list[list[int]], list[Rule], list[bool], int]:
    """Random DAGs (edges i -> j only for i < j), rules, how each node ends if it runs."""
    n = draw(st.integers(1, 25))
    parents = [
        sorted(draw(st.sets(st.integers(0, i - 1), max_size=4))) if i else [] for i in range(n)
    ]
    rules = [draw(st.sampled_from(list(Rule))) for _ in range(n)]
    fails = [draw(st.booleans()) for _ in range(n)]
    return parents, rules, fails, draw(st.integers(0, 2**32))


def _reference(parents: list[list[int]], rules: list[Rule], fails: list[bool]) -> list[Outcome]:
    """Each node's outcome from its parents' final outcomes, in topological order."""
    out: list[Outcome] = []
    for i, ps in enumerate(parents):
        counts = Counts(len(ps))
        for p in ps:
            counts = counts.plus(out[p])
        verdict = decide(rules[i], counts).verdict if ps else Verdict.RELEASE
        assert verdict is not Verdict.WAIT
        out.append(
            Outcome.SKIPPED
            if verdict is Verdict.SKIP
            else Outcome.FAILED
            if fails[i]
            else Outcome.OK
        )
    return out


@settings(max_examples=300, deadline=None)
@given(dags())
def test_counting_parents_as_they_finish_agrees_with_their_final_outcomes(
    case: tuple[list[list[int]], list[Rule], list[bool], int],
) -> None:
    """The broker counts each finished parent into its children as it finishes, in whatever
    order workers finish them, and decides as soon as a rule is decided: that must end where
    deciding from every parent's final outcome does, with each node decided once."""
    parents, rules, fails, seed = case
    rng = random.Random(seed)
    children: dict[int, list[int]] = {}
    for child, ps in enumerate(parents):
        for p in ps:
            children.setdefault(p, []).append(child)
    counts = {i: Counts(len(ps)) for i, ps in enumerate(parents)}
    outcome: dict[int, Outcome] = {}
    decided: set[int] = set()
    running = [i for i, ps in enumerate(parents) if not ps]  # roots start at once

    def finish(node: int, result: Outcome) -> None:
        outcome[node] = result
        for child in children.get(node, ()):
            counts[child] = counts[child].plus(result)
            if child in decided:
                continue
            d = decide(rules[child], counts[child])
            if d.verdict is Verdict.WAIT:
                continue
            decided.add(child)
            if d.verdict is Verdict.RELEASE:
                running.append(child)
            else:
                finish(child, Outcome.SKIPPED)  # final at once: its children settle too

    while running:
        node = running.pop(rng.randrange(len(running)))
        finish(node, Outcome.FAILED if fails[node] else Outcome.OK)

    assert [outcome.get(i) for i in range(len(parents))] == _reference(parents, rules, fails)


# --- Graph checks -----------------------------------------------------------------------------


def test_a_graph_is_ordered_parents_first() -> None:
    order = check_graph([("c", ["a", "b"]), ("b", ["a"]), ("a", [])])
    assert order.index("a") < order.index("b") < order.index("c")


def test_new_nodes_may_depend_on_existing_ones() -> None:
    assert check_graph([("x", ["old"])], existing=["old"]) == ["x"]


@pytest.mark.parametrize(
    "nodes,reason",
    [
        ([], "INVALID_WORKFLOW"),
        ([("a", ["b"]), ("b", ["a"])], "WORKFLOW_CYCLE"),
        ([("a", ["a"])], "WORKFLOW_CYCLE"),
        ([("a", []), ("a", [])], "DUPLICATE_NODE"),
        ([("a", ["zz"])], "UNKNOWN_DEPENDENCY"),
        ([("x/y", [])], "INVALID_WORKFLOW"),
        ([("", [])], "INVALID_WORKFLOW"),
        ([("a" * 201, [])], "INVALID_WORKFLOW"),
        ([(f"n{i}", []) for i in range(10_001)], "WORKFLOW_TOO_LARGE"),
    ],
)
def test_bad_graphs(nodes: list[tuple[str, list[str]]], reason: str) -> None:
    with pytest.raises(InvalidArgument) as error:
        check_graph(nodes)
    assert error.value.reason == reason


def test_too_many_dependencies() -> None:
    roots: list[tuple[str, list[str]]] = [(f"r{i}", []) for i in range(400)]
    joins = [(f"j{i}", [f"r{k}" for k in range(400)]) for i in range(251)]  # 100,400 edges
    with pytest.raises(InvalidArgument) as error:
        check_graph([*roots, *joins])
    assert error.value.reason == "WORKFLOW_TOO_LARGE"


# --- Template parameters ----------------------------------------------------------------------


def test_placeholders_take_the_value_whole_or_as_text() -> None:
    params = {"day": "mon", "n": 3, "tags": ["a", "b"]}
    given = {
        "d": "{{ params.day }}",
        "n": "{{params.n}}",
        "all": "{{ params.tags }}",
        "text": "day {{ params.day }} n={{ params.n }}",
        "list": ["{{ params.n }}", 1],
    }
    assert substitute(given, params) == {
        "d": "mon", "n": 3, "all": ["a", "b"], "text": "day mon n=3", "list": [3, 1],
    }  # fmt: skip
    assert sorted(set(placeholders(given))) == ["day", "n", "tags"]


def test_parameters_are_typed_defaulted_and_required() -> None:
    params = [
        Param("day", "string", required=True),
        Param("n", "integer", 4, has_default=True),
        Param("free"),
    ]
    check_params(params)
    assert resolve(params, {"day": "mon"}) == {"day": "mon", "n": 4, "free": None}
    assert resolve(params, {"day": "x", "n": 2.0, "free": {"a": 1}})["n"] == 2.0
    for bad in ({}, {"day": 1}, {"day": "x", "n": 1.5}, {"day": "x", "other": 1}):
        with pytest.raises(InvalidArgument) as error:
            resolve(params, bad)
        assert error.value.reason == "INVALID_PARAMS"


@pytest.mark.parametrize(
    "params",
    [
        [Param("1x")],
        [Param("a"), Param("a")],
        [Param("a", "date")],
        [Param("a", "integer", "four", has_default=True)],
    ],
)
def test_bad_declarations(params: list[Param]) -> None:
    with pytest.raises(InvalidArgument) as error:
        check_params(params)
    assert error.value.reason == "INVALID_TEMPLATE"


# --- Celery-style canvas ----------------------------------------------------------------------


def _shape(canvas: object) -> dict[str, list[str]]:
    spec = canvas.to_workflow().to_proto()  # type: ignore[attr-defined]
    return {n.name: list(n.depends_on) for n in spec.nodes}


def test_chain_group_and_chord_compile_to_graphs() -> None:
    t = TaskSpec("t")
    assert _shape(chain(t, t, t)) == {"0": [], "1": ["0"], "2": ["1"]}
    assert _shape(group(t, t)) == {"0": [], "1": []}
    assert _shape(chord([t, t], t)) == {"0.0": [], "0.1": [], "1": ["0.0", "0.1"]}
    nested = chain(t, group(chain(t, t), t), t)
    assert _shape(nested) == {
        "0": [],
        "1.0.0": ["0"],
        "1.0.1": ["1.0.0"],
        "1.1": ["0"],
        "2": ["1.0.1", "1.1"],
    }


def test_the_table_covers_every_rule_and_verdict() -> None:
    assert {row[0] for row in TABLE} == set(Rule)
    assert {row[7] for row in TABLE} == set(Verdict)
