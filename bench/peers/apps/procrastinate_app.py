"""procrastinate on PostgreSQL: psycopg 3 connector, LISTEN/NOTIFY on (its default)."""

from __future__ import annotations

import os

import procrastinate

from bench.peers.handler import stamp_async

app = procrastinate.App(
    connector=procrastinate.PsycopgConnector(
        conninfo=os.environ.get("PEERS_DSN", "postgresql://127.0.0.1:5432/test")
    )
)


@app.task(name="peers.stamp", queue="default")
async def stamp(tag: str, seq: int) -> None:
    await stamp_async(tag, seq)


class Submitter:
    """Bulk: `batch_defer_async` of 1,000 jobs a call (one INSERT each)."""

    def __init__(self) -> None:
        self._opened = False

    async def _open(self) -> None:
        if not self._opened:
            await app.open_async()
            self._opened = True

    async def bulk(self, tag: str, n: int) -> None:
        await self._open()
        for start in range(0, n, 1000):
            jobs = [{"tag": tag, "seq": i} for i in range(start, min(n, start + 1000))]
            await stamp.batch_defer_async(*jobs)

    async def one(self, tag: str, seq: int) -> None:
        await self._open()
        await stamp.defer_async(tag=tag, seq=seq)

    async def close(self) -> None:
        if self._opened:
            await app.close_async()
