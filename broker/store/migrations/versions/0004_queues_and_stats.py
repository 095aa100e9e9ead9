"""Queues as resources, state counters, statistics rollups, the worker registry.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "queue",
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
    op.create_table(
        "queue_count",
        sa.Column("queue", sa.String(200), primary_key=True),
        sa.Column("state", sa.SmallInteger, primary_key=True),
        sa.Column("count", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "task_stat",
        sa.Column("bucket", sa.BigInteger, primary_key=True),
        sa.Column("queue", sa.String(200), primary_key=True),
        sa.Column("type", sa.String(200), primary_key=True),
        *[
            sa.Column(name, sa.BigInteger, nullable=False, server_default="0")
            for name in (
                "submitted",
                "started",
                "succeeded",
                "failed",
                "cancelled",
                "expired",
                "retried",
                "lost",
                "run_count",
                "run_sum_us",
                "wait_count",
                "wait_sum_us",
            )
        ],
    )
    op.create_table(
        "task_stat_hist",
        sa.Column("bucket", sa.BigInteger, primary_key=True),
        sa.Column("queue", sa.String(200), primary_key=True),
        sa.Column("type", sa.String(200), primary_key=True),
        sa.Column("kind", sa.SmallInteger, primary_key=True),
        sa.Column("slot", sa.SmallInteger, primary_key=True),
        sa.Column("count", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "worker_session",
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
    )
    op.create_index("ix_worker_session_worker", "worker_session", ["worker_id"])
    with op.batch_alter_table("task") as batch:
        batch.add_column(sa.Column("concurrency_key", sa.String(200)))
        batch.add_column(sa.Column("trace_context", sa.Text))
    op.create_index(
        "ix_task_key_running",
        "task",
        ["concurrency_key"],
        sqlite_where=sa.text("state = 3 AND concurrency_key IS NOT NULL"),
        postgresql_where=sa.text("state = 3 AND concurrency_key IS NOT NULL"),
    )
    op.create_index(
        "ix_task_pending_age",
        "task",
        ["queue", "run_at"],
        sqlite_where=sa.text("state = 2"),
        postgresql_where=sa.text("state = 2"),
    )
    # Counters for the tasks already there.
    op.execute(
        "INSERT INTO queue_count (queue, state, count) "
        "SELECT queue, state, count(*) FROM task GROUP BY queue, state"
    )


def downgrade() -> None:
    op.drop_index("ix_task_pending_age", "task")
    op.drop_index("ix_task_key_running", "task")
    with op.batch_alter_table("task") as batch:
        batch.drop_column("trace_context")
        batch.drop_column("concurrency_key")
    op.drop_index("ix_worker_session_worker", "worker_session")
    for table in ("worker_session", "task_stat_hist", "task_stat", "queue_count", "queue"):
        op.drop_table(table)
