"""dramatiq on Redis: `RedisBroker` with dramatiq's default middleware."""

from __future__ import annotations

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from bench.peers.handler import REDIS_URL, stamp_sync

broker = RedisBroker(url=REDIS_URL, namespace=os.environ.get("PEERS_NAME", "pbtest"))
dramatiq.set_broker(broker)
QUEUE = "default"


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def stamp(tag: str, seq: int) -> None:
    stamp_sync(tag, seq)


class Submitter:
    """dramatiq has no bulk enqueue on Redis: one `send` (one Lua call) per task."""

    async def bulk(self, tag: str, n: int) -> None:
        for i in range(n):
            stamp.send(tag, i)

    async def one(self, tag: str, seq: int) -> None:
        stamp.send(tag, seq)

    async def close(self) -> None:
        broker.close()
