"""Dashboard indexes: task listings filtered by queue or by type, newest first.

ListTasks pages newest first (ORDER BY id DESC) with typed filters. Without
these, a filter on a queue or a type that holds few of the stored tasks scans
the table: measured with 1,000,000 tasks (bench/dashboard.py), a first page
for a queue holding 0.01% of them took about 1 s on SQLite and 150 ms on
PostgreSQL; with them, tens of milliseconds. Queue and type never change, so
on SQLite the entries are written once per task; PostgreSQL adds an entry per
row version as for every index of the table.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_task_queue_id", "task", ["queue", "id"])
    op.create_index("ix_task_type_id", "task", ["type", "id"])


def downgrade() -> None:
    op.drop_index("ix_task_type_id", table_name="task")
    op.drop_index("ix_task_queue_id", table_name="task")
