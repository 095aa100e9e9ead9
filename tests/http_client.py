"""A small Connect-protocol client for tests: unary JSON calls and server streams over HTTP/1.1.

Written on h11 (a dependency of uvicorn) over asyncio streams, so that a test
can read a stream message by message and drop the connection whenever it
likes. Streams parse the Connect envelopes (1 flag byte, 4-byte length) and
require the end-of-stream envelope, as a real client must.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import h11

END_STREAM = 0x02


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: Any  # parsed JSON, or the text when it is not JSON

    @property
    def reason(self) -> str | None:
        """The ErrorInfo reason of an error body (decoded from its base64 protobuf)."""
        return error_reason(self.body)


def error_reason(error: Any) -> str | None:
    import base64

    from google.rpc import error_details_pb2

    for detail in (error or {}).get("details", []):
        if detail.get("type") == "google.rpc.ErrorInfo":
            raw = base64.b64decode(detail["value"] + "=" * (-len(detail["value"]) % 4))
            return str(error_details_pb2.ErrorInfo.FromString(raw).reason)
    return None


class Connection:
    def __init__(self, host: str, port: int, tls: ssl.SSLContext | None = None) -> None:
        self.host, self.port, self._tls = host, port, tls
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._h11 = h11.Connection(h11.CLIENT)

    async def open(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(
            self.host, self.port, ssl=self._tls
        )

    def close(self) -> None:
        if self._writer is not None:
            self._writer.transport.abort()

    async def send(self, path: str, body: bytes, headers: dict[str, str]) -> None:
        assert self._writer is not None
        all_headers = [("host", f"{self.host}:{self.port}"), ("content-length", str(len(body)))]
        all_headers += list(headers.items())
        request = h11.Request(method="POST", target=path, headers=all_headers)
        self._writer.write(self._h11.send(request) + self._h11.send(h11.Data(data=body)))
        self._writer.write(self._h11.send(h11.EndOfMessage()))
        await self._writer.drain()

    async def next_event(self) -> Any:
        assert self._reader is not None
        while True:
            event = self._h11.next_event()
            if event is h11.NEED_DATA:
                data = await self._reader.read(65536)
                self._h11.receive_data(data)
                continue
            return event


@dataclass
class Http:
    """The broker's HTTP API at 127.0.0.1:`port`, optionally with a bearer token."""

    port: int
    token: str | None = None
    host: str = "127.0.0.1"
    extra_headers: dict[str, str] = field(default_factory=dict)
    tls: ssl.SSLContext | None = None  # HTTPS with this context

    def _headers(self, content_type: str) -> dict[str, str]:
        headers = {"content-type": content_type, **self.extra_headers}
        if self.token:
            headers["authorization"] = f"Bearer {self.token}"
        return headers

    async def call(self, method: str, body: dict[str, Any] | None = None) -> Reply:
        """A unary call with a JSON body, e.g. call("TaskService/GetTask", {"id": ...})."""
        conn = Connection(self.host, self.port, self.tls)
        await conn.open()
        try:
            data = json.dumps(body or {}).encode()
            await conn.send(_path(method), data, self._headers("application/json"))
            response = await conn.next_event()
            chunks = []
            while isinstance(event := await conn.next_event(), h11.Data):
                chunks.append(bytes(event.data))
        finally:
            conn.close()
        text = b"".join(chunks).decode()
        headers = {k.decode(): v.decode() for k, v in response.headers}
        try:
            parsed: Any = json.loads(text)
        except ValueError:
            parsed = text
        return Reply(response.status_code, headers, parsed)

    @contextlib.asynccontextmanager
    async def stream(
        self, method: str, body: dict[str, Any] | None = None
    ) -> AsyncIterator[Stream]:
        """A server stream; leaving the block drops the connection."""
        conn = Connection(self.host, self.port, self.tls)
        await conn.open()
        try:
            data = json.dumps(body or {}).encode()
            envelope = struct.pack(">BI", 0, len(data)) + data
            await conn.send(_path(method), envelope, self._headers("application/connect+json"))
            response = await conn.next_event()
            yield Stream(conn, response.status_code)
        finally:
            conn.close()


class Stream:
    def __init__(self, conn: Connection, status: int) -> None:
        self.status = status
        self._conn = conn
        self._buffer = b""
        self.end: dict[str, Any] | None = None  # the end-of-stream message, once read

    async def read(self) -> dict[str, Any] | None:
        """The next message, or None after the end-of-stream envelope (see `end`)."""
        while True:
            if len(self._buffer) >= 5:
                flags, size = struct.unpack(">BI", self._buffer[:5])
                if len(self._buffer) >= 5 + size:
                    payload = self._buffer[5 : 5 + size]
                    self._buffer = self._buffer[5 + size :]
                    message = json.loads(payload or b"{}")
                    if flags & END_STREAM:
                        self.end = message
                        return None
                    return dict(message)
            event = await self._conn.next_event()
            if isinstance(event, h11.Data):
                self._buffer += bytes(event.data)
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                raise AssertionError("the stream ended without its end-of-stream envelope")

    async def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        while (message := await self.read()) is not None:
            yield message


def _path(method: str) -> str:
    return method if method.startswith("/") else f"/taskyard.v1.{method}"
