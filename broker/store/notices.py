"""PostgreSQL NOTIFY: the channels replicas talk on, and sending inside a transaction.

A notice sent here is delivered when the surrounding transaction commits, so
a replica is never woken for a row it cannot yet see. `engine/notices.py`
decides what to send; `loops/listener.py` hears it.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

READY = "taskyard_ready"
CANCEL = "taskyard_cancel"
DRAIN = "taskyard_drain"
MAX_PAYLOAD = 7000  # PostgreSQL caps a payload at 8000 bytes

_NOTIFY = sa.text("SELECT pg_notify(:channel, :payload)")


async def notify(conn: AsyncConnection, messages: Sequence[tuple[str, str]]) -> None:
    """Send (channel, payload) notices with the current transaction."""
    for channel, payload in messages:
        await conn.execute(_NOTIFY, {"channel": channel, "payload": payload})
