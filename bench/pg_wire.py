"""PostgreSQL round trips, counted on the wire between the brokers and the database.

Issue 20's third target asks how many database round trips a task costs: that number,
with the broker's CPU per task, is what tells how replicas would scale on a machine with
more cores than this one. `WireCounter` is a TCP relay the brokers connect through
(their `--db` names the relay's port). It reads the messages clients send and counts:

* round trips: `Sync`, `Flush` and `Query` messages, after each of which the client waits
  for the server's answer (asyncpg prepares a statement with a Flush and runs it with a
  Sync). A pipelined `executemany` (many Bind/Execute, one Sync) is one round trip.
* commits: `Query` messages whose text starts with COMMIT (asyncpg ends a transaction so).

It does not parse what the server sends back; the relay adds a hop to every round trip,
so the scenario using it (`python -m bench --scenario round-trips`) reports counts, not
rates: the rates come from runs without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from dataclasses import dataclass, field

from sqlalchemy.engine import make_url

# The untyped messages a client may open with before its StartupMessage.
_SSL_REQUEST = 80877103
_GSS_REQUEST = 80877104
_CANCEL_REQUEST = 80877102


@dataclass
class Tally:
    round_trips: int = 0
    commits: int = 0


@dataclass
class WireCounter:
    upstream_host: str
    upstream_port: int
    tally: Tally = field(default_factory=Tally)
    _server: asyncio.Server | None = None
    _pumps: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> int:
        """Listen on a free local port; return it."""
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for pump in list(self._pumps):
            pump.cancel()
        for pump in list(self._pumps):
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await pump

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(self.upstream_host, self.upstream_port)
        up = asyncio.create_task(self._client_to_server(client_r, server_w))
        down = asyncio.create_task(_copy(server_r, client_w))
        self._pumps |= {up, down}
        try:
            await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in (up, down):
                pump.cancel()
                self._pumps.discard(pump)
            for writer in (client_w, server_w):
                writer.close()

    async def _client_to_server(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        # Untyped messages (length, then a code) until the StartupMessage; typed after it.
        while True:
            head = await reader.readexactly(8)
            length, code = struct.unpack("!ii", head)
            body = await reader.readexactly(length - 8)
            writer.write(head + body)
            if code not in (_SSL_REQUEST, _GSS_REQUEST, _CANCEL_REQUEST):
                break
            await writer.drain()
        tally = self.tally
        while True:
            head = await reader.readexactly(5)
            kind, length = head[:1], struct.unpack("!i", head[1:])[0]
            body = await reader.readexactly(length - 4)
            if kind in (b"S", b"H"):
                tally.round_trips += 1
            elif kind == b"Q":
                tally.round_trips += 1
                if body[:6].upper() == b"COMMIT":
                    tally.commits += 1
            writer.write(head + body)
            await writer.drain()


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while chunk := await reader.read(65536):
        writer.write(chunk)
        await writer.drain()


def through(url: str, port: int) -> str:
    """`url` with its host and port replaced by the relay's."""
    return make_url(url).set(host="127.0.0.1", port=port).render_as_string(hide_password=False)


def upstream(url: str) -> tuple[str, int]:
    parsed = make_url(url)
    return parsed.host or "127.0.0.1", parsed.port or 5432
