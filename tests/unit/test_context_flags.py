"""A task's cancel and soft-timeout flags: made cheaply, still safe to wait on from a thread."""

from __future__ import annotations

import threading

from worker_sdk._context import _Flag


def test_a_flag_set_before_the_wait_returns_at_once() -> None:
    flag = _Flag()
    flag.set()
    assert flag.is_set() and flag.wait(0)


def test_an_unset_flag_times_out_false() -> None:
    assert _Flag().wait(0.01) is False


def test_a_thread_waiting_is_woken_by_a_set_from_another_thread() -> None:
    flag = _Flag()
    waiting, woke = threading.Event(), []

    def waiter() -> None:
        waiting.set()
        woke.append(flag.wait(30))

    thread = threading.Thread(target=waiter)
    thread.start()
    waiting.wait()
    flag.set()
    thread.join(30)
    assert woke == [True]


def test_a_set_racing_a_first_wait_is_never_missed() -> None:
    """The set and the wait that makes the Event run at the same moment, many times over:
    every waiter returns True long before its timeout."""
    flags = [_Flag() for _ in range(2000)]
    go = threading.Barrier(2)
    missed: list[int] = []

    def waiter() -> None:
        go.wait()
        missed.extend(i for i, flag in enumerate(flags) if not flag.wait(10))

    def setter() -> None:
        go.wait()
        for flag in flags:
            flag.set()

    threads = [threading.Thread(target=waiter), threading.Thread(target=setter)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert missed == []
