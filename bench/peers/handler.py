"""The one handler every system in the comparison runs, and how its completions are counted.

Each task carries `(tag, seq)`: the phase it belongs to and its number in that phase. The
handler's only work is one Redis round trip, `RPUSH <prefix>:<tag> "<seq> <time> <pid>"`,
the wall-clock time the handler started; so every system pays the same handler cost and
start times are taken the same way, by the same clock, whatever the queue.

Completions are counted in memory (no I/O on the task's path): the count and the latest
end time per tag, written to `<done dir>/<pid>.json` by a background thread every 50 ms
when they changed. The harness sums the files to know when a phase is over. A thread per
process, started on the first task in that process, so forked pool children (huey's
process workers, Celery's prefork pool, dramatiq's processes) each get their own.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

#: Environment the harness gives every worker and client process.
REDIS_URL = os.environ.get("PEERS_REDIS_URL", "redis://127.0.0.1:6379/0")
PREFIX = os.environ.get("PEERS_PREFIX", "pbtest")
DONE_DIR = os.environ.get("PEERS_DONE_DIR", "")

_FLUSH_S = 0.05


def stamp_value(seq: int) -> str:
    return f"{seq} {time.time():.6f} {os.getpid()}"


def stamp_key(tag: str) -> str:
    return f"{PREFIX}:stamps:{tag}"


class _Done:
    """Per-process completion counts, flushed to a file by a daemon thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid = 0
        self._counts: dict[str, list[float]] = {}
        self._version = 0

    def record(self, tag: str) -> None:
        now = time.time()
        with self._lock:
            if self._pid != os.getpid():  # first task in this process (or a forked child)
                self._pid = os.getpid()
                self._counts = {}
                threading.Thread(target=self._flush_forever, daemon=True).start()
            entry = self._counts.setdefault(tag, [0, 0.0])
            entry[0] += 1
            entry[1] = max(entry[1], now)
            self._version += 1

    def _flush_forever(self) -> None:
        if not DONE_DIR:
            return
        path = Path(DONE_DIR) / f"{os.getpid()}.json"
        written = -1
        while True:
            with self._lock:
                version, snapshot = self._version, json.dumps(self._counts)
            if version != written:
                tmp = path.with_suffix(".tmp")
                tmp.write_text(snapshot)
                tmp.replace(path)
                written = version
            time.sleep(_FLUSH_S)


_done = _Done()


def record_done(tag: str) -> None:
    _done.record(tag)


_sync_client: Any = None


def stamp_sync(tag: str, seq: int) -> None:
    """The handler body for thread- and process-based workers (huey, dramatiq, Celery)."""
    global _sync_client
    if _sync_client is None:
        import redis

        _sync_client = redis.Redis.from_url(REDIS_URL)
    _sync_client.rpush(stamp_key(tag), stamp_value(seq))
    record_done(tag)


_async_clients: dict[int, Any] = {}

#: Connections per asyncio worker process: like dramatiq's 8 threads. Unbounded, a pool opens
#: one connection per concurrent handler (512 at concurrency 256), and the connects would be
#: counted as the queue's CPU.
ASYNC_CONNECTIONS = 8


async def stamp_async(tag: str, seq: int) -> None:
    """The handler body for asyncio workers (Taskyard, procrastinate)."""
    client = _async_clients.get(os.getpid())
    if client is None:
        import redis.asyncio

        pool = redis.asyncio.BlockingConnectionPool.from_url(
            REDIS_URL, max_connections=ASYNC_CONNECTIONS, timeout=None
        )
        client = _async_clients[os.getpid()] = redis.asyncio.Redis(connection_pool=pool)
    await client.rpush(stamp_key(tag), stamp_value(seq))
    record_done(tag)
