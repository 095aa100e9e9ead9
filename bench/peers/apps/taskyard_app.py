"""Taskyard: an async handler on the Python SDK; submissions through `Client`."""

from __future__ import annotations

import asyncio
import os

from bench.peers.handler import stamp_async
from worker_sdk import Client, TaskContext, TaskSpec, Worker

TYPE = "peers.stamp"
worker = Worker()


@worker.task(TYPE)
async def stamp(ctx: TaskContext) -> None:
    tag, seq = ctx.payload
    await stamp_async(tag, seq)


class Submitter:
    """Bulk: BatchCreateTasks of 1,000, four calls in flight (as `make bench` submits)."""

    def __init__(self) -> None:
        self._client = Client(os.environ["PEERS_TARGET"], timeout=120)

    async def bulk(self, tag: str, n: int) -> None:
        specs = [TaskSpec(TYPE, [tag, i]) for i in range(n)]
        batches = [specs[i : i + 1000] for i in range(0, n, 1000)]
        semaphore = asyncio.Semaphore(4)

        async def one(batch: list[TaskSpec]) -> None:
            async with semaphore:
                await self._client.submit_many(batch)

        await asyncio.gather(*(one(b) for b in batches))

    async def one(self, tag: str, seq: int) -> None:
        await self._client.submit(TYPE, [tag, seq])

    async def close(self) -> None:
        await self._client.close()
