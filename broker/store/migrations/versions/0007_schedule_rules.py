"""Schedule rules: unfinished runs per schedule (max_instances) and each fire's actual run time.

Recurrence rules, exclusions and max_instances live in the schedule's JSON
columns (`spec`, `policies`) and need no schema change. What does:

* `schedule_instance` lists the tasks a schedule started that may still be
  unfinished, so that the count `max_instances` is compared with is one
  indexed join on the database every replica shares. Rows whose task
  finished (or was deleted) are pruned whenever the schedule fires.
* `schedule_fire.run_at` keeps the time the fired task was due (the fire time
  plus the schedule's jitter) beside the nominal `fire_time`.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "schedule_instance",
        sa.Column("schedule_id", sa.String(26), primary_key=True),
        sa.Column("task_id", sa.String(26), primary_key=True),
    )
    # A schedule's latest run is its only one that counted until now.
    op.execute(
        "INSERT INTO schedule_instance (schedule_id, task_id) "
        "SELECT id, last_task_id FROM schedule WHERE last_task_id IS NOT NULL"
    )
    with op.batch_alter_table("schedule_fire") as batch:
        batch.add_column(sa.Column("run_at", sa.BigInteger))


def downgrade() -> None:
    with op.batch_alter_table("schedule_fire") as batch:
        batch.drop_column("run_at")
    op.drop_table("schedule_instance")
