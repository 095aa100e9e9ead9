"""Events on the wire between replicas: compact JSON in NOTIFY payloads.

One transaction's events go out as one or more payloads of at most
`MAX_PAYLOAD` bytes, each numbered (per sending replica, in commit order), so
that a receiver notices a payload that never arrived. Owner and labels are
left out (they can be large, and receivers look them up when a subscriber
needs them); everything a subscriber filters on or is shown is kept.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from broker.core.models import Progress
from broker.core.schedules import FireRecord, FireResult
from broker.engine.event_record import Event, Kind
from broker.store.notices import MAX_PAYLOAD
from broker.store.workers import SessionRow

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


@dataclass(frozen=True, slots=True)
class Message:
    replica: str
    number: int
    at: int
    events: list[Event]


def encode(replica: str, first_number: int, at: int, events: Sequence[Event]) -> list[str]:
    """Payloads numbered from `first_number`, each under MAX_PAYLOAD bytes."""
    items = [_dumps(_item(e)) for e in events]
    payloads: list[str] = []
    batch: list[str] = []
    size = 0
    for item in items:
        if batch and size + len(item.encode()) + 80 > MAX_PAYLOAD:
            payloads.append(_frame(replica, first_number + len(payloads), at, batch))
            batch, size = [], 0
        batch.append(item)
        size += len(item.encode()) + 1
    if batch:
        payloads.append(_frame(replica, first_number + len(payloads), at, batch))
    return payloads


def _frame(replica: str, number: int, at: int, items: list[str]) -> str:
    head = _dumps({"r": replica, "n": number, "t": at})
    return head[:-1] + ',"e":[' + ",".join(items) + "]}"


def _item(e: Event) -> list[Any]:
    d = e.detail
    base: list[Any] = [int(e.kind), e.key, e.queue, e.type, e.state, e.previous, e.attempt]
    if isinstance(d, Progress):
        base.append([d.percent, d.message, d.step, d.total_steps, d.at_us])
    elif isinstance(d, FireRecord):
        base.append(
            [d.fire_time, d.manual, int(d.result), d.recorded_at, d.task_id, d.count,
             d.last_missed_at, d.message]
        )  # fmt: skip
    elif isinstance(d, SessionRow):
        base.append(
            [d.worker_id, d.replica_id, d.address, d.sdk, list(d.task_types), list(d.queues),
             d.connected_at, d.seen_at, d.credits, d.in_flight, d.draining]
        )  # fmt: skip
    return base


def decode(payload: str) -> Message | None:
    """The message, or None for a payload that is not one (never raises)."""
    try:
        data = json.loads(payload)
        return Message(
            str(data["r"]), int(data["n"]), int(data["t"]), [_event(i) for i in data["e"]]
        )
    except (ValueError, KeyError, TypeError, IndexError):
        return None


def _event(item: list[Any]) -> Event:
    kind = Kind(item[0])
    detail: Any = None
    if len(item) > 7:
        d = item[7]
        if kind is Kind.TASK_PROGRESS:
            detail = Progress(float(d[0]), str(d[1]), int(d[2]), int(d[3]), int(d[4]))
        elif kind is Kind.SCHEDULE_FIRE:
            detail = FireRecord(
                "", int(d[0]), bool(d[1]), FireResult(d[2]), int(d[3]), d[4], int(d[5]), d[6], d[7]
            )
        elif kind is Kind.WORKER:
            detail = SessionRow(
                item[1], str(d[0]), str(d[1]), str(d[2]), str(d[3]), tuple(d[4]), tuple(d[5]),
                int(d[6]), int(d[7]), int(d[8]), int(d[9]), bool(d[10]),
            )  # fmt: skip
    return Event(
        kind, str(item[1]), item[2], item[3], int(item[4]), int(item[5]), int(item[6]), detail
    )
