"""Task owners: the identity that created each task, for "submitters act on their own tasks".

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NULL for tasks created without authentication (and all older tasks):
    # no submitter owns them, operators and admins still reach them.
    with op.batch_alter_table("task") as batch:
        batch.add_column(sa.Column("owner", sa.String(200)))
    op.create_index(
        "ix_task_owner",
        "task",
        ["owner", "id"],
        sqlite_where=sa.text("owner IS NOT NULL"),
        postgresql_where=sa.text("owner IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_task_owner", table_name="task")
    with op.batch_alter_table("task") as batch:
        batch.drop_column("owner")
