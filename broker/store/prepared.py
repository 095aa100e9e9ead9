"""Hot batched writes compiled once and run with plain tuples.

`conn.execute(statement, [dict, ...])` spends most of its time, for a batch of
a thousand rows, not in the database but in SQLAlchemy turning each dict into
the driver's parameters (`construct_params`, bind processors): 9-10 µs a row
for the task insert and the lease-end update, as much again as SQLite needs to
write the row. A `BatchWrite` is a Core statement compiled once per dialect;
callers hand it one tuple per row, in the order of `names`, and on SQLite the
tuples go to the driver as they are (`exec_driver_sql`). The values must
already be what sqlite3 takes (int, str, bytes, None; bool is an int).

On PostgreSQL the same statement runs through SQLAlchemy as before (the rows
become dicts), so asyncpg keeps its type adaptation and SQLAlchemy its
multi-row INSERT; the fast path is where the single writer's CPU is the limit.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.store.sqlite_driver import DEFERRED

Row = tuple[Any, ...]


class BatchWrite:
    def __init__(self, statement: sa.Insert | sa.Update, names: Sequence[str]) -> None:
        self.statement = statement
        self.names = tuple(names)
        self._sqlite: tuple[str, Callable[[Row], Row] | None] | None = None

    async def run(self, conn: AsyncConnection, rows: Sequence[Row], *, defer: bool = True) -> None:
        """Execute once per row; `defer` as in sqlite_driver (a write nobody reads)."""
        if not rows:
            return
        options = DEFERRED if defer else None
        if conn.dialect.name != "sqlite":
            names = self.names
            await conn.execute(
                self.statement,
                [dict(zip(names, r, strict=True)) for r in rows],
                execution_options=options,
            )
            return
        sql, reorder = self._sqlite or self._compile(conn)
        params = list(rows) if reorder is None else [reorder(r) for r in rows]
        await conn.exec_driver_sql(sql, params, execution_options=options)

    def _compile(self, conn: AsyncConnection) -> tuple[str, Callable[[Row], Row] | None]:
        compiled = self.statement.compile(dialect=conn.dialect, column_keys=list(self.names))
        order = compiled.positiontup or []
        missing = [name for name in order if name not in self.names]
        if missing:
            # A bound constant in the statement would be silently dropped here;
            # write constants as SQL literals (sa.null(), sa.literal_column) instead.
            table = self.statement.table.description
            raise ValueError(f"a write to {table} binds {missing}, which are not in {self.names}")
        reorder: Callable[[Row], Row] | None = None
        if tuple(order) != self.names:
            getter = operator.itemgetter(*(self.names.index(name) for name in order))
            reorder = getter if len(order) > 1 else lambda row: (getter(row),)
        self._sqlite = (str(compiled), reorder)
        return self._sqlite
