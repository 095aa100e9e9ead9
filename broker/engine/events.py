"""In-process notifications for WatchTask and FollowTaskLogs: a task changed state,
reported progress or stored log records.

Only tasks somebody watches cost anything; the hot path pays one dict lookup.
Progress events carry the progress itself, because it reaches watchers before
(or without) a database write.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from broker.core.models import Progress


@dataclass(frozen=True, slots=True)
class TaskEvent:
    task_id: str
    progress: Progress | None = None  # None: the state (or something else) changed
    logs: bool = False  # True: log records were stored (nothing else changed)


class TaskEvents:
    def __init__(self) -> None:
        self._subscribers: dict[str, set[asyncio.Queue[TaskEvent]]] = {}

    def subscribe(self, task_id: str) -> asyncio.Queue[TaskEvent]:
        queue: asyncio.Queue[TaskEvent] = asyncio.Queue()
        self._subscribers.setdefault(task_id, set()).add(queue)
        return queue

    def unsubscribe(self, task_id: str, queue: asyncio.Queue[TaskEvent]) -> None:
        queues = self._subscribers.get(task_id)
        if queues is not None:
            queues.discard(queue)
            if not queues:
                del self._subscribers[task_id]

    def state_changed(self, task_ids: Sequence[str]) -> None:
        if not self._subscribers:
            return
        for task_id in task_ids:
            for queue in self._subscribers.get(task_id, ()):
                queue.put_nowait(TaskEvent(task_id))

    def logged(self, task_ids: Sequence[str]) -> None:
        if not self._subscribers:
            return
        for task_id in task_ids:
            for queue in self._subscribers.get(task_id, ()):
                queue.put_nowait(TaskEvent(task_id, logs=True))

    def progress(self, task_id: str, progress: Progress) -> None:
        for queue in self._subscribers.get(task_id, ()):
            queue.put_nowait(TaskEvent(task_id, progress))

    @property
    def watched(self) -> int:
        return len(self._subscribers)
