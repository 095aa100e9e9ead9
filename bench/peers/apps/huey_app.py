"""huey on Redis: `RedisHuey` with its defaults (blocking BRPOP dequeue, results on)."""

from __future__ import annotations

import os

from huey import RedisHuey

from bench.peers.handler import REDIS_URL, stamp_sync

huey = RedisHuey(os.environ.get("PEERS_NAME", "pbtest"), url=REDIS_URL)


@huey.task()
def stamp(tag: str, seq: int) -> None:
    stamp_sync(tag, seq)


class Submitter:
    """huey has no bulk enqueue: one LPUSH per task (a `group` loops the same way)."""

    async def bulk(self, tag: str, n: int) -> None:
        for i in range(n):
            stamp(tag, i)

    async def one(self, tag: str, seq: int) -> None:
        stamp(tag, seq)

    async def close(self) -> None:
        huey.storage.pool.disconnect()
