"""The task state machine allows exactly the documented moves."""

from __future__ import annotations

import itertools

import pytest

from broker.core.task_state import (
    TERMINAL,
    InvalidTransition,
    TaskState,
    can_move,
    check_move,
    sources_of,
)
from taskyard.v1 import task_pb2

S = TaskState

LEGAL = {
    (S.SCHEDULED, S.PENDING), (S.SCHEDULED, S.CANCELLED), (S.SCHEDULED, S.EXPIRED),
    (S.RETRYING, S.PENDING), (S.RETRYING, S.CANCELLED), (S.RETRYING, S.EXPIRED),
    (S.PENDING, S.RUNNING), (S.PENDING, S.CANCELLED), (S.PENDING, S.EXPIRED),
    (S.RUNNING, S.SUCCEEDED), (S.RUNNING, S.FAILED), (S.RUNNING, S.DEAD),
    (S.RUNNING, S.CANCELLED), (S.RUNNING, S.RETRYING), (S.RUNNING, S.PENDING),
    # Only an operator's retry brings a finished task back, and never a success.
    (S.FAILED, S.PENDING), (S.DEAD, S.PENDING), (S.CANCELLED, S.PENDING),
    (S.EXPIRED, S.PENDING),
    # A workflow node waits BLOCKED for its parents; its rule releases or skips it.
    (S.BLOCKED, S.PENDING), (S.BLOCKED, S.SCHEDULED), (S.BLOCKED, S.SKIPPED),
    (S.BLOCKED, S.CANCELLED),
    # RetryWorkflow puts failed, cancelled and skipped nodes back to wait.
    (S.FAILED, S.BLOCKED), (S.DEAD, S.BLOCKED), (S.CANCELLED, S.BLOCKED),
    (S.EXPIRED, S.BLOCKED), (S.SKIPPED, S.BLOCKED),
}  # fmt: skip


@pytest.mark.parametrize("source,target", list(itertools.product(S, S)))
def test_only_listed_transitions_are_legal(source: TaskState, target: TaskState) -> None:
    assert can_move(source, target) == ((source, target) in LEGAL)
    if (source, target) not in LEGAL:
        with pytest.raises(InvalidTransition):
            check_move(source, target)


def test_a_succeeded_task_never_moves_again() -> None:
    assert not any(can_move(S.SUCCEEDED, target) for target in S)


def test_a_task_is_leased_only_from_pending() -> None:
    assert sources_of(S.RUNNING) == {S.PENDING}


def test_terminal_states_are_the_finished_ones() -> None:
    assert {S.SUCCEEDED, S.FAILED, S.CANCELLED, S.DEAD, S.EXPIRED, S.SKIPPED} == TERMINAL
    assert all(s.is_terminal for s in TERMINAL)
    assert not any(s.is_terminal for s in set(S) - TERMINAL)


def test_state_numbers_match_the_protocol() -> None:
    for state in S:
        assert task_pb2.TaskState.Value(f"TASK_STATE_{state.name}") == state.value
    assert len(task_pb2.TaskState.keys()) == len(S) + 1  # plus UNSPECIFIED
