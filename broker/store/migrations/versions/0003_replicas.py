"""Replicas: the maintenance table for leaderless ticks; autovacuum tuned for the task table.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "maintenance",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("ran_at", sa.BigInteger, nullable=False),
    )
    if op.get_bind().dialect.name == "postgresql":
        # The task table churns: vacuum and analyze it after a fixed number of
        # changed rows, not a fraction of a table that may hold millions.
        op.execute(
            "ALTER TABLE task SET (autovacuum_vacuum_scale_factor = 0.0, "
            "autovacuum_vacuum_threshold = 5000, autovacuum_analyze_scale_factor = 0.0, "
            "autovacuum_analyze_threshold = 5000)"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "ALTER TABLE task RESET (autovacuum_vacuum_scale_factor, autovacuum_vacuum_threshold, "
            "autovacuum_analyze_scale_factor, autovacuum_analyze_threshold)"
        )
    op.drop_table("maintenance")
