"""Periodic re-reads that bound what a missed wake-up can cost.

`poll_ready`: the dispatcher is woken by events (a submission, a promotion,
a lease coming back, another replica's notice); every `interval_s` it also
assumes every served queue may have work, so a lost wake-up costs at most
that long, never a stuck task. `refresh_queues`: queue settings are cached
in memory (engine/queue_registry.py) and re-read every couple of seconds,
so a change made through another replica takes effect here within that time.
"""

from __future__ import annotations

import asyncio
import logging

from broker.engine.dispatcher import Dispatcher
from broker.engine.queue_registry import QueueRegistry

log = logging.getLogger(__name__)

QUEUE_REFRESH_S = 2.0


async def poll_ready(dispatcher: Dispatcher, interval_s: float) -> None:
    while True:
        await asyncio.sleep(interval_s)
        dispatcher.mark_all_ready()


async def refresh_queues(queues: QueueRegistry, interval_s: float = QUEUE_REFRESH_S) -> None:
    while True:
        await asyncio.sleep(interval_s)
        try:
            await queues.load()
        except Exception:
            log.warning("could not reload queue settings; keeping the last ones", exc_info=True)
