"""Keeps the worker registry current: this replica's sessions, written every few seconds.

Liveness itself stays in memory (a heartbeat never writes a registry row); the
registry is for people asking "which workers are there": ListWorkers reads rows
refreshed within the last few intervals, so a replica that died drops out of the
list on its own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from broker.clock import Clock
from broker.engine.committer import Committer
from broker.engine.worker_ops import WriteSessions
from broker.store.workers import SessionRow

log = logging.getLogger(__name__)

INTERVAL_S = 5.0
STALE_US = int(3 * INTERVAL_S * 1_000_000)


class RegistryLoop:
    def __init__(
        self, *, committer: Committer, clock: Clock, snapshot: Callable[[], list[SessionRow]]
    ) -> None:
        self._committer = committer
        self._clock = clock
        self._snapshot = snapshot

    async def run(self) -> None:
        while True:
            await asyncio.sleep(INTERVAL_S)
            try:
                now = self._clock.now_us()
                await self._committer.submit(
                    WriteSessions(self._snapshot(), stale_before=now - 4 * STALE_US)
                )
            except Exception:
                log.warning("could not refresh the worker registry", exc_info=True)
