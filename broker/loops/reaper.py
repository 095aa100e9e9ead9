"""Takes back leases whose deadline passed: the authority on dead workers.

A closed stream releases its leases at once; the reaper catches what that
cannot — a worker that hangs, a network that drops silently, leases left from
before a broker restart. It waits one lease duration after start so that
reconnecting workers can re-adopt their leases first.
"""

from __future__ import annotations

import asyncio
import logging
import random

from broker.loops.committer import Committer
from broker.loops.ops import ExpireLeases

BATCH = 1000
log = logging.getLogger(__name__)


class Reaper:
    def __init__(self, *, committer: Committer, interval_s: float, startup_grace_s: float) -> None:
        self._committer = committer
        self._interval = interval_s
        self._grace = startup_grace_s
        self.expired = 0

    async def run(self) -> None:
        await asyncio.sleep(self._grace)
        while True:
            try:
                expired = await self._committer.submit(ExpireLeases(BATCH))
            except Exception:
                log.exception("lease sweep failed; retrying")
                expired = []
            self.expired += len(expired)
            if len(expired) < BATCH:
                # Jitter keeps replicas from sweeping in lockstep.
                await asyncio.sleep(self._interval * random.uniform(0.8, 1.2))
