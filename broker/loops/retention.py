"""Deletes finished tasks once they are old enough, and forgets old idempotency keys.

Each queue may keep its finished tasks for its own periods; the rest use the
broker's. Deletes go through the committer in batches of a thousand, so the
database stays flat at a steady load and no transaction grows with it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from broker.clock import MICROS, Clock
from broker.core.retention import Retention, RetentionPolicy
from broker.core.workflows import WorkflowState
from broker.engine.committer import Committer
from broker.engine.upkeep import ClaimTick, ForgetRequestIds, Purge
from broker.engine.workflow_ops import PurgeWorkflows

log = logging.getLogger(__name__)

BATCH = 1000
WORKFLOW_BATCH = 50  # whole workflows (their nodes: up to 100,000 each)


class RetentionLoop:
    def __init__(
        self, *, committer: Committer, clock: Clock, policy: RetentionPolicy, interval_s: float
    ) -> None:
        self._committer = committer
        self._clock = clock
        self._policy = policy
        self._interval = interval_s
        self.purged = 0

    async def run(self) -> None:
        tick = ClaimTick("retention", int(self._interval * 0.8 * MICROS))
        while True:
            try:
                if await self._committer.submit(tick.fresh()):
                    await self.sweep()
            except Exception:
                log.exception("retention sweep failed; retrying later")
            await asyncio.sleep(self._interval)

    async def sweep(self) -> int:
        now = self._clock.now_us()
        purged = 0
        named = list(self._policy.queues)
        for queue, retention in self._policy.queues.items():
            purged += await self._purge(retention, now, queue=queue)
        purged += await self._purge(self._policy.default, now, exclude=named)
        workflows = await self._purge_workflows(self._policy.default, now)
        if workflows:
            log.info("retention purged %d finished workflows with their nodes", workflows)
        while (
            await self._committer.submit(
                ForgetRequestIds(created_before=now - self._policy.request_id_us, limit=BATCH)
            )
            == BATCH
        ):
            pass
        if purged:
            log.info("retention purged %d finished tasks", purged)
        self.purged += purged
        return purged

    async def _purge_workflows(self, retention: Retention, now: int) -> int:
        """Finished workflows go whole, nodes and all, by the broker's default periods.

        Per-queue periods do not apply: a workflow's nodes may sit in many queues,
        and none of them is purged while its workflow is unfinished.
        """
        cutoffs = {
            WorkflowState.SUCCEEDED: now - retention.succeeded_us,
            WorkflowState.FAILED: now - retention.failed_us,
            WorkflowState.CANCELLED: now - retention.cancelled_us,
        }
        total = 0
        while True:
            deleted = await self._committer.submit(PurgeWorkflows(cutoffs, limit=WORKFLOW_BATCH))
            total += deleted
            if deleted < WORKFLOW_BATCH:
                return total

    async def _purge(
        self,
        retention: Retention,
        now: int,
        *,
        queue: str | None = None,
        exclude: Sequence[str] = (),
    ) -> int:
        total = 0
        for states, keep_us in retention.rules():
            while True:
                op = Purge(
                    finished_before=now - keep_us,
                    states=states,
                    queue=queue,
                    exclude_queues=exclude,
                    limit=BATCH,
                )
                deleted = await self._committer.submit(op)
                total += deleted
                if deleted < BATCH:
                    break
        return total
