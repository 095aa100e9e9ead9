"""The caller of the running call, and the rule that a task belongs to its creator.

The interceptor sets the caller's grant for the duration of each call (a
context variable, so servicers need no extra parameter). Ownership is decided
here and only here: `check_task` for calls naming one task, `owner_filter`
for listings, `owner_of_new_task` for what a creation records.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from broker.errors import PermissionDenied
from broker.ids import is_ulid
from broker.security.roles import Principal
from broker.store.access import task_scope
from broker.store.database import Database
from taskyard.v1 import worker_service_pb2


@dataclass(frozen=True, slots=True)
class Grant:
    principal: Principal
    own_only: bool = False  # it acts on its own tasks only (a submitter)


_CURRENT: ContextVar[Grant | None] = ContextVar("taskyard_grant", default=None)


@contextmanager
def acting_as(grant: Grant) -> Iterator[None]:
    token = _CURRENT.set(grant)
    try:
        yield
    finally:
        _CURRENT.reset(token)


def enter(grant: Grant) -> None:
    """For a call's own task (streams): the grant stays for the rest of the task."""
    _CURRENT.set(grant)


def current() -> Grant | None:
    return _CURRENT.get()


def owner_of_new_task() -> str | None:
    """The identity a task created now belongs to (None without authentication)."""
    grant = _CURRENT.get()
    return grant.principal.owner if grant is not None else None


def owner_filter() -> str | None:
    """For listings: only this owner's tasks, or None for every task."""
    grant = _CURRENT.get()
    return grant.principal.name if grant is not None and grant.own_only else None


async def check_task(
    db: Database, principal: Principal, task_id: str, *, own_only: bool, check_queue: bool
) -> None:
    """Refuse a call on a task that is not the caller's, or not in its queues.

    An unknown task is refused the same way, so that a restricted caller
    cannot probe which ids exist (AIP-211). A malformed id goes on to the
    servicer, which rejects it as INVALID_ARGUMENT: no task can match it.
    """
    if not is_ulid(task_id):
        return
    async with db.reader.connect() as conn:
        scope = await task_scope(conn, task_id)
    if own_only and (scope is None or scope.owner != principal.name):
        raise PermissionDenied(
            f"{principal.describe()} may act only on tasks it created; {task_id} is not one",
            reason="NOT_TASK_OWNER",
        )
    if check_queue and (
        scope is None or principal.queues is None or scope.queue not in principal.queues
    ):
        raise PermissionDenied(
            f"{principal.describe()} may not act on task {task_id}: not in its queues",
            reason="QUEUE_NOT_ALLOWED",
        )


def check_hello(hello: worker_service_pb2.Hello, default_queue: str) -> None:
    """A worker leases only from the queues, and for the types, its identity allows."""
    grant = _CURRENT.get()
    if grant is None:
        return
    principal = grant.principal
    if principal.queues is not None:
        outside = sorted(set(hello.queues or [default_queue]) - principal.queues)
        if outside:
            raise PermissionDenied(
                f"{principal.describe()} may not lease from queues {outside}",
                reason="QUEUE_NOT_ALLOWED",
            )
    if principal.types is not None:
        outside = sorted(set(hello.task_types) - principal.types)
        if outside:
            raise PermissionDenied(
                f"{principal.describe()} may not run task types {outside}",
                reason="TYPE_NOT_ALLOWED",
            )
