"""Why the broker writes many rows a statement on SQLite: the GIL hand-over per step.

`python -m bench.sqlite_gil` writes --rows leased tasks into the broker's own `task` table
(every index it has) in transactions of --batch rows, then ends their leases, on a thread
of its own as the broker's SQLite thread does, two ways:

* one row a statement: `executemany` of the one-row SQL, what the broker did before;
* as `BatchWrite` sends them: statements of up to 64 rows (store/prepared.py).

Each runs on a quiet process and beside a thread that stands in for a busy event loop
(pure Python for 0.5 ms, then 50 µs asleep, over and over). Python's sqlite3 lets go of
the GIL around every statement step and must get it back from that thread, so one row a
step waits for the GIL once a row. It prints the writer's wall and CPU time per row,
medians of --runs.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import tempfile
import threading
import time
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite as sqlite_dialect

from broker.ids import UlidGenerator
from broker.store.database import ensure_schema, open_database
from broker.store.prepared import BatchWrite, Row, SqliteForm
from broker.store.schema import task

_INSERT_NAMES = (
    "id", "queue", "type", "priority", "state", "attempt", "max_attempts", "lost_count",
    "run_at", "created_at", "updated_at", "started_at", "lease_id", "lease_expires_at",
    "worker_id", "cancel_requested", "attempt_base", "heartbeat_timeout_us",
)  # fmt: skip
INSERT = BatchWrite(task.insert(), _INSERT_NAMES)
# A lease's end, fenced on the lease as the broker's is (store/leases.py).
END = BatchWrite(
    sa.update(task)
    .where(
        task.c.id == sa.bindparam("b_id"),
        task.c.lease_id == sa.bindparam("b_lease"),
        task.c.state == sa.literal_column("3"),
    )
    .values(
        state=sa.bindparam("b_state"),
        finished_at=sa.bindparam("b_now"),
        updated_at=sa.bindparam("b_now"),
        lease_id=sa.null(),
        lease_expires_at=sa.null(),
    ),
    ("b_state", "b_now", "b_id", "b_lease"),
    distinct_targets=True,
)


def _rows(n: int) -> tuple[list[Row], list[Row]]:
    ids, now = UlidGenerator(), 1_764_000_000_000_000
    inserts = [
        (ids.new(), "default", "noop", 0, 3, 1, 3, 0, now, now, now, now, i + 1, now + 30_000_000,
         "worker-1", 0, 0, 10_000_000)
        for i in range(n)
    ]  # fmt: skip
    ends = [(5, now + 1_000, row[0], row[12]) for row in inserts]
    return inserts, ends


async def _schema(path: Path) -> None:
    db = open_database(f"sqlite+aiosqlite:///{path}")
    try:
        await ensure_schema(db, auto_migrate=True)
    finally:
        await db.dispose()


def _contender(stop: threading.Event) -> None:
    spin = 0
    while not stop.is_set():
        until = time.perf_counter() + 0.0005
        while time.perf_counter() < until:
            spin += 1
        time.sleep(0.00005)


def _write(
    path: Path, forms: tuple[SqliteForm, SqliteForm], rows: int, batch: int
) -> tuple[float, float]:
    """Wall and thread-CPU µs per row for inserting then ending `rows` tasks."""
    inserts, ends = _rows(rows)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    spent: list[float] = []

    def run() -> None:
        cpu, wall = time.thread_time(), time.perf_counter()
        for form, all_rows in zip(forms, (inserts, ends), strict=True):
            for start in range(0, rows, batch):
                conn.execute("BEGIN IMMEDIATE")
                for sql, params in form.batches(all_rows[start : start + batch]):
                    conn.executemany(sql, params)
                conn.execute("COMMIT")
        spent.extend([time.perf_counter() - wall, time.thread_time() - cpu])

    writer = threading.Thread(target=run)
    writer.start()
    writer.join()
    done = conn.execute("SELECT count(*) FROM task WHERE state = 5").fetchone()[0]
    conn.close()
    if done != rows:
        raise RuntimeError(f"{done} of {rows} tasks ended")
    return spent[0] / rows * 1e6, spent[1] / rows * 1e6


def _measure(
    workdir: Path, label: str, forms: tuple[SqliteForm, SqliteForm], args: argparse.Namespace
) -> None:
    for busy in (False, True):
        walls, cpus = [], []
        for run in range(args.runs):
            path = workdir / f"{label}-{busy}-{run}.db"
            asyncio.run(_schema(path))
            stop = threading.Event()
            loop = threading.Thread(target=_contender, args=(stop,))
            if busy:
                loop.start()
            try:
                wall, cpu = _write(path, forms, args.rows, args.batch)
            finally:
                stop.set()
                if busy:
                    loop.join()
            walls.append(wall)
            cpus.append(cpu)
        where = "beside a busy loop" if busy else "quiet"
        print(
            f"  {label:<24} {where:<20} wall {statistics.median(walls):7.1f} µs/row   "
            f"writer CPU {statistics.median(cpus):6.1f} µs/row   (runs: "
            + ", ".join(f"{w:.1f}" for w in walls)
            + ")"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=1_500)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    dialect = sqlite_dialect.dialect()

    def batched(write: BatchWrite) -> SqliteForm:
        return write.sqlite_form(dialect)

    print(
        f"{args.rows:,} tasks inserted, then their leases ended, {args.batch:,} rows a "
        f"transaction; SQLite {sqlite3.sqlite_version}"
    )
    with tempfile.TemporaryDirectory() as workdir:
        one = (batched(INSERT).one_row(), batched(END).one_row())
        _measure(Path(workdir), "one row a statement", one, args)
        _measure(Path(workdir), "BatchWrite (≤64 a step)", (batched(INSERT), batched(END)), args)


if __name__ == "__main__":
    main()
