"""Hot batched writes compiled once and run with plain tuples.

`conn.execute(statement, [dict, ...])` spends most of its time, for a batch of
a thousand rows, not in the database but in SQLAlchemy turning each dict into
the driver's parameters (`construct_params`, bind processors): 9-10 µs a row
for the task insert and the lease-end update, as much again as SQLite needs to
write the row. A `BatchWrite` is a Core statement compiled once per dialect;
callers hand it one tuple per row, in the order of `names`, and on SQLite the
tuples go to the driver as they are (`exec_driver_sql`). The values must
already be what sqlite3 takes (int, str, bytes, None; bool is an int).

On PostgreSQL a plain INSERT and an UPDATE with `distinct_targets` go as one statement
whatever the number of rows, reading them from arrays, one array a column:
`INSERT … SELECT * FROM unnest($1::T1[], …)`, `UPDATE … FROM unnest(…) AS _v(c1, …)`.
`executemany` costs PostgreSQL an executor start per row: measured inside the broker
under end-to-end load, the lease-end UPDATE took 156 µs a row and the task INSERT (SQLAlchemy's
multi-row VALUES) 51 µs, most of the single writer's time, so most of a commit's. Other
statements (upserts, RETURNING, shared targets) run through SQLAlchemy with the rows as
dicts. asyncpg encodes each array from Python values as it encodes one value, so the values
must be what it takes for the column's type (a bool for BOOLEAN, not 1).

On SQLite a batch also goes as multi-row statements, `ROWS_PER_STATEMENT` rows each (the
rest in statements of a quarter and a sixteenth of that, then one by one): an INSERT with
that many `VALUES` groups, an UPDATE joined to them (`UPDATE … FROM (VALUES …)`).
Python's sqlite3 lets go of the GIL around every statement step, once per row under
`executemany`, and gets it back only when the event loop lets go: with the loop busy,
inserting tasks one row per step cost the broker's SQLite thread 60 to 82 µs a row of
wall time, against 36 µs of CPU. One step per 64 rows makes those hand-overs rare
(`python -m bench.sqlite_gil` measures it). A failing row fails its statement and, as
before, the whole transaction.

An UPDATE joined to its rows applies only one of several rows that match the same
target, where `executemany` applies each in turn; so an UPDATE gets the multi-row form
only when its `BatchWrite` says `distinct_targets` — no two rows of one `run` update the
same row (the lease ends: one per task, `store/leases.py` makes sure).
"""

from __future__ import annotations

import itertools
import operator
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.store.sqlite_driver import DEFERRED

Row = tuple[Any, ...]

ROWS_PER_STATEMENT = 64
_UPDATE_FROM = sqlite3.sqlite_version_info >= (3, 33, 0)  # UPDATE … FROM came in 3.33


def _variable_limit() -> int:
    """How many `?` one statement may hold in the SQLite this Python links (999 before 3.32)."""
    probe = sqlite3.connect(":memory:")
    try:
        return probe.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    finally:
        probe.close()


_VARIABLE_LIMIT = _variable_limit()


@dataclass(frozen=True, slots=True)
class SqliteForm:
    """A BatchWrite as driver SQL, for each number of rows a statement carries."""

    reorder: Callable[[Row], Row] | None  # from `names` to the order the SQL binds
    sql: dict[int, str]  # rows per statement → SQL; largest first, 1 last

    def batches(self, rows: Sequence[Row]) -> Iterator[tuple[str, list[Row]]]:
        """(SQL, its executemany parameters) covering `rows` in order: big statements first."""
        reorder, flat = self.reorder, itertools.chain.from_iterable
        params = list(rows) if reorder is None else [reorder(r) for r in rows]
        start, left = 0, len(params)
        for size, sql in self.sql.items():
            end = start + left - left % size
            if end == start:
                continue
            if size == 1:
                yield sql, params[start:end]
            else:
                yield sql, [tuple(flat(params[i : i + size])) for i in range(start, end, size)]
            left -= end - start
            start = end

    def one_row(self) -> SqliteForm:
        """The same write one row a statement (what executemany of the plain SQL does)."""
        return SqliteForm(self.reorder, {1: self.sql[1]})


@dataclass(frozen=True, slots=True)
class PgForm:
    """A BatchWrite as one PostgreSQL statement over arrays, one array per parameter."""

    reorder: Callable[[Row], Row] | None  # from `names` to the order of $1, $2, …
    sql: str

    def columns(self, rows: Sequence[Row]) -> tuple[list[Any], ...]:
        """The statement's parameters for `rows`: the n-th, every row's n-th value."""
        reorder = self.reorder
        ordered = rows if reorder is None else [reorder(r) for r in rows]
        return tuple(list(column) for column in zip(*ordered, strict=True))


class BatchWrite:
    def __init__(
        self,
        statement: sa.Insert | sa.Update,
        names: Sequence[str],
        *,
        distinct_targets: bool = False,
    ) -> None:
        """`distinct_targets`: an UPDATE whose rows never share a target (module docstring)."""
        self.statement = statement
        self.names = tuple(names)
        self.distinct_targets = distinct_targets
        self._sqlite: SqliteForm | None = None
        self._pg: tuple[PgForm | None] | None = None  # compiled once, even when there is none

    async def run(self, conn: AsyncConnection, rows: Sequence[Row], *, defer: bool = True) -> None:
        """Execute once per row; `defer` as in sqlite_driver (a write nobody reads)."""
        if not rows:
            return
        options = DEFERRED if defer else None
        if conn.dialect.name == "sqlite":
            for sql, batch in self.sqlite_form(conn.dialect).batches(rows):
                await conn.exec_driver_sql(sql, batch, execution_options=options)
            return
        pg = self.pg_form(conn.dialect)
        if pg is not None:
            # One execution whose parameters are the columns (a tuple: not a list of rows).
            await conn.exec_driver_sql(pg.sql, pg.columns(rows), execution_options=options)
            return
        names = self.names
        await conn.execute(
            self.statement,
            [dict(zip(names, r, strict=True)) for r in rows],
            execution_options=options,
        )

    def sqlite_form(self, dialect: sa.Dialect) -> SqliteForm:
        """The driver SQL on SQLite, compiled once."""
        return self._sqlite or self._compile_sqlite(dialect)

    def pg_form(self, dialect: sa.Dialect) -> PgForm | None:
        """The one-statement driver SQL on PostgreSQL, compiled once; None: no such form."""
        if self._pg is None:
            reorder, compiled, order = self._driver_sql(dialect)
            shape = unnest_insert if isinstance(self.statement, sa.Insert) else None
            if shape is None and self.distinct_targets:
                shape = unnest_update
            unnested = None if shape is None else shape(str(compiled), _pg_casts(compiled, order))
            self._pg = (None if unnested is None else PgForm(reorder, unnested),)
        return self._pg[0]

    def _driver_sql(
        self, dialect: sa.Dialect
    ) -> tuple[Callable[[Row], Row] | None, sa.engine.Compiled, list[str]]:
        """The one-row statement compiled, its parameters' names, how to put a row in order."""
        compiled = self.statement.compile(dialect=dialect, column_keys=list(self.names))
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
        return reorder, compiled, list(order)

    def _compile_sqlite(self, dialect: sa.Dialect) -> SqliteForm:
        reorder, compiled, order = self._driver_sql(dialect)
        sql, width = str(compiled), len(order)
        shape: Callable[[str, int, int], str | None] | None = None
        if isinstance(self.statement, sa.Insert):
            shape = multi_row_insert
        elif self.distinct_targets and _UPDATE_FROM:
            shape = multi_row_update
        forms: dict[int, str] = {}
        size = min(ROWS_PER_STATEMENT, _VARIABLE_LIMIT // max(width, 1))
        while shape is not None and size > 1:
            multi = shape(sql, width, size)
            if multi is None:
                break
            forms[size] = multi
            size //= 4  # the rest of a batch in at most three statements of each smaller size
        forms[1] = sql
        self._sqlite = SqliteForm(reorder, forms)
        return self._sqlite


def _group(width: int) -> str:
    return "(" + ", ".join("?" * width) + ")"


def multi_row_insert(sql: str, width: int, per: int) -> str | None:
    """`INSERT … VALUES (?, …)` for `per` rows; None for any other shape (an upsert, say)."""
    group = _group(width)
    if not sql.startswith("INSERT INTO ") or not sql.endswith(" VALUES " + group):
        return None
    return sql + ", " + ", ".join([group] * (per - 1))


def multi_row_update(sql: str, width: int, per: int) -> str | None:
    """`UPDATE t SET … WHERE …` reading its `width` parameters from `per` rows of VALUES.

    The n-th `?` becomes `_v.column<n>` (SQLite's names for a VALUES table's columns), so
    the SET and WHERE expressions are the one-row statement's, row by row. None for any
    other shape: a subquery (a second WHERE) or a `?` that might sit inside a literal.
    """
    literals = sql.split("'")[1::2]
    if (
        not sql.startswith("UPDATE ")
        or sql.count(" SET ") != 1
        or sql.count(" WHERE ") != 1
        or sql.count("?") != width
        or any("?" in literal for literal in literals)
    ):
        return None
    numbers = iter(range(1, width + 1))
    parts = sql.split("?")
    body = parts[0] + "".join(f"_v.column{next(numbers)}{part}" for part in parts[1:])
    head, where = body.split(" WHERE ")
    values = ", ".join([_group(width)] * per)
    return f"{head} FROM (VALUES {values}) AS _v WHERE {where}"


def _pg_casts(compiled: sa.engine.Compiled, order: Sequence[str]) -> list[str]:
    """How the SQL writes each of $1, $2, …, asked of the compiler that wrote it.

    SQLAlchemy's asyncpg dialect casts every parameter to its column's type
    (`$1::VARCHAR`); the array of the same type is what `unnest` takes.
    """
    assert isinstance(compiled, sa.sql.compiler.SQLCompiler)
    dialect = compiled.dialect
    render: Callable[[Any, Any, str], str] = compiled.render_bind_cast  # untyped upstream
    casts = []
    for n, name in enumerate(order, 1):
        type_ = compiled.binds[name].type
        casts.append(render(type_, type_._unwrapped_dialect_impl(dialect), f"${n}"))
    return casts


def _pg_types(sql: str, casts: Sequence[str]) -> list[str] | None:
    """The type of each parameter; None when the SQL has a `$` that is not one of `casts`."""
    rest = sql
    for cast in casts:
        rest = rest.replace(cast, "")
    if "$" in rest or any("::" not in cast for cast in casts):
        return None
    return [cast.split("::", 1)[1] for cast in casts]


def _unnest(types: Sequence[str]) -> str:
    return "unnest(" + ", ".join(f"${n}::{t}[]" for n, t in enumerate(types, 1)) + ")"


def unnest_insert(sql: str, casts: Sequence[str]) -> str | None:
    """`INSERT … SELECT * FROM unnest(…)`; None for any shape but `INSERT … VALUES (…)`."""
    types = _pg_types(sql, casts)
    values = " VALUES (" + ", ".join(casts) + ")"
    if (
        types is None
        or not sql.startswith("INSERT INTO ")
        or sql.count(" VALUES ") != 1
        or not sql.endswith(values)
    ):
        return None
    return sql.removesuffix(values) + " SELECT * FROM " + _unnest(types)


def unnest_update(sql: str, casts: Sequence[str]) -> str | None:
    """`UPDATE t SET … FROM unnest(…) AS _v(c1, …) WHERE …`, the n-th parameter read as `_v.cn`.

    None for any other shape: a subquery, a FROM or a RETURNING clause of its own.
    """
    types = _pg_types(sql, casts)
    if (
        types is None
        or not sql.startswith("UPDATE ")
        or sql.count(" SET ") != 1
        or sql.count(" WHERE ") != 1
        or " FROM " in sql
        or " RETURNING " in sql
    ):
        return None
    for n, cast in enumerate(casts, 1):  # `$1::` is no part of `$10::`
        sql = sql.replace(cast, f"_v.c{n}")
    head, where = sql.split(" WHERE ")
    names = ", ".join(f"c{n}" for n in range(1, len(casts) + 1))
    return f"{head} FROM {_unnest(types)} AS _v({names}) WHERE {where}"
