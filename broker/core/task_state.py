"""The task state machine: which states exist and which moves between them are legal.

The store encodes every transition as a compare-and-set on the current state;
the allowed source states it compares against come from this table, so an
illegal move cannot be written by accident. Values equal the protobuf
`TaskState` numbers (a test holds them together).
"""

from __future__ import annotations

from enum import IntEnum


class TaskState(IntEnum):
    SCHEDULED = 1
    PENDING = 2
    RUNNING = 3
    RETRYING = 4
    SUCCEEDED = 5
    FAILED = 6
    CANCELLED = 7
    DEAD = 8
    EXPIRED = 9
    # Workflow nodes (docs/workflows.md): waiting for parents, or never to run.
    BLOCKED = 10
    SKIPPED = 11

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL

    @property
    def label(self) -> str:
        return self.name.lower()


TERMINAL = frozenset(
    {
        TaskState.SUCCEEDED,
        TaskState.FAILED,
        TaskState.CANCELLED,
        TaskState.DEAD,
        TaskState.EXPIRED,
        TaskState.SKIPPED,
    }
)

# States a task may wait in before it runs; cancel and expiry apply to them.
WAITING = frozenset({TaskState.SCHEDULED, TaskState.PENDING, TaskState.RETRYING})

_S = TaskState
_ALLOWED: dict[TaskState, frozenset[TaskState]] = {
    # Delayed tasks and retries become eligible when their time comes.
    _S.SCHEDULED: frozenset({_S.PENDING, _S.CANCELLED, _S.EXPIRED}),
    _S.RETRYING: frozenset({_S.PENDING, _S.CANCELLED, _S.EXPIRED}),
    _S.PENDING: frozenset({_S.RUNNING, _S.CANCELLED, _S.EXPIRED}),
    # A lease ends in a result, a failure (retried, final or exhausted), a
    # cancellation, or is lost and the task waits again.
    _S.RUNNING: frozenset(
        {_S.SUCCEEDED, _S.FAILED, _S.DEAD, _S.CANCELLED, _S.RETRYING, _S.PENDING}
    ),
    # A workflow node waits for its parents (not in WAITING: no promotion or
    # expiry applies to it); its trigger rule releases or skips it.
    _S.BLOCKED: frozenset({_S.PENDING, _S.SCHEDULED, _S.SKIPPED, _S.CANCELLED}),
    # Terminal states only leave through an explicit retry by an operator
    # (RetryTask; RetryWorkflow puts a workflow's nodes back to BLOCKED).
    _S.FAILED: frozenset({_S.PENDING, _S.BLOCKED}),
    _S.DEAD: frozenset({_S.PENDING, _S.BLOCKED}),
    _S.CANCELLED: frozenset({_S.PENDING, _S.BLOCKED}),
    _S.EXPIRED: frozenset({_S.PENDING, _S.BLOCKED}),
    _S.SKIPPED: frozenset({_S.BLOCKED}),
    _S.SUCCEEDED: frozenset(),
}


class InvalidTransition(Exception):
    def __init__(self, source: TaskState, target: TaskState) -> None:
        super().__init__(f"a {source.label} task cannot become {target.label}")
        self.source = source
        self.target = target


def can_move(source: TaskState, target: TaskState) -> bool:
    return target in _ALLOWED[source]


def check_move(source: TaskState, target: TaskState) -> None:
    if not can_move(source, target):
        raise InvalidTransition(source, target)


def sources_of(target: TaskState) -> frozenset[TaskState]:
    """Every state from which `target` may be reached."""
    return frozenset(s for s, targets in _ALLOWED.items() if target in targets)
