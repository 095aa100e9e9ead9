"""Wakes delayed tasks and retries when their time comes.

It sleeps until the earliest known run time — learned from the database and
from hints the committer passes on as delayed tasks are written — so a task
due at T is promoted (and, in the same commit, leased) within about a
millisecond of T, with a periodic re-read as a fallback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from broker.clock import MICROS, Clock
from broker.engine.committer import Committer
from broker.engine.upkeep import PromoteDue
from broker.store import maintenance as store
from broker.store.database import Database

BATCH = 5000
FAILURE_BACKOFF_S = 1.0
log = logging.getLogger(__name__)


class Promoter:
    def __init__(
        self, *, db: Database, committer: Committer, clock: Clock, poll_interval_s: float
    ) -> None:
        self._db = db
        self._committer = committer
        self._clock = clock
        self._poll_us = int(poll_interval_s * MICROS)
        self._next: int | None = None
        self._hint: int | None = None
        self._wake = asyncio.Event()

    def due_at(self, run_at: int) -> None:
        if self._hint is None or run_at < self._hint:
            self._hint = run_at
        if self._next is None or run_at < self._next:
            self._wake.set()

    async def run(self) -> None:
        while True:
            try:
                await self._run()
            except Exception:
                log.exception("promoter failed; restarting")
                await asyncio.sleep(FAILURE_BACKOFF_S)

    async def _run(self) -> None:
        await self._refresh()
        while True:
            now = self._clock.now_us()
            if self._next is not None and self._next <= now:
                promoted = await self._committer.submit(PromoteDue(BATCH))
                if len(promoted) < BATCH:
                    await self._refresh()
                continue
            wait_us = self._poll_us if self._next is None else min(self._poll_us, self._next - now)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait_us / MICROS)
            if self._wake.is_set():
                self._fold_hint()
            else:
                await self._refresh()

    def _fold_hint(self) -> None:
        hint, self._hint = self._hint, None
        if hint is not None and (self._next is None or hint < self._next):
            self._next = hint

    async def _refresh(self) -> None:
        # Hints that arrive while we read are folded in afterwards, so a task
        # written during the read is not forgotten.
        self._hint = None
        async with self._db.reader.connect() as conn:
            self._next = await store.next_due(conn)
        self._fold_hint()
