"""Schedules and their fire records.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "schedule",
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
    )
    op.create_index("ux_schedule_name", "schedule", ["name"], unique=True)
    op.create_index("ix_schedule_next", "schedule", ["next_fire_at"])
    op.create_table(
        "schedule_fire",
        sa.Column("schedule_id", sa.String(26), primary_key=True),
        sa.Column("fire_time", sa.BigInteger, primary_key=True),
        sa.Column("manual", sa.Boolean, primary_key=True),
        sa.Column("result", sa.SmallInteger, nullable=False),
        sa.Column("task_id", sa.String(26)),
        sa.Column("count", sa.BigInteger, nullable=False, server_default="1"),
        sa.Column("last_missed_at", sa.BigInteger),
        sa.Column("message", sa.Text),
        sa.Column("recorded_at", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("schedule_fire")
    op.drop_index("ix_schedule_next", "schedule")
    op.drop_index("ux_schedule_name", "schedule")
    op.drop_table("schedule")
