"""Enforces deadlines: lost leases, execution timeouts and task expiry.

A closed stream releases its leases at once; the reaper catches what that
cannot — a worker that hangs, a network that drops silently, leases left from
before a broker restart — and ends attempts that run past their execution
timeout and waiting tasks that pass their expiry. (Leases from before a
restart get a grace period at start, in app.py, so that reconnecting workers
can re-adopt them first.)
"""

from __future__ import annotations

import asyncio
import logging
import random

from broker.engine.committer import Committer
from broker.engine.upkeep import ClaimTick, ExpireLeases, ExpireTasks, TimeOutAttempts

BATCH = 1000
log = logging.getLogger(__name__)


class Reaper:
    def __init__(self, *, committer: Committer, interval_s: float) -> None:
        self._committer = committer
        self._interval = interval_s
        self.expired = 0

    async def run(self) -> None:
        # With several replicas each sweeps on its own timer, but only the one
        # that wins the tick's compare-and-set does the work.
        tick = ClaimTick("reaper", int(self._interval * 0.8 * 1_000_000))
        while True:
            try:
                if not await self._committer.submit(tick.fresh()):
                    await asyncio.sleep(self._interval * random.uniform(0.8, 1.2))
                    continue
                # Submitted together, the three sweeps share one transaction.
                lost, timed_out, expired = await asyncio.gather(
                    self._committer.submit(ExpireLeases(BATCH)),
                    self._committer.submit(TimeOutAttempts(BATCH)),
                    self._committer.submit(ExpireTasks(BATCH)),
                )
                busiest = max(len(lost), len(timed_out), len(expired))
                self.expired += len(lost)
            except Exception:
                log.exception("deadline sweep failed; retrying")
                busiest = 0
            if busiest < BATCH:
                # Jitter keeps replicas from sweeping in lockstep.
                await asyncio.sleep(self._interval * random.uniform(0.8, 1.2))
