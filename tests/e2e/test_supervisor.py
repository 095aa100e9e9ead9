"""The supervisor in a real broker: a loop that crashes is logged and restarted, and recovers.

The crash is a real one, with no hook in the broker: the test writes a
schedule row the ticker cannot read (its spec is not JSON), as a bad
migration or a hand edit could. The ticker crashes on every fire until the
row is repaired; meanwhile the broker keeps serving, and afterwards the
schedule fires again without a restart.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from broker.store.database import normalize_url
from broker.store.schema import schedule
from tests.e2e.test_schedules import eventually
from tests.helpers import Broker
from worker_sdk import Client, TaskSpec

CRASH = r"ERROR taskyard\.supervisor: loop ticker crashed; restarting it"


async def set_spec(db_url: str, name: str, spec: str) -> str:
    """Overwrite a schedule's stored spec; return what it was (beside the running broker)."""
    engine = create_async_engine(normalize_url(db_url))
    try:
        async with engine.begin() as conn:
            where = schedule.c.name == name
            before = await conn.scalar(sa.select(schedule.c.spec).where(where))
            await conn.execute(sa.update(schedule).where(where).values(spec=spec))
    finally:
        await engine.dispose()
    assert isinstance(before, str)
    return before


async def test_a_crashing_loop_is_logged_and_restarted_while_the_broker_serves(
    broker: Broker, client: Client, db_url: str
) -> None:
    assert broker.process is not None
    log = broker.process
    await client.create_schedule("tick", TaskSpec("echo"), cron="* * * * * *", overlap="allow_all")
    mark = log.line_count
    good = await set_spec(db_url, "tick", "{not json")

    # Logged with the loop's name and its traceback, then run again (and crashing again).
    await log.wait_for_line(CRASH, after=mark, timeout=60)
    await log.wait_for_line(r"^Traceback \(most recent call last\)", after=mark, timeout=60)
    await log.wait_for_line(r"JSONDecodeError", after=mark, timeout=60)
    await log.wait_for_line(r"loop ticker restarts in", after=mark, timeout=60)
    again = log.line_count
    await log.wait_for_line(CRASH, after=again, timeout=60)

    # The other parts are untouched: submissions are still accepted and stored.
    task = await client.submit("echo", {"while": "ticker down"})
    assert (await client.get(task.id)).id == task.id

    await set_spec(db_url, "tick", good)
    started = (await client.get_schedule("tick")).started_count
    await eventually(
        lambda: client.get_schedule("tick"), lambda s: s.started_count > started, timeout=60
    )
    assert log.proc.returncode is None  # never stopped
