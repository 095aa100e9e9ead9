"""What every replica knows of the queues: their settings, cached in memory.

Dispatch and submission consult this on every task, so it must not touch the
database; `loops/polls.py` reloads it every couple of seconds (so a change
made through another replica takes effect there within that time), and ops
update it at once after a change made through this one.
"""

from __future__ import annotations

from functools import lru_cache

from broker.core.options import Defaults, TaskOptions
from broker.core.queues import QueueSettings
from broker.store import queues as store
from broker.store.database import Database


class QueueRegistry:
    def __init__(self, *, db: Database, defaults: Defaults) -> None:
        self._db = db
        self._defaults = defaults
        self._queues: dict[str, QueueSettings] = {}

    def get(self, name: str) -> QueueSettings | None:
        return self._queues.get(name)

    def known(self, name: str) -> bool:
        return name in self._queues

    def paused(self, name: str) -> bool:
        settings = self._queues.get(name)
        return settings is not None and settings.paused

    def limited(self, name: str) -> bool:
        settings = self._queues.get(name)
        return settings is not None and settings.limited

    def options(self, name: str) -> TaskOptions:
        """The queue's defaults: set through the API, over the config file's."""
        configured = self._defaults.queues.get(name, TaskOptions())
        settings = self._queues.get(name)
        return configured if settings is None else _over(settings.options, configured)

    def put(self, settings: QueueSettings) -> None:
        self._queues[settings.name] = settings

    def learn(self, names: set[str], now: int) -> None:
        """Queues a submission just created implicitly (no limits)."""
        for name in names:
            self._queues.setdefault(name, QueueSettings(name, created_at=now, updated_at=now))

    def drop(self, name: str) -> None:
        self._queues.pop(name, None)

    def all(self) -> list[QueueSettings]:
        return sorted(self._queues.values(), key=lambda q: q.name)

    async def load(self) -> None:
        async with self._db.reader.connect() as conn:
            loaded = await store.list_queues(conn, limit=1_000_000)
        self._queues = {q.name: q for q in loaded}


@lru_cache(maxsize=256)
def _over(options: TaskOptions, base: TaskOptions) -> TaskOptions:
    # Asked once per submitted task; the answer changes only when settings do.
    return options.over(base)
