"""Who holds what: idempotency keys per owner, the identity holding a lease, schedule owners.

* `request_id` is unique per owner, no longer across the whole broker: one
  tenant's key can neither return nor block another tenant's task, nor tell
  it that the key exists. Tasks without an owner (no authentication) share
  one namespace, as every key did before (two partial unique indexes, as
  a NULL owner never collides in a unique index). Both lead with
  `request_id`, so the lookup after an insert is the same index probe.
* `task.leased_by`: the identity whose Lease stream holds the current lease;
  heartbeats, completions and re-adoptions from any other identity are
  refused (NULL: no authentication, or a lease taken before this revision).
* `schedule.owner`: the identity that created a schedule, for the
  per-identity schedule cap and for charging its fires to its owner's
  submission rate.

Existing rows keep their keys under their owner: the old index was unique
across every owner, so the new one holds for the existing rows as they are.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_KEYED = sa.text("request_id IS NOT NULL")
_OWNED = sa.text("request_id IS NOT NULL AND owner IS NOT NULL")
_OWNERLESS = sa.text("request_id IS NOT NULL AND owner IS NULL")


def upgrade() -> None:
    with op.batch_alter_table("task") as batch:
        batch.add_column(sa.Column("leased_by", sa.String(200)))
    with op.batch_alter_table("schedule") as batch:
        batch.add_column(sa.Column("owner", sa.String(200)))
    op.drop_index("ux_task_request_id", table_name="task")
    op.create_index(
        "ux_task_request_owner",
        "task",
        ["request_id", "owner"],
        unique=True,
        sqlite_where=_OWNED,
        postgresql_where=_OWNED,
    )
    op.create_index(
        "ux_task_request_id",
        "task",
        ["request_id"],
        unique=True,
        sqlite_where=_OWNERLESS,
        postgresql_where=_OWNERLESS,
    )


def downgrade() -> None:
    # One namespace again: of tasks sharing a key across owners, the oldest keeps it.
    op.execute(
        "UPDATE task SET request_id = NULL WHERE request_id IS NOT NULL AND id NOT IN "
        "(SELECT min(id) FROM task WHERE request_id IS NOT NULL GROUP BY request_id)"
    )
    op.drop_index("ux_task_request_id", table_name="task")
    op.drop_index("ux_task_request_owner", table_name="task")
    op.create_index(
        "ux_task_request_id",
        "task",
        ["request_id"],
        unique=True,
        sqlite_where=_KEYED,
        postgresql_where=_KEYED,
    )
    with op.batch_alter_table("schedule") as batch:
        batch.drop_column("owner")
    with op.batch_alter_table("task") as batch:
        batch.drop_column("leased_by")
