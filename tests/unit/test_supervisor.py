"""The supervisor with real asyncio tasks: a crash is logged, then restarted or fatal."""

from __future__ import annotations

import asyncio
import logging

import pytest

from broker.loops.supervisor import Backoff, LoopFailed, Policy, Supervisor

FAST = Backoff(initial_s=0.01, max_s=0.02)


async def forever() -> None:
    await asyncio.Event().wait()


def crashes(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == f"loop {name} crashed; restarting it"]


async def test_a_crashed_loop_is_logged_with_its_traceback_and_started_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runs = 0
    third_run = asyncio.Event()

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs < 3:
            raise RuntimeError(f"boom {runs}")
        third_run.set()
        await forever()

    supervisor = Supervisor(backoff=FAST)
    supervisor.start("flaky", flaky, Policy.RESTART)
    await asyncio.wait_for(third_run.wait(), 30)
    logged = crashes(caplog, "flaky")
    assert [str(r.exc_info[1]) for r in logged if r.exc_info] == ["boom 1", "boom 2"]
    assert supervisor.restarts == {"flaky": 2}
    await supervisor.cancel_restartable()
    await supervisor.join()  # no STOP task: nothing failed


async def test_a_loop_that_returns_is_restarted_too(caplog: pytest.LogCaptureFixture) -> None:
    second_run = asyncio.Event()
    runs = 0

    async def returns_once() -> None:
        nonlocal runs
        runs += 1
        if runs == 2:
            second_run.set()
            await forever()

    supervisor = Supervisor(backoff=FAST)
    supervisor.start("quitter", returns_once, Policy.RESTART)
    await asyncio.wait_for(second_run.wait(), 30)
    assert any(r.getMessage() == "loop quitter returned; restarting it" for r in caplog.records)
    await supervisor.cancel_restartable()


async def test_a_crash_of_a_stop_task_stops_the_broker_and_join_raises(
    caplog: pytest.LogCaptureFixture,
) -> None:
    other_cancelled = asyncio.Event()

    async def committer() -> None:
        raise OSError("disk gone")

    async def other() -> None:
        try:
            await forever()
        finally:
            other_cancelled.set()

    supervisor = Supervisor(backoff=FAST)
    supervisor.start("committer", committer, Policy.STOP)
    supervisor.start("other", other, Policy.RESTART)
    await asyncio.wait_for(supervisor.wait(), 30)  # returns without any signal
    assert supervisor.failed == "committer"
    fatal = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert fatal and fatal[0].exc_info is not None
    assert str(fatal[0].exc_info[1]) == "disk gone"
    await supervisor.cancel_restartable()
    assert other_cancelled.is_set()
    with pytest.raises(LoopFailed, match="committer"):
        await supervisor.join()


async def test_a_stop_task_that_ends_when_asked_is_no_failure() -> None:
    finish = asyncio.Event()

    async def committer() -> None:
        await finish.wait()

    supervisor = Supervisor()
    supervisor.start("committer", committer, Policy.STOP)
    supervisor.request_stop()  # SIGTERM
    await supervisor.wait()
    finish.set()  # committer.stop()
    await supervisor.join()
    assert supervisor.failed is None


async def test_a_stop_task_that_returns_unasked_stops_the_broker() -> None:
    async def committer() -> None:
        return None

    supervisor = Supervisor()
    supervisor.start("committer", committer, Policy.STOP)
    await asyncio.wait_for(supervisor.wait(), 30)
    with pytest.raises(LoopFailed):
        await supervisor.join()


async def test_two_tasks_cannot_share_a_name() -> None:
    supervisor = Supervisor()
    supervisor.start("ticker", forever, Policy.RESTART)
    with pytest.raises(ValueError, match="ticker"):
        supervisor.start("ticker", forever, Policy.STOP)
    await supervisor.cancel_restartable()


@pytest.mark.parametrize(
    ("failures", "base_s"),
    [
        (1, 0.5),  # the first restart waits initial_s
        (2, 1.0),  # then doubles: 0.5 * 2
        (4, 4.0),  # 0.5 * 2**3
        (7, 30.0),  # 0.5 * 2**6 = 32, capped at max_s
        (50, 30.0),  # far past the cap, still max_s
    ],
)
def test_the_backoff_doubles_to_its_cap_with_a_quarter_of_jitter(
    failures: int, base_s: float
) -> None:
    delays = [Backoff().delay(failures) for _ in range(200)]
    assert all(0.75 * base_s <= d <= 1.25 * base_s for d in delays)
    assert len(set(delays)) > 1  # jittered, so replicas do not retry in step
