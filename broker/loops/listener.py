"""Hears the other replicas (PostgreSQL LISTEN): new work to claim, cancels to deliver.

A dedicated asyncpg connection listens outside the pool. After every
(re)connection it assumes work may be waiting everywhere, so nothing is missed
while it was away; the dispatcher's fallback poll covers the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import Callable
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from broker.core.models import LeaseRef
from broker.engine.dispatcher import Dispatcher, StopReason
from broker.engine.events import TaskEvents
from broker.store.notices import CANCEL, DRAIN, READY

log = logging.getLogger(__name__)

PING_S = 10.0


def asyncpg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class Listener:
    def __init__(
        self,
        *,
        url: str,
        replica_id: str,
        dispatcher: Dispatcher,
        events: TaskEvents,
        drain: Callable[[str], None],
    ) -> None:
        self._drain = drain
        self._dsn = asyncpg_dsn(url)
        self._replica_id = replica_id
        self._dispatcher = dispatcher
        self._events = events
        self.heard = 0

    async def run(self) -> None:
        backoff = 0.5
        while True:
            try:
                await self._listen()
                backoff = 0.5
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("LISTEN connection lost (%s); polling until it is back", exc)
            await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
            backoff = min(backoff * 2, 10.0)

    async def _listen(self) -> None:
        conn = await asyncpg.connect(self._dsn, timeout=10)
        closed = asyncio.Event()
        conn.add_termination_listener(lambda _conn: closed.set())
        try:
            await conn.add_listener(READY, self._on_ready)
            await conn.add_listener(CANCEL, self._on_cancel)
            await conn.add_listener(DRAIN, self._on_drain)
            self._dispatcher.mark_all_ready()
            while not closed.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(closed.wait(), PING_S)
                if not closed.is_set():
                    await conn.execute("SELECT 1")
        finally:
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)

    def _message(self, payload: object) -> dict[str, Any] | None:
        try:
            data = json.loads(str(payload))
        except ValueError:
            return None
        if not isinstance(data, dict) or data.get("r") == self._replica_id:
            return None
        self.heard += 1
        return data

    def _on_ready(self, _conn: Any, _pid: int, _channel: str, payload: object) -> None:
        data = self._message(payload)
        if data is not None:
            self._dispatcher.mark_ready([str(q) for q in data.get("q", [])])

    def _on_cancel(self, _conn: Any, _pid: int, _channel: str, payload: object) -> None:
        data = self._message(payload)
        if data is None:
            return
        task_id, lease = str(data.get("t", "")), str(data.get("l", ""))
        if lease.isdigit():
            self._dispatcher.stop([LeaseRef(task_id, int(lease))], StopReason.CANCEL_REQUESTED)
            self._events.state_changed([task_id])

    def _on_drain(self, _conn: Any, _pid: int, _channel: str, payload: object) -> None:
        data = self._message(payload)
        if data is not None:
            self._drain(str(data.get("w", "")))
