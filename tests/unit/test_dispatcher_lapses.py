"""A woken worker is not handed its own lapsed task as a new attempt.

The end-to-end tests (tests/e2e/test_stalled_workers.py, the lease-expiry conformance
tests) freeze a real worker; these pin the dispatcher's rule itself: a session's
lapsed tasks stay out of its claims until it reports them or has had its window.
"""

from __future__ import annotations

import asyncio

from broker.core.models import Claimed, LeaseRef
from broker.engine.dispatcher import Dispatcher, StopReason


class _Session:
    key = "s1"
    worker_id = "w1"
    identity: str | None = None
    types: tuple[str, ...] = ("echo",)
    queues: tuple[str, ...] = ("default",)

    @property
    def open(self) -> bool:
        return True

    def held_leases(self) -> list[LeaseRef]:
        return []

    def deliver(self, claimed: list[Claimed]) -> int:
        return 0

    def stop_lease(self, ref: LeaseRef, reason: StopReason) -> None:
        return None

    def room(self) -> int:
        return 1 << 20


def _skipped(d: Dispatcher, session: _Session) -> set[str]:
    d.grant(session, 10)
    d.mark_ready(["default"])
    plans = d.plan()
    d.abandon(plans)
    assert plans, "the session should be worth a claim"
    return set(plans[0].slot.skipped())


def _lapsed(window_s: float) -> tuple[Dispatcher, _Session]:
    d = Dispatcher(wake=lambda: None, report_window_s=window_s)
    session = _Session()
    d.attach(session)
    d.adopt(session, [LeaseRef("t1", 7)])
    d.lapse([LeaseRef("t1", 7)])
    return d, session


async def test_a_stalled_session_is_worth_no_claim_until_it_shows_life() -> None:
    d, session = _lapsed(60)
    d.grant(session, 10)
    d.mark_ready(["default"])
    assert d.plan() == []
    d.alive(session)
    assert "t1" in _skipped(d, session)


async def test_its_lapsed_task_comes_back_to_it_once_it_reported_the_task() -> None:
    d, session = _lapsed(60)
    d.alive(session)
    d.reported(session, ["t1"])
    assert "t1" not in _skipped(d, session)


async def test_a_report_of_another_task_keeps_the_lapsed_one_skipped() -> None:
    d, session = _lapsed(60)
    d.alive(session)
    d.reported(session, ["t2"])
    assert "t1" in _skipped(d, session)


async def test_a_worker_that_never_reports_it_gets_it_back_after_its_window() -> None:
    d, session = _lapsed(0)
    d.alive(session)
    assert "t1" in _skipped(d, session)
    forgotten = asyncio.Event()
    asyncio.get_running_loop().call_later(0.01, forgotten.set)  # after the window (0 s)
    await forgotten.wait()
    assert "t1" not in _skipped(d, session)


async def test_the_window_does_not_run_while_the_session_is_silent_again() -> None:
    d, session = _lapsed(0)
    d.alive(session)
    d.lapse([LeaseRef("t1", 7)])  # silent again before the window ended
    passed = asyncio.Event()
    asyncio.get_running_loop().call_later(0.01, passed.set)
    await passed.wait()
    d.alive(session)
    assert "t1" in _skipped(d, session)
