"""Run `taskyard ARGS…` after breaking what the SQLite fast path relies on, on purpose.

`python -m tests.broken_sqlite BREAKAGE broker --db …` changes the installed
libraries in this process only, before the broker imports anything of its
own, the way another release of them could:

- `no-await_`: `sqlalchemy.util.concurrency` exports no `await_`, as in
  SQLAlchemy 2.0 (which calls it `await_only`). The fast path cannot even be
  imported.
- `drops-deferred`: aiosqlite's database thread ignores a queued call that
  carries no future, which is how write-behind queues its statements: every
  name is present, but deferred writes vanish.
- `dies-on-deferred`: the thread dies on such a call, as aiosqlite 0.22.0's
  did: the fast path hangs.

SQLAlchemy's stock aiosqlite dialect works in all three.
"""

from __future__ import annotations

import asyncio
import runpy
import sys
import types
from collections.abc import Callable
from typing import Any

import aiosqlite.core

_STOP = aiosqlite.core._STOP_RUNNING_SENTINEL
_Queue = Any  # aiosqlite's SimpleQueue of (future | None, function)


def _without_await_() -> None:
    # SQLAlchemy keeps using the name inside; only importers see a module without it.
    import sqlalchemy.dialects.postgresql.asyncpg
    import sqlalchemy.dialects.sqlite.aiosqlite
    import sqlalchemy.ext.asyncio
    import sqlalchemy.util

    original = sys.modules["sqlalchemy.util.concurrency"]
    exported = types.ModuleType(original.__name__, original.__doc__)
    vars(exported).update((k, v) for k, v in vars(original).items() if k != "await_")
    sys.modules[original.__name__] = exported
    sqlalchemy.util.concurrency = exported


def _worker(*, without_future: Callable[[], None]) -> Callable[[_Queue], None]:
    """aiosqlite's thread loop, with `without_future` for a call nobody awaits."""

    def loop(tx: _Queue) -> None:
        while True:
            future, function = tx.get()
            if future is None:
                without_future()
                continue
            try:
                result = function()
                future.get_loop().call_soon_threadsafe(_settle, future, result, None)
                if result is _STOP:
                    break
            except BaseException as error:
                future.get_loop().call_soon_threadsafe(_settle, future, None, error)

    return loop


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)


def _ignore() -> None:
    return None


def _die() -> None:
    raise SystemExit  # ends the thread, silently, like 0.22.0's AttributeError did


BREAKAGES: dict[str, Callable[[], None]] = {
    "no-await_": _without_await_,
    "drops-deferred": lambda: setattr(
        aiosqlite.core, "_connection_worker_thread", _worker(without_future=_ignore)
    ),
    "dies-on-deferred": lambda: setattr(
        aiosqlite.core, "_connection_worker_thread", _worker(without_future=_die)
    ),
}


def main() -> None:
    breakage, *args = sys.argv[1:]
    BREAKAGES[breakage]()
    sys.argv = ["taskyard", *args]
    runpy.run_module("broker", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
