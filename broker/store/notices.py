"""PostgreSQL NOTIFY/LISTEN: the channels replicas talk on, sending and hearing.

A notice sent with `notify` is delivered when the surrounding transaction
commits, so a replica is never woken for a row it cannot yet see.
`engine/notices.py` decides what to send; `loops/listener.py` decides what a
notice means, over the connection `listen` keeps.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping, Sequence

import asyncpg
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection

READY = "taskyard_ready"
CANCEL = "taskyard_cancel"
DRAIN = "taskyard_drain"
EVENTS = "taskyard_events"  # the event journal's relay (engine/event_relay.py)
MAX_PAYLOAD = 7000  # PostgreSQL caps a payload at 8000 bytes
PING_S = 10.0
# What `listen` raises when the connection cannot be made or is lost.
CONNECTION_LOST = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)

_NOTIFY = sa.text("SELECT pg_notify(:channel, :payload)")
_NOTIFY_MANY = sa.text(
    "SELECT count(pg_notify(m.c, m.p)) FROM unnest(CAST(:channels AS text[]), "
    "CAST(:payloads AS text[])) WITH ORDINALITY AS m(c, p, i)"
)


async def notify(conn: AsyncConnection, messages: Sequence[tuple[str, str]]) -> None:
    """Send (channel, payload) notices with the current transaction, in order."""
    if len(messages) == 1:
        channel, payload = messages[0]
        await conn.execute(_NOTIFY, {"channel": channel, "payload": payload})
    elif messages:
        # One round trip for many (an event relay may need several payloads).
        channels, payloads = [c for c, _ in messages], [p for _, p in messages]
        await conn.execute(_NOTIFY_MANY, {"channels": channels, "payloads": payloads})


async def listen(
    url: str,
    handlers: Mapping[str, Callable[[str], None]],
    *,
    connected: Callable[[], None],
    ping_s: float = PING_S,
) -> None:
    """Hear the channels on a connection of its own (outside the pool) until it drops.

    `connected` runs once every channel is heard. Returns when the server
    closes the connection; raises one of CONNECTION_LOST when connecting or a
    ping fails.
    """
    conn = await asyncpg.connect(asyncpg_dsn(url), timeout=10)
    closed = asyncio.Event()
    conn.add_termination_listener(lambda _conn: closed.set())
    try:
        for channel, handle in handlers.items():
            await conn.add_listener(channel, _on_notice(handle))
        connected()
        while not closed.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(closed.wait(), ping_s)
            if not closed.is_set():
                await conn.execute("SELECT 1")
    finally:
        with contextlib.suppress(Exception):
            await conn.close(timeout=2)


def asyncpg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _on_notice(handle: Callable[[str], None]) -> Callable[[object, int, str, object], None]:
    def on_notice(_conn: object, _pid: int, _channel: str, payload: object) -> None:
        handle(str(payload))

    return on_notice
