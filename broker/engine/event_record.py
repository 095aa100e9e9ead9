"""The events the journal holds: one small mutable object per change, and their kinds.

Kept apart from the journal so that the relay codec (`event_relay.py`) can
build them without importing the journal.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any


class Kind(IntEnum):
    TASK_STATE = 1
    TASK_PROGRESS = 2
    SCHEDULE_FIRE = 3
    WORKER = 4
    GAP = 5


class WorkerChange(IntEnum):
    CONNECTED = 1
    DISCONNECTED = 2
    DRAINING = 3


class GapReason(IntEnum):
    EXPIRED = 1
    SLOW_SUBSCRIBER = 2
    UNKNOWN_STREAM = 3
    REPLICA_LINK = 4


class Event:
    """One change. `key` is the task id, the schedule's name or the worker's session.

    `queue` and `type` are None when the recorder did not know them (a relayed
    progress report of a lease adopted elsewhere); readers look them up.
    `facts` is (owner, labels JSON) when known, for role and label filters.
    `detail` holds what only one kind has: the Progress, the FireRecord, the
    SessionRow, or the gap's reason. `wire` is the reader's cache of the
    event's encodings, filled on first delivery.
    """

    __slots__ = (
        "at",
        "attempt",
        "detail",
        "facts",
        "key",
        "kind",
        "previous",
        "queue",
        "state",
        "type",
        "wire",
    )

    def __init__(
        self,
        kind: Kind,
        key: str,
        queue: str | None,
        type_: str | None,
        state: int = 0,
        previous: int = 0,
        attempt: int = 0,
        detail: Any = None,
        facts: tuple[str | None, str | None] | None = None,
        at: int = 0,
    ) -> None:
        self.kind = kind
        self.key = key
        self.queue = queue
        self.type = type_
        self.state = state
        self.previous = previous
        self.attempt = attempt
        self.detail = detail
        self.facts = facts
        self.at = at
        self.wire: Any = None
