"""Reliability: retry policies, timeouts, expiry, attempt history.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("task") as batch:
        batch.add_column(sa.Column("retry_policy", sa.Text))
        batch.add_column(sa.Column("attempt_base", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("execution_timeout_us", sa.BigInteger))
        batch.add_column(
            sa.Column(
                "heartbeat_timeout_us", sa.BigInteger, nullable=False, server_default="10000000"
            )
        )
        batch.add_column(sa.Column("soft_timeout_us", sa.BigInteger))
        batch.add_column(sa.Column("expire_at", sa.BigInteger))
        batch.add_column(sa.Column("deadline_at", sa.BigInteger))
    op.create_index(
        "ix_task_deadline",
        "task",
        ["deadline_at"],
        sqlite_where=sa.text("state = 3 AND deadline_at IS NOT NULL"),
        postgresql_where=sa.text("state = 3 AND deadline_at IS NOT NULL"),
    )
    op.create_index(
        "ix_task_expire",
        "task",
        ["expire_at"],
        sqlite_where=sa.text("state IN (1, 2, 4) AND expire_at IS NOT NULL"),
        postgresql_where=sa.text("state IN (1, 2, 4) AND expire_at IS NOT NULL"),
    )
    op.create_table(
        "task_attempt",
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


def downgrade() -> None:
    op.drop_table("task_attempt")
    op.drop_index("ix_task_expire", "task")
    op.drop_index("ix_task_deadline", "task")
    with op.batch_alter_table("task") as batch:
        for column in (
            "deadline_at",
            "expire_at",
            "soft_timeout_us",
            "heartbeat_timeout_us",
            "execution_timeout_us",
            "attempt_base",
            "retry_policy",
        ):
            batch.drop_column(column)
