"""The initial schema: tasks, their payloads and their results.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# State numbers as of this revision (see broker/core/task_state.py).
_PENDING, _RUNNING = "2", "3"
_WAITING = "1, 4"
_TERMINAL = "5, 6, 7, 8, 9"


def upgrade() -> None:
    op.create_table(
        "task",
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
        sa.CheckConstraint("state BETWEEN 1 AND 9", name="ck_task_state"),
        sa.CheckConstraint(
            f"(state IN ({_TERMINAL})) = (finished_at IS NOT NULL)", name="ck_task_finished"
        ),
        sa.CheckConstraint(f"(state = {_RUNNING}) = (lease_id IS NOT NULL)", name="ck_task_leased"),
    )
    op.create_index(
        "ix_task_claim",
        "task",
        ["queue", sa.text("priority DESC"), "run_at", "id"],
        sqlite_where=sa.text(f"state = {_PENDING}"),
        postgresql_where=sa.text(f"state = {_PENDING}"),
    )
    op.create_index(
        "ix_task_due",
        "task",
        ["run_at"],
        sqlite_where=sa.text(f"state IN ({_WAITING})"),
        postgresql_where=sa.text(f"state IN ({_WAITING})"),
    )
    op.create_index(
        "ix_task_lease",
        "task",
        ["lease_expires_at"],
        sqlite_where=sa.text(f"state = {_RUNNING}"),
        postgresql_where=sa.text(f"state = {_RUNNING}"),
    )
    op.create_index(
        "ix_task_finished",
        "task",
        ["finished_at"],
        sqlite_where=sa.text("finished_at IS NOT NULL"),
        postgresql_where=sa.text("finished_at IS NOT NULL"),
    )
    op.create_index(
        "ux_task_request_id",
        "task",
        ["request_id"],
        unique=True,
        sqlite_where=sa.text("request_id IS NOT NULL"),
        postgresql_where=sa.text("request_id IS NOT NULL"),
    )
    op.create_table(
        "task_payload",
        sa.Column("task_id", sa.String(26), primary_key=True),
        sa.Column("data", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "task_result",
        sa.Column("task_id", sa.String(26), primary_key=True),
        sa.Column("data", sa.LargeBinary, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("task_result")
    op.drop_table("task_payload")
    op.drop_table("task")
