"""Task logs: the records handlers write with ctx.log, stored per attempt.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "task_log",
        # INTEGER PRIMARY KEY on SQLite is the rowid: ascending, no separate index.
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("task_id", sa.String(26), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("at_us", sa.BigInteger, nullable=False),
        sa.Column("level", sa.SmallInteger, nullable=False),
        sa.Column("message", sa.Text, nullable=False),
    )
    op.create_index("ix_task_log_task", "task_log", ["task_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_task_log_task", table_name="task_log")
    op.drop_table("task_log")
