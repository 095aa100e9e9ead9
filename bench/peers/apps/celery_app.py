"""Celery on Redis: results ignored, every key under the run's prefix, otherwise defaults."""

from __future__ import annotations

import os

from celery import Celery

from bench.peers.handler import REDIS_URL, stamp_sync

NAME = os.environ.get("PEERS_NAME", "pbtest")
app = Celery(NAME, broker=REDIS_URL)
app.conf.update(
    task_default_queue=NAME,
    task_ignore_result=True,
    broker_transport_options={"global_keyprefix": f"{NAME}:"},
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="peers.stamp")
def stamp(tag: str, seq: int) -> None:
    stamp_sync(tag, seq)


class Submitter:
    """Celery has no bulk send: one `apply_async` per task."""

    async def bulk(self, tag: str, n: int) -> None:
        for i in range(n):
            stamp.apply_async((tag, i))

    async def one(self, tag: str, seq: int) -> None:
        stamp.apply_async((tag, seq))

    async def close(self) -> None:
        app.close()
