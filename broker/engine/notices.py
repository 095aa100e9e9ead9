"""What other replicas must hear about, sent inside the transaction that caused it.

On PostgreSQL, NOTIFY is delivered only when its transaction commits, so a
replica is never woken for a task it cannot yet see. Each commit sends at most
one `taskyard_ready` notice (the queues that got work) and one per cancelled
running task on `taskyard_cancel`. On SQLite there is one broker and nothing
to send.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from sqlalchemy.ext.asyncio import AsyncConnection

from broker.core.models import LeaseRef
from broker.store import notices as store
from broker.store.notices import CANCEL, DRAIN, EVENTS, MAX_PAYLOAD, READY


class Notices:
    def __init__(self, *, replica_id: str, enabled: bool) -> None:
        self.replica_id = replica_id
        self._enabled = enabled
        self._queues: set[str] = set()
        self._cancels: list[LeaseRef] = []
        self._drains: list[str] = []
        self._events: list[str] = []

    @property
    def enabled(self) -> bool:
        return self._enabled

    def ready(self, queues: Iterable[str]) -> None:
        if self._enabled:
            self._queues.update(queues)

    def cancel(self, ref: LeaseRef) -> None:
        if self._enabled:
            self._cancels.append(ref)

    def drain(self, worker_id: str) -> None:
        if self._enabled:
            self._drains.append(worker_id)

    def events(self, payloads: list[str]) -> None:
        """The journal's relay payloads for this transaction (engine/journal.py)."""
        if self._enabled:
            self._events.extend(payloads)

    def discard(self) -> None:
        self._queues.clear()
        self._cancels.clear()
        self._drains.clear()
        self._events.clear()

    async def flush(self, conn: AsyncConnection) -> None:
        if not (self._queues or self._cancels or self._drains or self._events):
            return
        messages = [(READY, p) for p in self._ready_payloads()] + [
            (CANCEL, json.dumps({"r": self.replica_id, "t": c.task_id, "l": str(c.lease_id)}))
            for c in self._cancels
        ]
        messages += [(DRAIN, json.dumps({"r": self.replica_id, "w": w})) for w in self._drains]
        messages += [(EVENTS, p) for p in self._events]
        self.discard()
        await store.notify(conn, messages)

    def _ready_payloads(self) -> list[str]:
        payloads: list[str] = []
        batch: list[str] = []
        for queue in sorted(self._queues):
            candidate = json.dumps({"r": self.replica_id, "q": [*batch, queue]})
            if len(candidate) > MAX_PAYLOAD and batch:
                payloads.append(json.dumps({"r": self.replica_id, "q": batch}))
                batch = []
            batch.append(queue)
        if batch:
            payloads.append(json.dumps({"r": self.replica_id, "q": batch}))
        return payloads
