"""What differs between SQLite and PostgreSQL, asked in one place.

Queries that need a dialect's own SQL (`FOR UPDATE SKIP LOCKED`, `pg_notify`,
a CTE shape) ask `is_pg`; upserts (`INSERT … ON CONFLICT`) are built with
`insert`, since SQLAlchemy's generic `insert()` has no conflict clause and
each dialect ships its own.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

Insert = postgresql.Insert | sqlite.Insert


def is_pg(conn: AsyncConnection) -> bool:
    return conn.dialect.name == "postgresql"


def insert(table: sa.Table, *, pg: bool) -> Insert:
    """An INSERT that can take `on_conflict_do_nothing` / `on_conflict_do_update`."""
    return postgresql.insert(table) if pg else sqlite.insert(table)
