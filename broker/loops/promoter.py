"""Wakes delayed tasks and retries when their time comes.

It sleeps until the earliest known run time — learned from the database and
from the alarm the engine rings as delayed tasks are written — so a task due
at T is promoted (and, in the same commit, leased) within about a
millisecond of T, with a periodic re-read as a fallback. A crash is the
supervisor's to restart (loops/supervisor.py).
"""

from __future__ import annotations

from broker.clock import MICROS, Clock
from broker.engine.committer import Committer
from broker.engine.upkeep import PromoteDue
from broker.loops.alarm import Alarm
from broker.store import maintenance as store
from broker.store.database import Database

BATCH = 5000


class Promoter:
    def __init__(
        self,
        *,
        db: Database,
        committer: Committer,
        clock: Clock,
        alarm: Alarm,
        poll_interval_s: float,
    ) -> None:
        self._db = db
        self._committer = committer
        self._clock = clock
        self._alarm = alarm
        self._poll_us = int(poll_interval_s * MICROS)

    async def run(self) -> None:
        alarm = self._alarm
        await self._refresh()
        while True:
            now = self._clock.now_us()
            if alarm.next is not None and alarm.next <= now:
                promoted = await self._committer.submit(PromoteDue(BATCH))
                if len(promoted) < BATCH:
                    await self._refresh()
                continue
            if not await alarm.sleep(now, self._poll_us):
                await self._refresh()

    async def _refresh(self) -> None:
        self._alarm.reading()
        async with self._db.reader.connect() as conn:
            self._alarm.read(await store.next_due(conn))
