"""The tables. Instants are BIGINT microseconds since the epoch (UTC).

`task` is the narrow, hot row whose state flips on every dispatch and
completion; payloads and results live in their own tables so that a flip
rewrites about a hundred bytes, not a multi-kilobyte blob (SQLite rewrites the
whole record on UPDATE). Partial indexes cover exactly the rows each loop
scans: pending (claims), waiting for a time (promotion), running (lease
expiry) and finished (retention).
"""

from __future__ import annotations

import sqlalchemy as sa

from broker.core.task_state import TERMINAL, TaskState

metadata = sa.MetaData()


def state_is(
    *states: TaskState, column: sa.ColumnElement[int] | None = None
) -> sa.ColumnElement[bool]:
    """A state predicate with literal values.

    Literals rather than bound parameters let SQLite match the partial
    indexes, which it can only do when the query's WHERE visibly implies the
    index's.
    """
    if column is None:
        column = sa.literal_column("state")
    if len(states) == 1:
        return column == sa.literal_column(str(int(states[0])))
    return column.in_([sa.literal_column(str(int(s))) for s in states])


# The two namespaces of idempotency keys, spelled as the partial indexes are,
# so that SQLite can match a query's WHERE to them.
OWNED_KEY = "request_id IS NOT NULL AND owner IS NOT NULL"
OWNERLESS_KEY = "request_id IS NOT NULL AND owner IS NULL"

_TERMINAL_SQL = ", ".join(str(int(s)) for s in sorted(TERMINAL))

task = sa.Table(
    "task",
    metadata,
    sa.Column("id", sa.String(26), primary_key=True),
    sa.Column("queue", sa.String(200), nullable=False),
    sa.Column("type", sa.String(200), nullable=False),
    sa.Column("priority", sa.Integer, nullable=False),
    sa.Column("state", sa.SmallInteger, nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("max_attempts", sa.Integer, nullable=False),
    sa.Column("lost_count", sa.Integer, nullable=False),
    sa.Column("run_at", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
    sa.Column("started_at", sa.BigInteger),
    sa.Column("finished_at", sa.BigInteger),
    sa.Column("lease_id", sa.BigInteger),
    sa.Column("lease_expires_at", sa.BigInteger),
    sa.Column("worker_id", sa.String(200)),
    sa.Column("cancel_requested", sa.Boolean, nullable=False),
    sa.Column("request_id", sa.String(200)),
    sa.Column("labels", sa.Text),
    sa.Column("error_type", sa.String(200)),
    sa.Column("error_message", sa.Text),
    sa.Column("error_details", sa.Text),
    sa.Column("error_non_retryable", sa.Boolean),
    sa.Column("error_attempt", sa.Integer),
    sa.Column("progress_percent", sa.Float),
    sa.Column("progress_message", sa.Text),
    sa.Column("progress_step", sa.Integer),
    sa.Column("progress_total", sa.Integer),
    sa.Column("progress_at", sa.BigInteger),
    # Reliability (revision 0002): the snapshotted policy (NULL = the broker's
    # default), the attempts used before an operator's retry, timeouts, and
    # the current attempt's execution deadline.
    sa.Column("retry_policy", sa.Text),
    sa.Column("attempt_base", sa.Integer, nullable=False, server_default="0"),
    sa.Column("execution_timeout_us", sa.BigInteger),
    sa.Column("heartbeat_timeout_us", sa.BigInteger, nullable=False, server_default="10000000"),
    sa.Column("soft_timeout_us", sa.BigInteger),
    sa.Column("expire_at", sa.BigInteger),
    sa.Column("deadline_at", sa.BigInteger),
    # Flow control and tracing (revision 0004).
    sa.Column("concurrency_key", sa.String(200)),
    sa.Column("trace_context", sa.Text),
    # The identity that created it (revision 0006); NULL without authentication.
    sa.Column("owner", sa.String(200)),
    # The identity whose Lease stream holds the current lease (revision 0009);
    # NULL without authentication or for a lease taken before that revision.
    sa.Column("leased_by", sa.String(200)),
    # Workflow nodes (revision 0011): NULL for plain tasks, which pay nothing.
    sa.Column("workflow_id", sa.String(26)),
    sa.Column("node", sa.String(200)),
    # Lapsed leases (revision 0012): the id of a lease that was lost (expired or its
    # stream closed) while the task waits again, cleared when it is leased again; its
    # worker may still report or re-adopt it until then (store/leases.py). And the
    # reason CancelTask gave for a running task, which becomes its error message.
    sa.Column("lapsed_lease_id", sa.BigInteger),
    sa.Column("cancel_reason", sa.Text),
    sa.CheckConstraint(f"state BETWEEN 1 AND {max(TaskState)}", name="ck_task_state"),
    sa.CheckConstraint(
        f"(state IN ({_TERMINAL_SQL})) = (finished_at IS NOT NULL)", name="ck_task_finished"
    ),
    sa.CheckConstraint(
        f"(state = {int(TaskState.RUNNING)}) = (lease_id IS NOT NULL)", name="ck_task_leased"
    ),
    sa.Index(
        "ix_task_claim",
        "queue",
        sa.text("priority DESC"),
        "run_at",
        "id",
        sqlite_where=state_is(TaskState.PENDING),
        postgresql_where=state_is(TaskState.PENDING),
    ),
    sa.Index(
        "ix_task_due",
        "run_at",
        sqlite_where=state_is(TaskState.SCHEDULED, TaskState.RETRYING),
        postgresql_where=state_is(TaskState.SCHEDULED, TaskState.RETRYING),
    ),
    sa.Index(
        "ix_task_lease",
        "lease_expires_at",
        sqlite_where=state_is(TaskState.RUNNING),
        postgresql_where=state_is(TaskState.RUNNING),
    ),
    sa.Index(
        "ix_task_deadline",
        "deadline_at",
        sqlite_where=sa.text("state = 3 AND deadline_at IS NOT NULL"),
        postgresql_where=sa.text("state = 3 AND deadline_at IS NOT NULL"),
    ),
    sa.Index(
        "ix_task_expire",
        "expire_at",
        sqlite_where=sa.text("state IN (1, 2, 4) AND expire_at IS NOT NULL"),
        postgresql_where=sa.text("state IN (1, 2, 4) AND expire_at IS NOT NULL"),
    ),
    sa.Index(
        "ix_task_key_running",
        "concurrency_key",
        sqlite_where=sa.text("state = 3 AND concurrency_key IS NOT NULL"),
        postgresql_where=sa.text("state = 3 AND concurrency_key IS NOT NULL"),
    ),
    sa.Index(
        "ix_task_pending_age",
        "queue",
        "run_at",
        sqlite_where=sa.text("state = 2"),
        postgresql_where=sa.text("state = 2"),
    ),
    sa.Index(
        "ix_task_finished",
        "finished_at",
        sqlite_where=sa.text("finished_at IS NOT NULL"),
        postgresql_where=sa.text("finished_at IS NOT NULL"),
    ),
    sa.Index(
        "ix_task_owner",
        "owner",
        "id",
        sqlite_where=sa.text("owner IS NOT NULL"),
        postgresql_where=sa.text("owner IS NOT NULL"),
    ),
    # Idempotency keys are per owner (revision 0009): another owner's key is
    # invisible to it. Tasks without an owner (no authentication) share one
    # namespace, the second index. Both lead with request_id.
    sa.Index(
        "ux_task_request_owner",
        "request_id",
        "owner",
        unique=True,
        sqlite_where=sa.text(OWNED_KEY),
        postgresql_where=sa.text(OWNED_KEY),
    ),
    # Listings by queue or type, newest first (revision 0010, the dashboard's filters).
    sa.Index("ix_task_queue_id", "queue", "id"),
    sa.Index("ix_task_type_id", "type", "id"),
    sa.Index(
        "ux_task_request_id",
        "request_id",
        unique=True,
        sqlite_where=sa.text(OWNERLESS_KEY),
        postgresql_where=sa.text(OWNERLESS_KEY),
    ),
    # A node's name is unique in its workflow (spawns are idempotent by it),
    # and the index serves "every node of a workflow".
    sa.Index(
        "ux_task_node",
        "workflow_id",
        "node",
        unique=True,
        sqlite_where=sa.text("workflow_id IS NOT NULL"),
        postgresql_where=sa.text("workflow_id IS NOT NULL"),
    ),
)

task_payload = sa.Table(
    "task_payload",
    metadata,
    sa.Column("task_id", sa.String(26), primary_key=True),
    sa.Column("data", sa.LargeBinary, nullable=False),
)

task_result = sa.Table(
    "task_result",
    metadata,
    sa.Column("task_id", sa.String(26), primary_key=True),
    sa.Column("data", sa.LargeBinary, nullable=False),
)

# One row per attempt that did not end the task (failed and retried, timed
# out, lease lost); the final or current attempt is read from the task row, so
# the happy path writes nothing here.
task_attempt = sa.Table(
    "task_attempt",
    metadata,
    sa.Column("task_id", sa.String(26), primary_key=True),
    sa.Column("attempt", sa.Integer, primary_key=True),
    sa.Column("worker_id", sa.String(200)),
    sa.Column("started_at", sa.BigInteger),
    sa.Column("ended_at", sa.BigInteger, nullable=False),
    sa.Column("outcome", sa.SmallInteger, nullable=False),
    sa.Column("error_type", sa.String(200)),
    sa.Column("error_message", sa.Text),
    sa.Column("error_details", sa.Text),
)

# Log records handlers wrote (ctx.log), sent with heartbeats (revision 0008). Rows are
# inserted in the committer's batches with the lease extensions that carried them, read a
# task at a time in id order, and deleted with their task by retention and purges.
task_log = sa.Table(
    "task_log",
    metadata,
    sa.Column(
        "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
        autoincrement=True,
    ),
    sa.Column("task_id", sa.String(26), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("at_us", sa.BigInteger, nullable=False),
    sa.Column("level", sa.SmallInteger, nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Index("ix_task_log_task", "task_id", "id"),
)  # fmt: skip

# One row per background duty; a replica runs a tick only if it wins the
# compare-and-set on ran_at (see store.maintenance.claim_tick).
maintenance = sa.Table(
    "maintenance",
    metadata,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("ran_at", sa.BigInteger, nullable=False),
)

# Queues as resources (revision 0004). A row appears on a queue's first
# submission (explicit=False) or by CreateQueue; NULL limits mean none.
queue = sa.Table(
    "queue",
    metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("paused", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("pause_note", sa.Text),
    sa.Column("max_concurrency", sa.Integer),
    sa.Column("rate_limit", sa.Integer),
    sa.Column("rate_interval_us", sa.BigInteger),
    sa.Column("rate_tokens", sa.Float),
    sa.Column("rate_updated_at", sa.BigInteger),
    sa.Column("concurrency_key_limit", sa.Integer),
    sa.Column("max_depth", sa.BigInteger),
    sa.Column("options", sa.Text),
    sa.Column("retention", sa.Text),
    sa.Column("explicit", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
)

# Tasks per (queue, state), kept in the same transactions that move tasks, so
# live statistics never scan the task table.
queue_count = sa.Table(
    "queue_count",
    metadata,
    sa.Column("queue", sa.String(200), primary_key=True),
    sa.Column("state", sa.SmallInteger, primary_key=True),
    sa.Column("count", sa.BigInteger, nullable=False),
)

STAT_COUNTERS = (
    "submitted", "started", "succeeded", "failed", "cancelled", "expired",
    "retried", "lost", "run_count", "run_sum_us", "wait_count", "wait_sum_us",
)  # fmt: skip

# Per-minute rollups by queue and type, and duration histograms beside them.
task_stat = sa.Table(
    "task_stat",
    metadata,
    sa.Column("bucket", sa.BigInteger, primary_key=True),
    sa.Column("queue", sa.String(200), primary_key=True),
    sa.Column("type", sa.String(200), primary_key=True),
    *[sa.Column(name, sa.BigInteger, nullable=False, server_default="0") for name in STAT_COUNTERS],
)

task_stat_hist = sa.Table(
    "task_stat_hist",
    metadata,
    sa.Column("bucket", sa.BigInteger, primary_key=True),
    sa.Column("queue", sa.String(200), primary_key=True),
    sa.Column("type", sa.String(200), primary_key=True),
    sa.Column("kind", sa.SmallInteger, primary_key=True),  # 1: run time, 2: wait
    sa.Column("slot", sa.SmallInteger, primary_key=True),
    sa.Column("count", sa.BigInteger, nullable=False),
)

# Connected worker sessions, refreshed by the replica that holds each stream.
worker_session = sa.Table(
    "worker_session",
    metadata,
    sa.Column("session_id", sa.String(64), primary_key=True),
    sa.Column("worker_id", sa.String(200), nullable=False),
    sa.Column("replica_id", sa.String(64), nullable=False),
    sa.Column("address", sa.String(200)),
    sa.Column("sdk", sa.String(200)),
    sa.Column("task_types", sa.Text, nullable=False),
    sa.Column("queues", sa.Text, nullable=False),
    sa.Column("connected_at", sa.BigInteger, nullable=False),
    sa.Column("seen_at", sa.BigInteger, nullable=False),
    sa.Column("credits", sa.Integer, nullable=False),
    sa.Column("in_flight", sa.Integer, nullable=False),
    sa.Column("draining", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Index("ix_worker_session_worker", "worker_id"),
)

# Schedules (revision 0005). `spec` and `policies` are JSON, `template` the
# serialized Task the broker submits at each fire. `next_fire_at` is the
# high-water mark every fire advances with a compare-and-set on it and on
# `revision`, which every change of settings bumps.
schedule = sa.Table(
    "schedule",
    metadata,
    sa.Column("id", sa.String(26), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("spec", sa.Text, nullable=False),
    sa.Column("policies", sa.Text, nullable=False),
    sa.Column("template", sa.LargeBinary, nullable=False),
    sa.Column("paused", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("pause_note", sa.Text),
    sa.Column("revision", sa.Integer, nullable=False),
    sa.Column("next_fire_at", sa.BigInteger),
    sa.Column("buffered_at", sa.BigInteger),
    sa.Column("fired_through", sa.BigInteger),
    sa.Column("last_task_id", sa.String(26)),
    *[
        sa.Column(f"{name}_count", sa.BigInteger, nullable=False, server_default="0")
        for name in ("started", "skipped", "missed", "failed")
    ],
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
    # The identity that created it (revision 0009); NULL without authentication
    # or for schedules from the --schedules file.
    sa.Column("owner", sa.String(200)),
    sa.Index("ux_schedule_name", "name", unique=True),
    sa.Index("ix_schedule_next", "next_fire_at"),
)

# One row per fire time a schedule processed (a MISSED row may stand for a
# range). The primary key is the exactly-once guarantee's backstop: a fire
# time is inserted in the same transaction as its task, and task retention
# never touches this table (the ticker keeps the newest rows per schedule).
schedule_fire = sa.Table(
    "schedule_fire",
    metadata,
    sa.Column("schedule_id", sa.String(26), primary_key=True),
    sa.Column("fire_time", sa.BigInteger, primary_key=True),
    sa.Column("manual", sa.Boolean, primary_key=True),
    sa.Column("result", sa.SmallInteger, nullable=False),
    sa.Column("task_id", sa.String(26)),
    sa.Column("count", sa.BigInteger, nullable=False, server_default="1"),
    sa.Column("last_missed_at", sa.BigInteger),
    sa.Column("message", sa.Text),
    sa.Column("recorded_at", sa.BigInteger, nullable=False),
    sa.Column("run_at", sa.BigInteger),  # revision 0011: fire time + jitter
)

# The tasks each schedule started that may still be unfinished (revision 0011):
# what `max_instances` counts, joined with `task` for their states. Rows whose
# task finished or was deleted are pruned in the transactions that fire.
schedule_instance = sa.Table(
    "schedule_instance",
    metadata,
    sa.Column("schedule_id", sa.String(26), primary_key=True),
    sa.Column("task_id", sa.String(26), primary_key=True),
)

# Workflows (revision 0011, docs/workflows.md). The counters are changed in
# the transactions that finish nodes: `nodes_open` reaching 0 finishes the
# workflow, with a row lock serialising replicas.
workflow = sa.Table(
    "workflow",
    metadata,
    sa.Column("id", sa.String(26), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("state", sa.SmallInteger, nullable=False),
    sa.Column("failure_policy", sa.SmallInteger, nullable=False),
    sa.Column("generation", sa.Integer, nullable=False, server_default="0"),
    sa.Column("nodes_total", sa.Integer, nullable=False),
    sa.Column("nodes_open", sa.Integer, nullable=False),
    sa.Column("nodes_failed", sa.Integer, nullable=False, server_default="0"),
    sa.Column("nodes_cancelled", sa.Integer, nullable=False, server_default="0"),
    sa.Column("labels", sa.Text),
    sa.Column("template_name", sa.String(200)),
    sa.Column("template_version", sa.Integer),
    sa.Column("params", sa.Text),
    sa.Column("request_id", sa.String(200)),
    sa.Column("owner", sa.String(200)),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
    sa.Column("finished_at", sa.BigInteger),
    sa.Index(
        "ux_workflow_request_id",
        "request_id",
        unique=True,
        sqlite_where=sa.text("request_id IS NOT NULL"),
        postgresql_where=sa.text("request_id IS NOT NULL"),
    ),
    sa.Index(
        "ix_workflow_finished",
        "finished_at",
        sqlite_where=sa.text("finished_at IS NOT NULL"),
        postgresql_where=sa.text("finished_at IS NOT NULL"),
    ),
)

# One row per dependency: the child waits for the parent. `rule` is the
# child's trigger rule and `gated` whether the child keeps a gate row, so
# that a parent's move settles a single-parent child from this row alone;
# `joins` marks a child that also waits for what the parent spawns.
wf_edge = sa.Table(
    "wf_edge",
    metadata,
    sa.Column("child_id", sa.String(26), primary_key=True),
    sa.Column("parent_id", sa.String(26), primary_key=True),
    sa.Column("rule", sa.SmallInteger, nullable=False),
    sa.Column("gated", sa.Boolean, nullable=False),
    sa.Column("joins", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Index("ix_wf_edge_parent", "parent_id", "child_id"),
)

# The counters of a node with several parents (or joining spawned children),
# changed under its row lock in the transactions that finish its parents;
# `decided_at` is set by the one transaction that released or skipped it.
wf_gate = sa.Table(
    "wf_gate",
    metadata,
    sa.Column("task_id", sa.String(26), primary_key=True),
    sa.Column("rule", sa.SmallInteger, nullable=False),
    sa.Column("n_total", sa.Integer, nullable=False),
    sa.Column("n_ok", sa.Integer, nullable=False, server_default="0"),
    sa.Column("n_failed", sa.Integer, nullable=False, server_default="0"),
    sa.Column("n_cancelled", sa.Integer, nullable=False, server_default="0"),
    sa.Column("n_skipped", sa.Integer, nullable=False, server_default="0"),
    sa.Column("open_spawners", sa.Integer, nullable=False, server_default="0"),
    sa.Column("decided_at", sa.BigInteger),
)

# Registered templates: immutable (name, version); `spec` is the serialized
# WorkflowTemplate, `spec_hash` makes an unchanged registration a no-op.
wf_template = sa.Table(
    "wf_template",
    metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("spec", sa.LargeBinary, nullable=False),
    sa.Column("spec_hash", sa.String(64), nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
)
