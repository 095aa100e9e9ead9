"""Which queue and task-type names get series of their own in the metrics.

Queue and type names come from whoever submits, so a submitter sending
20,000 made-up names would fill the exporter's series limit (2,000 per
metric in the OpenTelemetry SDK) and push every queue created after that
into its overflow series. So a name is a label of its own only if the
broker knows it independently of submissions: a queue created or changed
through QueueService or named in the --config file, and queues and task
types a worker has declared since the broker started (at most
`dispatcher.MAX_SERVED` of each). Everything else is counted under
`queue="_other"` / `type="_other"` (docs/observability.md).
"""

from __future__ import annotations

from collections.abc import Collection

from broker.engine.dispatcher import Dispatcher
from broker.engine.queue_registry import QueueRegistry

OTHER = "_other"


class KnownNames:
    """Maps a queue or task type to its metrics label."""

    def __init__(
        self, *, dispatcher: Dispatcher, queues: QueueRegistry, configured: Collection[str] = ()
    ) -> None:
        self._dispatcher = dispatcher
        self._queues = queues
        self._configured = frozenset(configured)

    def queue(self, name: str) -> str:
        if name in self._dispatcher.served_queues or name in self._configured:
            return name
        settings = self._queues.get(name)
        return name if settings is not None and settings.explicit else OTHER

    def type(self, name: str) -> str:
        return name if name in self._dispatcher.served_types else OTHER


class AllNames:
    """Every name is its own label (tests and embedders that trust their callers)."""

    def queue(self, name: str) -> str:
        return name

    def type(self, name: str) -> str:
        return name
