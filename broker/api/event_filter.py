"""Which journal events one WatchEvents subscriber gets: its filters and its role's limits.

Built once per subscription from the request and the caller's grant; `matches`
runs for every event the subscriber reads, so it is a handful of comparisons.
Events recorded without owner or labels (most are) have them looked up in
the database first, and only for subscribers that need them (`needs_facts`):
a submitter, or a labels filter.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

from broker.config import Limits
from broker.core import validation
from broker.core.task_state import TaskState
from broker.engine.event_record import Event, Kind
from broker.errors import InvalidArgument
from broker.security import access
from broker.security.roles import Role
from broker.store.workers import SessionRow
from taskyard.v1 import event_service_pb2

_TASK_KINDS = (Kind.TASK_STATE, Kind.TASK_PROGRESS)
_RUNNING = int(TaskState.RUNNING)
_KIND_OF = {
    event_service_pb2.EVENT_KIND_TASK_STATE: Kind.TASK_STATE,
    event_service_pb2.EVENT_KIND_TASK_PROGRESS: Kind.TASK_PROGRESS,
    event_service_pb2.EVENT_KIND_SCHEDULE_FIRE: Kind.SCHEDULE_FIRE,
    event_service_pb2.EVENT_KIND_WORKER: Kind.WORKER,
}


@dataclass(frozen=True, slots=True)
class EventFilter:
    kinds: frozenset[Kind] | None = None
    queues: frozenset[str] | None = None
    types: frozenset[str] | None = None
    states: frozenset[int] | None = None
    labels: Mapping[str, str] | None = None
    owner: str | None = None  # set: only this owner's tasks (a submitter)
    task_events_only: bool = False  # submitters see no schedule or worker events
    hide_schedules: bool = False  # identities limited to some queues

    @property
    def needs_facts(self) -> bool:
        return self.owner is not None or self.labels is not None

    @property
    def everything(self) -> bool:
        """No filter and no limit: every event matches."""
        return self == _EVERYTHING

    def matches(self, ev: Event) -> bool:
        kind = ev.kind
        if kind is Kind.GAP:
            return True
        if self.kinds is not None and kind not in self.kinds:
            return False
        if kind in _TASK_KINDS:
            return self._task(ev)
        if self.task_events_only or self.states is not None or self.labels is not None:
            return False
        if kind is Kind.SCHEDULE_FIRE:
            if self.hide_schedules:
                return False
            return _one_of(self.queues, ev.queue) and _one_of(self.types, ev.type)
        row = ev.detail
        if isinstance(row, SessionRow):
            return _any_of(self.queues, row.queues) and _any_of(self.types, row.task_types)
        return False

    def _task(self, ev: Event) -> bool:
        if not (_one_of(self.queues, ev.queue) and _one_of(self.types, ev.type)):
            return False
        if self.states is not None:
            state = ev.state if ev.kind is Kind.TASK_STATE else _RUNNING
            if state not in self.states:
                return False
        if self.owner is None and self.labels is None:
            return True
        facts = ev.facts
        if facts is None:
            return False  # not found: purged, or never visible to this caller
        if self.owner is not None and facts[0] != self.owner:
            return False
        if self.labels:
            have = _labels(facts[1])
            return all(have.get(k) == v for k, v in self.labels.items())
        return True


def _one_of(allowed: frozenset[str] | None, value: str | None) -> bool:
    return allowed is None or value in allowed


def _any_of(allowed: frozenset[str] | None, values: Sequence[str]) -> bool:
    return allowed is None or any(v in allowed for v in values)


@lru_cache(maxsize=4096)
def _labels(text: str | None) -> dict[str, str]:
    if not text:
        return {}
    value = json.loads(text)
    return value if isinstance(value, dict) else {}


def from_request(request: event_service_pb2.WatchEventsRequest, limits: Limits) -> EventFilter:
    """The request's filters, validated, with the caller's role limits on top."""
    kinds: set[Kind] = set()
    for value in request.kinds:
        if value not in _KIND_OF:
            raise InvalidArgument(f"kinds holds {value}, not an event kind", reason="INVALID_KIND")
        kinds.add(_KIND_OF[value])
    states: set[int] = set()
    for state in request.states:
        if state not in TaskState._value2member_map_:
            raise InvalidArgument(f"states holds {state}, not a task state", reason="INVALID_STATE")
        states.add(int(state))
    validation.labels(dict(request.labels), limits)
    for queue in request.queues:
        validation.name("queues[]", queue, limits, reason="INVALID_QUEUE")
    for type_ in request.types:
        validation.name("types[]", type_, limits, reason="INVALID_ARGUMENT")
    grant = access.current()
    principal = grant.principal if grant is not None else None
    limited = (
        principal is not None and principal.queues is not None and Role.ADMIN not in principal.roles
    )
    own = grant is not None and grant.own_only
    return EventFilter(
        kinds=frozenset(kinds) or None,
        queues=frozenset(request.queues) or None,
        types=frozenset(request.types) or None,
        states=frozenset(states) or None,
        labels=dict(request.labels) or None,
        owner=principal.name if own and principal is not None else None,
        task_events_only=own,
        hide_schedules=limited,
    )


_EVERYTHING = EventFilter()
