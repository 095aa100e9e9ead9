"""How long finished tasks are kept: by how they finished, per queue, and idempotency keys."""

from __future__ import annotations

from dataclasses import dataclass, field

from broker.clock import MICROS
from broker.core.task_state import TaskState

HOUR = 3600 * MICROS
DAY = 24 * HOUR


@dataclass(frozen=True, slots=True)
class Retention:
    """How long finished tasks are kept, by how they finished (µs)."""

    succeeded_us: int = DAY
    failed_us: int = 7 * DAY  # FAILED, DEAD and EXPIRED
    cancelled_us: int = DAY

    def rules(self) -> list[tuple[tuple[TaskState, ...], int]]:
        return [
            ((TaskState.SUCCEEDED,), self.succeeded_us),
            ((TaskState.FAILED, TaskState.DEAD, TaskState.EXPIRED), self.failed_us),
            ((TaskState.CANCELLED,), self.cancelled_us),
        ]


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    default: Retention = field(default_factory=Retention)
    queues: dict[str, Retention] = field(default_factory=dict)
    request_id_us: int = DAY
