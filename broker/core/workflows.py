"""Workflows as pure logic: trigger rules, the release decision, graph checks, limits.

A workflow's nodes are ordinary tasks. A node with parents waits BLOCKED
until `decide` says its rule holds (RELEASE) or can no longer hold (SKIP),
from counts of how its parents ended. The engine keeps those counts in the
transaction that ends each parent (engine/flows.py); everything here is
arithmetic on them, shared with the tests.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum, IntEnum

from broker.core.models import NewTask
from broker.core.record import record
from broker.core.task_state import TaskState
from broker.errors import InvalidArgument

# Limits, documented in docs/workflows.md#limits.
MAX_NODES_PER_CALL = 10_000  # CreateWorkflow, AddWorkflowNodes, a template
MAX_EDGES_PER_CALL = 100_000
MAX_NODES_PER_WORKFLOW = 100_000  # spawned children included
MAX_SPAWN = 1_000  # children per SpawnNodes call
MAX_INLINE_PARENTS = 100  # more parents than this: the assignment lists none (by reference)

_NODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,199}$")


class Rule(IntEnum):
    """Values equal the protobuf TriggerRule numbers."""

    ALL_SUCCEEDED = 1
    ALL_FINISHED = 2
    ANY_FAILED = 3


# Rules of nodes that run after failures: FAIL_FAST spares them.
CLEANUP_RULES = frozenset({Rule.ALL_FINISHED, Rule.ANY_FAILED})


class FailurePolicy(IntEnum):
    """Values equal the protobuf FailurePolicy numbers."""

    CONTINUE = 1
    FAIL_FAST = 2


class WorkflowState(IntEnum):
    """Values equal the protobuf WorkflowState numbers."""

    RUNNING = 1
    SUCCEEDED = 2
    FAILED = 3
    CANCELLED = 4


class Outcome(IntEnum):
    """How a finished parent counts for its children."""

    OK = 1
    FAILED = 2
    CANCELLED = 3
    SKIPPED = 4


_OUTCOME = {
    TaskState.SUCCEEDED: Outcome.OK,
    TaskState.FAILED: Outcome.FAILED,
    TaskState.DEAD: Outcome.FAILED,
    TaskState.EXPIRED: Outcome.FAILED,  # never silently ignored
    TaskState.CANCELLED: Outcome.CANCELLED,
    TaskState.SKIPPED: Outcome.SKIPPED,
}


def outcome_of(state: TaskState) -> Outcome | None:
    """The outcome class of a terminal state; None for a state that is not final."""
    return _OUTCOME.get(state)


@record
class Counts:
    """What a node waits for and how much of it has finished.

    `open_spawners` counts parents that may still spawn children the node
    joins (`join_spawned`): while it is above 0, `total` may still grow.
    """

    total: int
    ok: int = 0
    failed: int = 0
    cancelled: int = 0
    skipped: int = 0
    open_spawners: int = 0

    @property
    def done(self) -> int:
        return self.ok + self.failed + self.cancelled + self.skipped

    def plus(self, outcome: Outcome, n: int = 1) -> Counts:
        return Counts(
            self.total,
            self.ok + n * (outcome is Outcome.OK),
            self.failed + n * (outcome is Outcome.FAILED),
            self.cancelled + n * (outcome is Outcome.CANCELLED),
            self.skipped + n * (outcome is Outcome.SKIPPED),
            self.open_spawners,
        )


class Verdict(Enum):
    WAIT = "wait"
    RELEASE = "release"
    SKIP = "skip"


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    reason: str = ""  # for SKIP: the error type recorded on the node


WAIT = Decision(Verdict.WAIT)
RELEASE = Decision(Verdict.RELEASE)


def decide(rule: Rule, c: Counts) -> Decision:
    """Whether a node runs, is skipped, or waits, given how its parents ended so far."""
    complete = c.open_spawners == 0 and c.done >= c.total
    if rule is Rule.ALL_SUCCEEDED:
        if c.failed:
            return Decision(Verdict.SKIP, "UpstreamFailed")
        if c.cancelled:
            return Decision(Verdict.SKIP, "UpstreamCancelled")
        if c.skipped:
            return Decision(Verdict.SKIP, "UpstreamSkipped")
        return RELEASE if complete else WAIT
    if rule is Rule.ALL_FINISHED:
        return RELEASE if complete else WAIT
    if c.failed:  # ANY_FAILED
        return RELEASE
    return Decision(Verdict.SKIP, "NoParentFailed") if complete else WAIT


SKIP_MESSAGES = {
    "UpstreamFailed": "a parent failed, so its trigger rule (all succeeded) cannot hold",
    "UpstreamCancelled": "a parent was cancelled, so its trigger rule (all succeeded) cannot hold",
    "UpstreamSkipped": "a parent was skipped, so its trigger rule (all succeeded) cannot hold",
    "NoParentFailed": "every parent finished and none failed (trigger rule: any failed)",
}


def final_state(failed: int, cancelled: int) -> WorkflowState:
    """The state of a workflow whose every node finished."""
    if failed:
        return WorkflowState.FAILED
    if cancelled:
        return WorkflowState.CANCELLED
    return WorkflowState.SUCCEEDED


# --- What to create -------------------------------------------------------------------------


@record
class NewNode:
    """A node to insert: its task (workflow_id and node set), parents by name, rule."""

    task: NewTask
    parents: tuple[str, ...] = ()
    rule: Rule = Rule.ALL_SUCCEEDED
    join_spawned: bool = False

    @property
    def name(self) -> str:
        assert self.task.node is not None
        return self.task.node

    @property
    def gated(self) -> bool:
        """Keeps a gate row (counters): more than one parent, or a join of spawned children.

        A node with one parent needs none: that parent's single move to a
        final state decides it, and only the transaction making that move can.
        """
        return len(self.parents) > 1 or self.join_spawned


@dataclass(frozen=True, slots=True)
class NewWorkflow:
    id: str
    name: str
    nodes: Sequence[NewNode]
    failure_policy: FailurePolicy
    created_at: int
    request_id: str | None = None
    owner: str | None = None
    labels: str | None = None  # JSON
    template_name: str | None = None
    template_version: int | None = None
    params: str | None = None  # JSON


@dataclass(frozen=True, slots=True)
class Gate:
    """A gated node's counters as stored, with its rule."""

    task_id: str
    rule: Rule
    counts: Counts
    decided: bool


# --- Checking a graph -----------------------------------------------------------------------


def node_name(value: str, where: str) -> str:
    if not _NODE.match(value):
        raise InvalidArgument(
            f"{where} {value[:60]!r} must be 1 to 200 letters, digits and _ . : - , starting "
            "with a letter or digit (no '/': spawned children are named spawner/key)",
            reason="INVALID_WORKFLOW",
        )
    return value


def check_graph(
    nodes: Sequence[tuple[str, Sequence[str]]],
    *,
    existing: Iterable[str] = (),
    max_nodes: int = MAX_NODES_PER_CALL,
) -> list[str]:
    """Refuse a graph that cannot run; return its names in an order parents-first.

    `nodes` are (name, dependency names); `existing` names nodes already in
    the workflow, which new nodes may depend on (they cannot depend on new
    ones, so no cycle can pass through them).
    """
    if not nodes:
        raise InvalidArgument("a workflow needs at least one node", reason="INVALID_WORKFLOW")
    if len(nodes) > max_nodes:
        raise InvalidArgument(
            f"{len(nodes)} nodes given; at most {max_nodes} per call",
            reason="WORKFLOW_TOO_LARGE",
        )
    edges = sum(len(set(deps)) for _, deps in nodes)
    if edges > MAX_EDGES_PER_CALL:
        raise InvalidArgument(
            f"{edges} dependencies given; at most {MAX_EDGES_PER_CALL} per call",
            reason="WORKFLOW_TOO_LARGE",
        )
    old = set(existing)
    new: dict[str, set[str]] = {}
    for index, (name, deps) in enumerate(nodes):
        node_name(name, f"nodes[{index}].name")
        if name in new or name in old:
            raise InvalidArgument(
                f"nodes[{index}].name {name!r} is used twice; node names are unique in a workflow",
                reason="DUPLICATE_NODE",
            )
        new[name] = set(deps)
    known = old | new.keys()
    for name, wanted in new.items():
        unknown = sorted(wanted - known)
        if unknown:
            raise InvalidArgument(
                f"node {name!r} depends on {unknown[0]!r}, which is no node of the workflow",
                reason="UNKNOWN_DEPENDENCY",
            )
    return _topological(new, old)


def _topological(graph: Mapping[str, set[str]], old: set[str]) -> list[str]:
    """Kahn's algorithm over the new nodes; a leftover is a cycle, named in the error."""
    waiting = {name: len(deps - old) for name, deps in graph.items()}
    children: dict[str, list[str]] = {}
    for name, deps in graph.items():
        for dep in deps - old:
            children.setdefault(dep, []).append(name)
    ready = [name for name, n in waiting.items() if n == 0]
    order: list[str] = []
    while ready:
        name = ready.pop()
        order.append(name)
        for child in children.get(name, ()):
            waiting[child] -= 1
            if waiting[child] == 0:
                ready.append(child)
    if len(order) < len(graph):
        stuck = sorted(name for name, n in waiting.items() if n > 0)
        raise InvalidArgument(
            f"the dependencies form a cycle through {', '.join(map(repr, stuck[:5]))}",
            reason="WORKFLOW_CYCLE",
        )
    return order


@dataclass
class Tally:
    """A workflow's counters moving in one transaction (see store.workflows.account)."""

    finished: int = 0
    failed: int = 0
    cancelled: int = 0
    added: int = 0
    tasks: list[str] = field(default_factory=list)

    def count(self, state: TaskState) -> None:
        self.finished += 1
        outcome = outcome_of(state)
        self.failed += outcome is Outcome.FAILED
        self.cancelled += outcome is Outcome.CANCELLED
