"""Why nothing will run a waiting task: no connected worker serves it, or its queue is paused.

Read from the broker's worker registry (ListWorkers) and the queue's settings.
Both are operator calls: a submitter whose token may not make them simply
gets no hint, never an error.
"""

from __future__ import annotations

from collections.abc import Iterable

from worker_sdk import SyncClient, Task, TaskState, TaskyardError, WorkerInfo

WAITING = frozenset({TaskState.SCHEDULED, TaskState.PENDING, TaskState.RETRYING})


def serves(worker: WorkerInfo, queue: str, type_: str) -> bool:
    return not worker.draining and queue in worker.queues and type_ in worker.task_types


def unserved(queue: str, type_: str, workers: Iterable[WorkerInfo]) -> str | None:
    """A sentence when no worker in `workers` takes `type_` tasks from `queue`."""
    sessions = list(workers)
    if any(serves(w, queue, type_) for w in sessions):
        return None
    takers = [w for w in sessions if queue in w.queues and not w.draining]
    if not takers:
        return (
            f"no connected worker takes tasks from queue {queue!r}; it waits until one does "
            f"(start one with `taskyard worker MODULE:ATTR -Q {queue}`; see `taskyard workers`)"
        )
    types = sorted({t for w in takers for t in w.task_types})
    return (
        f"no connected worker handles type {type_!r}: the {len(takers)} worker(s) of queue "
        f"{queue!r} handle {', '.join(types)}; it waits until one that does connects"
    )


def why_idle(client: SyncClient, task: Task) -> str | None:
    """Why `task` will not start, if it is waiting and nothing will run it; else None."""
    if task.state not in WAITING:
        return None
    try:
        queue = client.get_queue(task.queue)
        if queue.paused:
            return f"queue {task.queue!r} is paused; `taskyard queue resume {task.queue}`"
    except TaskyardError:
        pass  # no settings row, or not allowed to read them: nothing to say
    try:
        return unserved(task.queue, task.type, client.workers(task.queue))
    except TaskyardError:
        return None
