"""Workflows: nodes as tasks (BLOCKED and SKIPPED states), edges, gates, workflows, templates.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

# State numbers (see broker/core/task_state.py): BLOCKED = 10, SKIPPED = 11 (terminal).
_OLD_STATES, _NEW_STATES = "state BETWEEN 1 AND 9", "state BETWEEN 1 AND 11"
_OLD_TERMINAL, _NEW_TERMINAL = "state IN (5, 6, 7, 8, 9)", "state IN (5, 6, 7, 8, 9, 11)"
_FINISHED = "({}) = (finished_at IS NOT NULL)"


def upgrade() -> None:
    _check_constraints(_OLD_STATES, _NEW_STATES, _OLD_TERMINAL, _NEW_TERMINAL)
    with op.batch_alter_table("task") as batch:
        batch.add_column(sa.Column("workflow_id", sa.String(26)))
        batch.add_column(sa.Column("node", sa.String(200)))
    op.create_index(
        "ux_task_node",
        "task",
        ["workflow_id", "node"],
        unique=True,
        sqlite_where=sa.text("workflow_id IS NOT NULL"),
        postgresql_where=sa.text("workflow_id IS NOT NULL"),
    )
    op.create_table(
        "workflow",
        sa.Column("id", sa.String(26), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("state", sa.SmallInteger, nullable=False),
        sa.Column("failure_policy", sa.SmallInteger, nullable=False),
        sa.Column("generation", sa.Integer, nullable=False, server_default="0"),
        sa.Column("nodes_total", sa.Integer, nullable=False),
        sa.Column("nodes_open", sa.Integer, nullable=False),
        sa.Column("nodes_failed", sa.Integer, nullable=False, server_default="0"),
        sa.Column("nodes_cancelled", sa.Integer, nullable=False, server_default="0"),
        sa.Column("labels", sa.Text),
        sa.Column("template_name", sa.String(200)),
        sa.Column("template_version", sa.Integer),
        sa.Column("params", sa.Text),
        sa.Column("request_id", sa.String(200)),
        sa.Column("owner", sa.String(200)),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.Column("finished_at", sa.BigInteger),
    )
    op.create_index(
        "ux_workflow_request_id",
        "workflow",
        ["request_id"],
        unique=True,
        sqlite_where=sa.text("request_id IS NOT NULL"),
        postgresql_where=sa.text("request_id IS NOT NULL"),
    )
    op.create_index(
        "ix_workflow_finished",
        "workflow",
        ["finished_at"],
        sqlite_where=sa.text("finished_at IS NOT NULL"),
        postgresql_where=sa.text("finished_at IS NOT NULL"),
    )
    op.create_table(
        "wf_edge",
        sa.Column("child_id", sa.String(26), primary_key=True),
        sa.Column("parent_id", sa.String(26), primary_key=True),
        sa.Column("rule", sa.SmallInteger, nullable=False),
        sa.Column("gated", sa.Boolean, nullable=False),
        sa.Column("joins", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    op.create_index("ix_wf_edge_parent", "wf_edge", ["parent_id", "child_id"])
    op.create_table(
        "wf_gate",
        sa.Column("task_id", sa.String(26), primary_key=True),
        sa.Column("rule", sa.SmallInteger, nullable=False),
        sa.Column("n_total", sa.Integer, nullable=False),
        sa.Column("n_ok", sa.Integer, nullable=False, server_default="0"),
        sa.Column("n_failed", sa.Integer, nullable=False, server_default="0"),
        sa.Column("n_cancelled", sa.Integer, nullable=False, server_default="0"),
        sa.Column("n_skipped", sa.Integer, nullable=False, server_default="0"),
        sa.Column("open_spawners", sa.Integer, nullable=False, server_default="0"),
        sa.Column("decided_at", sa.BigInteger),
    )
    op.create_table(
        "wf_template",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("spec", sa.LargeBinary, nullable=False),
        sa.Column("spec_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    # Workflow nodes go with their workflows: the old states cannot hold them.
    op.execute(
        "DELETE FROM task_payload WHERE task_id IN (SELECT id FROM task WHERE node IS NOT NULL)"
    )
    op.execute(
        "DELETE FROM task_result WHERE task_id IN (SELECT id FROM task WHERE node IS NOT NULL)"
    )
    op.execute(
        "DELETE FROM task_attempt WHERE task_id IN (SELECT id FROM task WHERE node IS NOT NULL)"
    )
    op.execute("DELETE FROM task WHERE node IS NOT NULL")
    for table in ("wf_template", "wf_gate", "wf_edge", "workflow"):
        op.drop_table(table)
    op.drop_index("ux_task_node", table_name="task")
    with op.batch_alter_table("task") as batch:
        batch.drop_column("node")
        batch.drop_column("workflow_id")
    _check_constraints(_NEW_STATES, _OLD_STATES, _NEW_TERMINAL, _OLD_TERMINAL)


def _check_constraints(old_states: str, new_states: str, old_final: str, new_final: str) -> None:
    """Widen (or narrow) ck_task_state and ck_task_finished to the state numbers."""
    if op.get_bind().dialect.name == "sqlite":
        _sqlite_rebuild({old_states: new_states, old_final: new_final})
        return
    op.drop_constraint("ck_task_state", "task", type_="check")
    op.create_check_constraint("ck_task_state", "task", new_states)
    op.drop_constraint("ck_task_finished", "task", type_="check")
    op.create_check_constraint("ck_task_finished", "task", _FINISHED.format(new_final))


def _sqlite_rebuild(replacements: dict[str, str]) -> None:
    """SQLite cannot alter a CHECK: copy the table under the changed DDL (its documented way).

    The table's own CREATE statement and its indexes' are taken from
    sqlite_master, so every column, constraint and partial index is kept as
    it is; only the two constraints' texts change.
    """
    conn = op.get_bind()
    table_sql = conn.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'task'"
    ).scalar_one()
    indexes = [
        row[0]
        for row in conn.exec_driver_sql(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'task' "
            "AND sql IS NOT NULL"
        )
    ]
    changed = table_sql
    for old, new in replacements.items():
        if old not in changed:
            raise RuntimeError(f"the task table's DDL lacks {old!r}; cannot migrate it")
        changed = changed.replace(old, new)
    _, sep, rest = changed.partition("(")
    conn.exec_driver_sql(f"CREATE TABLE task_new {sep}{rest}")
    conn.exec_driver_sql("INSERT INTO task_new SELECT * FROM task")
    conn.exec_driver_sql("DROP TABLE task")
    conn.exec_driver_sql("ALTER TABLE task_new RENAME TO task")
    for sql in indexes:
        conn.exec_driver_sql(sql)
