"""aiosqlite under SQLAlchemy, one thread hop per statement instead of four — or fewer.

SQLAlchemy's aiosqlite adapter makes four trips to aiosqlite's worker thread
for every statement (open a cursor, execute, fetch, close). On this class of
machine a trip costs 150-200 µs, which puts a single-task commit near 3 ms.
This dialect keeps SQLAlchemy Core and aiosqlite but runs the whole
execute-fetch-close sequence as one function on aiosqlite's thread.

Writes whose results nobody reads can go further: a statement executed with
the execution option `taskyard_defer=True` is queued and sent with the next
statement that returns rows, or with the COMMIT — so a commit that inserts a
task and bumps its counters costs one trip instead of three. An error in a
deferred statement surfaces at that later trip and fails the transaction
like any other. (On PostgreSQL the option means nothing.)

It relies on two stable internals: aiosqlite's `Connection._execute` (which
SQLAlchemy's own adapter also uses) and the adapter's cursor layout; the
versions are pinned in requirements.lock and the whole test suite runs on it.
"""

from __future__ import annotations

import collections
import sqlite3
from collections.abc import Sequence
from typing import Any

from sqlalchemy.dialects import registry
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
    SQLiteDialect_aiosqlite,
)
from sqlalchemy.util import EMPTY_DICT
from sqlalchemy.util.concurrency import await_

DRIVER = "taskyard_aiosqlite"

_Result = tuple[Any, list[Any], int, int | None]


def _execute(conn: sqlite3.Connection, operation: str, parameters: Sequence[Any] | None) -> _Result:
    cursor = conn.cursor()
    try:
        cursor.execute(operation, parameters or ())
        description = cursor.description
        rows = cursor.fetchall() if description else []
        return description, rows, cursor.rowcount, cursor.lastrowid
    finally:
        cursor.close()


def _executemany(conn: sqlite3.Connection, operation: str, seq: Sequence[Any]) -> _Result:
    cursor = conn.cursor()
    try:
        cursor.executemany(operation, seq)
        return None, [], cursor.rowcount, cursor.lastrowid
    finally:
        cursor.close()


Deferred = tuple[str, Any, bool]  # (statement, parameters, executemany?)
DEFER = "taskyard_defer"
#: Pass as `execution_options=` to a write whose result nobody reads.
DEFERRED: dict[str, Any] = {DEFER: True}
_PENDING = "_taskyard_pending"


def _run_all(
    conn: sqlite3.Connection, pending: list[Deferred], last: Deferred | None, commit: bool
) -> _Result:
    """Run deferred statements, then `last` (whose result is returned), then maybe COMMIT."""
    cursor = conn.cursor()
    try:
        for operation, parameters, many in pending:
            if many:
                cursor.executemany(operation, parameters)
            else:
                cursor.execute(operation, parameters or ())
        result: _Result = (None, [], -1, None)
        if last is not None:
            operation, parameters, many = last
            if many:
                cursor.executemany(operation, parameters)
                result = (None, [], cursor.rowcount, cursor.lastrowid)
            else:
                cursor.execute(operation, parameters or ())
                description = cursor.description
                rows = cursor.fetchall() if description else []
                result = (description, rows, cursor.rowcount, cursor.lastrowid)
        if commit:
            conn.commit()
        return result
    finally:
        cursor.close()


async def _nothing() -> None:
    return None


def _take_pending(driver: Any) -> list[Deferred]:
    pending: list[Deferred] = getattr(driver, _PENDING, None) or []
    setattr(driver, _PENDING, [])
    return pending


class _OneHopCursor(AsyncAdapt_aiosqlite_cursor):
    __slots__ = ("_description", "_lastrowid", "_rowcount")

    def __init__(self, adapt_connection: Any) -> None:
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._cursor = None  # type: ignore[assignment]
        self._soft_closed_memoized = EMPTY_DICT
        self._rows = collections.deque()
        self._description: Any = None
        self._rowcount = -1
        self._lastrowid: int | None = None

    @property
    def description(self) -> Any:
        return self._description

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def lastrowid(self) -> int:
        return self._lastrowid  # type: ignore[return-value]

    def close(self) -> None:
        self._rows.clear()

    async def _async_soft_close(self) -> None:
        return None

    def execute(self, operation: Any, parameters: Any = None) -> Any:
        try:
            return await_(self._run((operation, parameters, False)))
        except Exception as error:
            self._adapt_connection._handle_exception(error)

    def executemany(self, operation: Any, seq_of_parameters: Any) -> Any:
        try:
            return await_(self._run((operation, seq_of_parameters, True)))
        except Exception as error:
            self._adapt_connection._handle_exception(error)

    def defer(self, operation: Any, parameters: Any, many: bool) -> None:
        """Queue a write for the next trip (see the module docstring)."""
        driver = self._connection
        pending = getattr(driver, _PENDING, None)
        if pending is None:
            pending = []
            setattr(driver, _PENDING, pending)
        pending.append((operation, list(parameters) if many else parameters, many))
        self._description, self._rowcount, self._lastrowid = None, -1, None
        self._rows = collections.deque()
        # SQLAlchemy's AsyncConnection.execute insists that every statement
        # awaits something; a finished coroutine satisfies it without a trip.
        await_(_nothing())

    async def _run(self, statement: Deferred) -> None:
        async with self._adapt_connection._execute_mutex:
            driver = self._connection
            pending = _take_pending(driver)
            if pending:
                result = await driver._execute(_run_all, driver._conn, pending, statement, False)
            elif statement[2]:
                result = await driver._execute(_executemany, driver._conn, *statement[:2])
            else:
                result = await driver._execute(_execute, driver._conn, *statement[:2])
        self._description, rows, self._rowcount, self._lastrowid = result
        self._rows = collections.deque(rows)


class _OneHopConnection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ()
    _cursor_cls = _OneHopCursor

    def commit(self) -> None:
        pending = _take_pending(self._connection)
        if not pending:
            super().commit()
            return
        try:
            driver = self._connection
            await_(driver._execute(_run_all, driver._conn, pending, None, True))
        except Exception as error:
            self._handle_exception(error)

    def rollback(self) -> None:
        _take_pending(self._connection)
        super().rollback()


class _Dbapi(AsyncAdapt_aiosqlite_dbapi):
    def connect(self, *arg: Any, **kw: Any) -> AsyncAdapt_aiosqlite_connection:
        connection = super().connect(*arg, **kw)
        connection.__class__ = _OneHopConnection
        return connection


class OneHopDialect(SQLiteDialect_aiosqlite):
    driver = DRIVER
    supports_statement_cache = True

    @classmethod
    def import_dbapi(cls) -> AsyncAdapt_aiosqlite_dbapi:
        return _Dbapi(__import__("aiosqlite"), __import__("sqlite3"))

    def do_execute(self, cursor: Any, statement: Any, parameters: Any, context: Any = None) -> None:
        if context is not None and context.execution_options.get(DEFER):
            cursor.defer(statement, parameters, False)
        else:
            cursor.execute(statement, parameters)

    def do_executemany(
        self, cursor: Any, statement: Any, parameters: Any, context: Any = None
    ) -> None:
        if context is not None and context.execution_options.get(DEFER):
            cursor.defer(statement, parameters, True)
        else:
            cursor.executemany(statement, parameters)


registry.register(f"sqlite.{DRIVER}", __name__, "OneHopDialect")
