"""The running broker's shared parts, handed to every servicer."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from broker.api.sessions import Sessions
from broker.clock import Clock
from broker.config import Settings
from broker.core.options import Defaults
from broker.engine.committer import Committer
from broker.engine.dispatcher import Dispatcher
from broker.engine.events import TaskEvents
from broker.engine.journal import Journal
from broker.engine.queue_registry import QueueRegistry
from broker.security.limits import SubmitBudget
from broker.store.database import Database


@dataclass(kw_only=True)
class Runtime:
    settings: Settings
    clock: Clock
    db: Database
    committer: Committer
    dispatcher: Dispatcher
    events: TaskEvents
    journal: Journal  # the global event stream (WatchEvents)
    schema_version: str
    defaults: Defaults
    queues: QueueRegistry
    # The ticker's alarm (loops/alarm.py): a schedule changed here may fire sooner.
    schedule_hint: Callable[[int | None], None]
    replica_id: str = ""
    # Per-identity submission buckets, shared by the interceptor and schedule fires.
    budget: SubmitBudget | None = None
    shutting_down: bool = False
    sessions: Sessions = field(default_factory=Sessions)
