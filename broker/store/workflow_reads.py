"""Named queries that read workflows: nodes and edges, parents' outcomes, listings, templates.

Reads run on the reader pool, except `parent_outcomes` (in the claim's
transaction) and the template and purge writes at the end, which run in
committer transactions.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.core.models import Failure, ParentOutcome
from broker.core.task_state import TaskState
from broker.core.workflows import MAX_INLINE_PARENTS, Rule, WorkflowState
from broker.store.dialect import insert, is_pg
from broker.store.schema import (
    task,
    task_attempt,
    task_payload,
    task_result,
    wf_edge,
    wf_gate,
    wf_template,
    workflow,
)
from broker.store.workflows import chunks

_S = TaskState
_STATE = {int(s): s for s in TaskState}  # faster than TaskState(n) per row


@dataclass(frozen=True, slots=True)
class WorkflowRecord:
    id: str
    name: str
    state: WorkflowState
    failure_policy: int
    generation: int
    nodes_total: int
    nodes_open: int
    nodes_failed: int
    nodes_cancelled: int
    labels: str | None
    template_name: str | None
    template_version: int | None
    params: str | None
    request_id: str | None
    owner: str | None
    created_at: int
    updated_at: int
    finished_at: int | None


def _workflow(row: Any) -> WorkflowRecord:
    m = row._mapping
    return WorkflowRecord(**{**m, "state": WorkflowState(m["state"])})


@dataclass(frozen=True, slots=True)
class NodeRow:
    task_id: str
    name: str
    type: str
    queue: str
    state: TaskState
    attempt: int
    error: Failure | None
    error_attempt: int | None
    started_at: int | None
    finished_at: int | None
    updated_at: int
    parents: tuple[str, ...] = ()  # node names
    rule: Rule = Rule.ALL_SUCCEEDED
    join_spawned: bool = False


# --- Workflows and their nodes --------------------------------------------------------------


async def get_workflow(conn: AsyncConnection, wf_id: str) -> WorkflowRecord | None:
    row = (await conn.execute(sa.select(workflow).where(workflow.c.id == wf_id))).first()
    return None if row is None else _workflow(row)


async def list_workflows(
    conn: AsyncConnection,
    *,
    state: WorkflowState | None,
    template_name: str | None,
    owner: str | None,
    before_id: str | None,
    limit: int,
) -> list[WorkflowRecord]:
    """Newest first; `before_id` is the keyset cursor of the previous page."""
    query = sa.select(workflow)
    if state is not None:
        query = query.where(workflow.c.state == int(state))
    if template_name is not None:
        query = query.where(workflow.c.template_name == template_name)
    if owner is not None:
        query = query.where(workflow.c.owner == owner)
    if before_id is not None:
        query = query.where(workflow.c.id < before_id)
    rows = await conn.execute(query.order_by(workflow.c.id.desc()).limit(limit))
    return [_workflow(r) for r in rows]


_NODE_COLUMNS = (
    task.c.id, task.c.node, task.c.type, task.c.queue, task.c.state, task.c.attempt,
    task.c.error_type, task.c.error_message, task.c.error_details, task.c.error_non_retryable,
    task.c.error_attempt, task.c.started_at, task.c.finished_at, task.c.updated_at,
)  # fmt: skip


def _error(r: Any) -> Failure | None:
    if r.error_type is None:
        return None
    return Failure(
        r.error_type, r.error_message or "", r.error_details or "", bool(r.error_non_retryable)
    )


async def changed_nodes(conn: AsyncConnection, wf_id: str, since: int) -> list[NodeRow]:
    """A workflow's nodes written at or after `since` (µs), for WatchWorkflow: a watcher of
    a large workflow pays for what changed, not for every node on every change."""
    query = sa.select(task.c.id).where(task.c.workflow_id == wf_id, task.c.updated_at >= since)
    ids = [r[0] for r in await conn.execute(query)]
    return await nodes_of(conn, wf_id, ids) if ids else []


async def nodes_of(
    conn: AsyncConnection, wf_id: str, ids: Sequence[str] | None = None
) -> list[NodeRow]:
    """A workflow's nodes (every one, or those of `ids`) in creation order, with their
    parents by name and their rules."""
    rows: list[Any] = []
    if ids is None:
        query = sa.select(*_NODE_COLUMNS).where(task.c.workflow_id == wf_id)
        rows = list(await conn.execute(query.order_by(task.c.id)))
        edges = list(
            await conn.execute(
                sa.select(wf_edge.c.child_id, wf_edge.c.parent_id, wf_edge.c.rule, wf_edge.c.joins)
                .join(task, task.c.id == wf_edge.c.child_id)
                .where(task.c.workflow_id == wf_id)
            )
        )
        names = {r.id: r.node for r in rows}
    else:
        edges = []
        for part in chunks(list(ids)):
            query = sa.select(*_NODE_COLUMNS).where(task.c.id.in_(part))
            rows += list(await conn.execute(query))
            edges += list(
                await conn.execute(
                    sa.select(wf_edge.c.child_id, task.c.node, wf_edge.c.rule, wf_edge.c.joins)
                    .join(task, task.c.id == wf_edge.c.parent_id)
                    .where(wf_edge.c.child_id.in_(part))
                )
            )
        rows.sort(key=lambda r: r.id)
        names = {}
    parents: dict[str, list[str]] = {}
    rules: dict[str, Rule] = {}
    joins: set[str] = set()
    for child, parent, rule, join in edges:
        parents.setdefault(child, []).append(names.get(parent, parent))
        rules[child] = Rule(rule)
        if join:
            joins.add(child)
    return [
        NodeRow(
            r.id, r.node, r.type, r.queue, _STATE[r.state], r.attempt, _error(r), r.error_attempt,
            r.started_at, r.finished_at, r.updated_at,
            tuple(sorted(parents.get(r.id, ()))), rules.get(r.id, Rule.ALL_SUCCEEDED),
            r.id in joins,
        )
        for r in rows
    ]  # fmt: skip


async def node_ids(
    conn: AsyncConnection, wf_id: str, names: Sequence[str]
) -> dict[str, tuple[str, TaskState]]:
    """{name: (task id, state)} of the named nodes that exist."""
    out: dict[str, tuple[str, TaskState]] = {}
    for part in chunks(list(names)):
        rows = await conn.execute(
            sa.select(task.c.node, task.c.id, task.c.state).where(
                task.c.workflow_id == wf_id, task.c.node.in_(part)
            )
        )
        out |= {r.node: (r.id, _STATE[r.state]) for r in rows}
    return out


async def spawned_by(conn: AsyncConnection, wf_id: str, spawner: str) -> dict[str, TaskState]:
    """{task id: state} of the children a node spawned (named `spawner/key`)."""
    depth = spawner.count("/") + 1
    rows = await conn.execute(
        sa.select(task.c.id, task.c.node, task.c.state).where(
            task.c.workflow_id == wf_id, task.c.node.like(_escape(spawner) + "/%", escape="\\")
        )
    )
    return {r.id: _STATE[r.state] for r in rows if r.node.count("/") == depth}


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def workflow_edges(
    conn: AsyncConnection, wf_id: str
) -> list[tuple[str, str, Rule, bool, bool]]:
    """(child, parent, rule, gated, joins) for every edge of a workflow."""
    rows = await conn.execute(
        sa.select(
            wf_edge.c.child_id,
            wf_edge.c.parent_id,
            wf_edge.c.rule,
            wf_edge.c.gated,
            wf_edge.c.joins,
        )
        .join(task, task.c.id == wf_edge.c.child_id)
        .where(task.c.workflow_id == wf_id)
    )
    return [(r[0], r[1], Rule(r[2]), bool(r[3]), bool(r[4])) for r in rows]


# --- Parents' outcomes for a child's worker -------------------------------------------------


def _parent_select() -> sa.Select[Any]:
    return (
        sa.select(
            wf_edge.c.child_id, task.c.id, task.c.node, task.c.state, task.c.error_type,
            task.c.error_message, task.c.error_details, task.c.error_non_retryable,
            task.c.error_attempt, sa.func.length(task_result.c.data).label("size"),
        )
        .join(task, task.c.id == wf_edge.c.parent_id)
        .outerjoin(task_result, task_result.c.task_id == wf_edge.c.parent_id)
    )  # fmt: skip


def _outcome(r: Any, data: bytes | None, omitted: bool) -> ParentOutcome:
    state = _STATE[r.state]
    return ParentOutcome(
        r.node, r.id, state, data, omitted, None if state is _S.SUCCEEDED else _error(r)
    )


SMALL = 64 * 1024  # results up to this size come with the first read
_IDS: sa.BindParameter[list[str]] = sa.bindparam("b_ids", expanding=True)
# Claimed nodes' parents, small results included; joins of more than 100 parents left out.
_PARENTS = (
    _parent_select()
    .add_columns(
        sa.case((sa.func.length(task_result.c.data) <= SMALL, task_result.c.data)).label("data")
    )
    .outerjoin(wf_gate, wf_gate.c.task_id == wf_edge.c.child_id)
    .where(
        wf_edge.c.child_id.in_(_IDS),
        sa.or_(wf_gate.c.n_total.is_(None), wf_gate.c.n_total <= MAX_INLINE_PARENTS),
    )
)
_WIDE = sa.select(wf_gate.c.task_id).where(
    wf_gate.c.task_id.in_(_IDS), wf_gate.c.n_total > MAX_INLINE_PARENTS
)
_DATA = sa.select(task_result.c.task_id, task_result.c.data).where(task_result.c.task_id.in_(_IDS))


async def parent_outcomes(
    conn: AsyncConnection, child_ids: Sequence[str], *, budget: int
) -> dict[str, tuple[tuple[ParentOutcome, ...], bool]]:
    """Each node's parents, results inline within `budget` bytes per node; and whether the
    worker must fetch the rest (ListNodeParents). Joins of more than 100 parents list none.

    One statement in the common case (small results); a second reads results too large
    for the first that still fit, a third tells joins too wide to list from roots.
    """
    rows: list[Any] = []
    for part in chunks(child_ids):
        rows += list(await conn.execute(_PARENTS, {"b_ids": list(part)}))
    by_child: dict[str, list[Any]] = {}
    for r in rows:
        by_child.setdefault(r.child_id, []).append(r)
    plans: dict[str, list[tuple[Any, bool]]] = {}
    large: list[str] = []
    for child, parents in by_child.items():
        parents.sort(key=lambda r: r.node)
        left, plan = budget, []
        for r in parents:
            size = r.size or 0
            inline = size <= left
            left -= size if inline else 0
            plan.append((r, not inline))
            if inline and size > SMALL:
                large.append(r.id)
        plans[child] = plan
    data = await _results(conn, large) if large else {}
    out: dict[str, tuple[tuple[ParentOutcome, ...], bool]] = {}
    for child, plan in plans.items():
        outcomes = tuple(
            _outcome(r, None if omitted else _data(r, data), omitted) for r, omitted in plan
        )
        out[child] = (outcomes, any(omitted for _, omitted in plan))
    missing = [c for c in child_ids if c not in out]
    for part in chunks(missing):
        out |= {r[0]: ((), True) for r in await conn.execute(_WIDE, {"b_ids": list(part)})}
    return out


def _data(r: Any, large: dict[str, bytes]) -> bytes | None:
    if r.data is not None:
        return bytes(r.data)
    return large.get(r.id)


async def _results(conn: AsyncConnection, ids: Sequence[str]) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for part in chunks(list(ids)):
        out |= {r[0]: bytes(r[1]) for r in await conn.execute(_DATA, {"b_ids": list(part)})}
    return out


async def list_parents(
    conn: AsyncConnection, task_id: str, *, after: str | None, limit: int, budget: int
) -> tuple[list[ParentOutcome], str | None]:
    """One page of a node's parents by name, results included; and the last name if more."""
    query = _parent_select().add_columns(task_result.c.data).where(wf_edge.c.child_id == task_id)
    if after is not None:
        query = query.where(task.c.node > after)
    rows = list(await conn.execute(query.order_by(task.c.node).limit(limit + 1)))
    page: list[ParentOutcome] = []
    used = 0
    for r in rows[:limit]:
        size = r.size or 0
        if page and used + size > budget:
            return page, page[-1].node
        used += size
        page.append(_outcome(r, None if r.data is None else bytes(r.data), False))
    return page, (page[-1].node if len(rows) > limit else None)


# --- Templates ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TemplateRow:
    name: str
    version: int
    spec: bytes
    spec_hash: str
    created_at: int


def _template(r: Any) -> TemplateRow:
    return TemplateRow(r.name, r.version, bytes(r.spec), r.spec_hash, r.created_at)


async def get_template(conn: AsyncConnection, name: str, version: int = 0) -> TemplateRow | None:
    query = sa.select(wf_template).where(wf_template.c.name == name)
    if version:
        query = query.where(wf_template.c.version == version)
    row = (await conn.execute(query.order_by(wf_template.c.version.desc()).limit(1))).first()
    return None if row is None else _template(row)


async def save_template(
    conn: AsyncConnection, name: str, spec: bytes, spec_hash: str, now: int
) -> tuple[TemplateRow, bool]:
    """Register a version: the newest one when its spec is the same, else the next (created)."""
    for _ in range(10):
        latest = await get_template(conn, name)
        if latest is not None and latest.spec_hash == spec_hash:
            return latest, False
        version = 1 if latest is None else latest.version + 1
        row = TemplateRow(name, version, spec, spec_hash, now)
        result = await conn.execute(
            insert(wf_template, pg=is_pg(conn))
            .values(name=name, version=version, spec=spec, spec_hash=spec_hash, created_at=now)
            .on_conflict_do_nothing()
        )
        if result.rowcount:
            return row, True
    raise RuntimeError(f"template {name!r} kept changing while it was registered")


async def list_templates(
    conn: AsyncConnection, *, name: str | None, after: tuple[str, int] | None, limit: int
) -> list[TemplateRow]:
    """Every version of `name` (newest first), or the latest version of each name by name."""
    if name is not None:
        query = sa.select(wf_template).where(wf_template.c.name == name)
        if after is not None:
            query = query.where(wf_template.c.version < after[1])
        query = query.order_by(wf_template.c.version.desc())
    else:
        latest = (
            sa.select(wf_template.c.name, sa.func.max(wf_template.c.version).label("v"))
            .group_by(wf_template.c.name)
            .subquery()
        )
        query = sa.select(wf_template).join(
            latest,
            sa.and_(latest.c.name == wf_template.c.name, latest.c.v == wf_template.c.version),
        )
        if after is not None:
            query = query.where(wf_template.c.name > after[0])
        query = query.order_by(wf_template.c.name)
    return [_template(r) for r in await conn.execute(query.limit(limit))]


# --- Retention ------------------------------------------------------------------------------


async def purge_workflows(
    conn: AsyncConnection, cutoffs: dict[WorkflowState, int], *, limit: int
) -> tuple[int, Counter[tuple[str, TaskState]]]:
    """Delete finished workflows older than their state's cutoff, with all their nodes.

    Returns how many workflows went, and how many nodes per (queue, state).
    """
    ids: list[str] = []
    for state, before in cutoffs.items():
        rows = await conn.execute(
            sa.select(workflow.c.id)
            .where(
                sa.text("finished_at IS NOT NULL"),
                workflow.c.finished_at < before,
                workflow.c.state == int(state),
            )
            .limit(limit - len(ids))
        )
        ids += [r[0] for r in rows]
        if len(ids) >= limit:
            break
    deleted: Counter[tuple[str, TaskState]] = Counter()
    for part in chunks(ids, 200):
        nodes = list(
            await conn.execute(
                sa.select(task.c.id, task.c.queue, task.c.state).where(task.c.workflow_id.in_(part))
            )
        )
        deleted.update((r.queue, _STATE[r.state]) for r in nodes)
        node_ids = [r.id for r in nodes]
        for piece in chunks(node_ids):
            for table, column in (
                (task_payload, task_payload.c.task_id),
                (task_result, task_result.c.task_id),
                (task_attempt, task_attempt.c.task_id),
                (wf_gate, wf_gate.c.task_id),
                (wf_edge, wf_edge.c.child_id),
            ):
                await conn.execute(sa.delete(table).where(column.in_(piece)))
            await conn.execute(sa.delete(task).where(task.c.id.in_(piece)))
        await conn.execute(sa.delete(workflow).where(workflow.c.id.in_(part)))
    return len(ids), deleted
