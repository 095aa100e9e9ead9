"""Lapsed leases and cancel reasons: a lost lease's id while nobody else holds the task, and
the reason CancelTask gave for a running task.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Both NULL for every existing task: no lease of theirs has lapsed under the new
    # rules, and no running task was cancelled with a reason worth keeping.
    with op.batch_alter_table("task") as batch:
        batch.add_column(sa.Column("lapsed_lease_id", sa.BigInteger))
        batch.add_column(sa.Column("cancel_reason", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("task") as batch:
        batch.drop_column("cancel_reason")
        batch.drop_column("lapsed_lease_id")
