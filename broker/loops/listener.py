"""Hears the other replicas (PostgreSQL LISTEN): new work to claim, cancels to deliver.

The connection itself is the store's (store/notices.py); this loop decides
what a notice means and reconnects with a backoff when the connection is
lost. After every (re)connection it assumes work may be waiting everywhere,
so nothing is missed while it was away; the dispatcher's fallback poll covers
the rest. Anything else it raises is the supervisor's to log and restart.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Callable
from typing import Any

from broker.core.models import LeaseRef, Progress
from broker.engine.dispatcher import Dispatcher, StopReason
from broker.engine.event_record import Kind
from broker.engine.events import TaskEvents
from broker.engine.journal import Journal
from broker.store import notices as store
from broker.store.notices import CANCEL, DRAIN, EVENTS, READY

log = logging.getLogger(__name__)


class Listener:
    def __init__(
        self,
        *,
        url: str,
        replica_id: str,
        dispatcher: Dispatcher,
        events: TaskEvents,
        journal: Journal,
        drain: Callable[[str], None],
    ) -> None:
        self._drain = drain
        self._url = url
        self._replica_id = replica_id
        self._dispatcher = dispatcher
        self._events = events
        self._journal = journal
        self.heard = 0
        self.connections = 0
        # Set once every channel is heard: the broker serves after that (app.py).
        self.listening = asyncio.Event()

    async def run(self) -> None:
        backoff = 0.5
        handlers = {
            READY: self._on_ready,
            CANCEL: self._on_cancel,
            DRAIN: self._on_drain,
            EVENTS: self._on_events,
        }
        while True:
            try:
                await store.listen(self._url, handlers, connected=self._connected)
                backoff = 0.5
            except store.CONNECTION_LOST as exc:
                log.warning("LISTEN connection lost (%s); polling until it is back", exc)
            await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
            backoff = min(backoff * 2, 10.0)

    def _connected(self) -> None:
        self._dispatcher.mark_all_ready()
        self.connections += 1
        if self.connections > 1 or self._journal.subscribers:
            # Other replicas' events may have gone by while nobody listened.
            self._journal.link_lost()
        self.listening.set()

    def _on_events(self, payload: str) -> None:
        """Another replica's events: into the journal, and to WatchTask callers here."""
        for event in self._journal.heard(payload):
            if event.kind is Kind.TASK_STATE:
                self._events.state_changed([event.key])
            elif event.kind is Kind.TASK_PROGRESS and isinstance(event.detail, Progress):
                self._events.progress(event.key, event.detail)

    def _message(self, payload: str) -> dict[str, Any] | None:
        try:
            data = json.loads(payload)
        except ValueError:
            return None
        if not isinstance(data, dict) or data.get("r") == self._replica_id:
            return None
        self.heard += 1
        return data

    def _on_ready(self, payload: str) -> None:
        data = self._message(payload)
        if data is not None:
            self._dispatcher.mark_ready([str(q) for q in data.get("q", [])])

    def _on_cancel(self, payload: str) -> None:
        data = self._message(payload)
        if data is None:
            return
        task_id, lease = str(data.get("t", "")), str(data.get("l", ""))
        if lease.isdigit():
            self._dispatcher.stop([LeaseRef(task_id, int(lease))], StopReason.CANCEL_REQUESTED)
            self._events.state_changed([task_id])

    def _on_drain(self, payload: str) -> None:
        data = self._message(payload)
        if data is not None:
            self._drain(str(data.get("w", "")))
