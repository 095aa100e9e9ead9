"""Runs the broker's side tasks and decides, per task, what a crash means.

Every long-running part of the broker runs here as a named asyncio task, never
fire-and-forget. A crash is always logged with the task's name and traceback;
then the task's policy applies:

- `RESTART`, for the loops whose work is idempotent and whose state is
  re-read from the database or from memory that outlives them (promoter,
  reaper, retention, ticker, registry, the fallback poll, the queue settings
  refresh, the PostgreSQL listener): the loop starts again after a backoff
  that doubles from `Backoff.initial_s` to `Backoff.max_s` (with jitter, so
  replicas do not retry in step) and resets once a run has lasted
  `Backoff.healthy_s`. A loop that returns is restarted too: these loops are
  meant to run until cancelled. A failing loop costs the broker that duty
  (promotions, sweeps, fires), never the others, and it resumes by itself
  when the cause goes (a database back, a bad row repaired).
- `STOP`, for the committer: its crash (or a return nobody asked for) stops
  the broker, which shuts down in order and exits non-zero. The committer
  holds the only write connection and the futures of every waiting caller;
  restarting it under them would hide lost acknowledgements, and a broker
  that cannot commit serves nothing. Workers reconnect to the restarted
  broker and re-adopt their leases.

`wait()` returns when the broker should stop (a signal, or a `STOP` task that
ended); the composition root then shuts down and calls `cancel_restartable()`
and, once it has asked the `STOP` tasks to finish, `join()`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum

log = logging.getLogger("taskyard.supervisor")


class Policy(Enum):
    RESTART = "restart"  # log, back off, run again
    STOP = "stop"  # log, stop the broker, exit non-zero


@dataclass(frozen=True, slots=True)
class Backoff:
    initial_s: float = 0.5
    max_s: float = 30.0
    healthy_s: float = 60.0  # a run this long resets the backoff

    def delay(self, failures: int) -> float:
        """Seconds before restart number `failures` (1, 2, …), jittered by ±25%."""
        base = min(self.initial_s * 2.0 ** (failures - 1), self.max_s)
        return base * random.uniform(0.75, 1.25)


class LoopFailed(Exception):
    """A task under the STOP policy ended; the broker stopped because of it."""


class Supervisor:
    def __init__(self, *, backoff: Backoff | None = None) -> None:
        self._backoff = backoff or Backoff()
        self._restartable: dict[str, asyncio.Task[None]] = {}
        self._essential: dict[str, asyncio.Task[None]] = {}
        self._stop = asyncio.Event()
        self._stopping = False
        self.failed: str | None = None  # the STOP task that ended, if one did
        self.restarts: dict[str, int] = {}

    def start(self, name: str, run: Callable[[], Awaitable[None]], policy: Policy) -> None:
        """Run `run()` as the task `name` under `policy` (see the module docstring)."""
        if name in self._restartable or name in self._essential:
            raise ValueError(f"a task named {name!r} already runs")
        if policy is Policy.RESTART:
            self._restartable[name] = asyncio.create_task(self._keep(name, run), name=name)
        else:
            self._essential[name] = asyncio.create_task(self._watch(name, run), name=name)

    def request_stop(self) -> None:
        """Stop the broker (SIGTERM, SIGINT)."""
        self._stop.set()

    async def wait(self) -> None:
        """Until the broker should stop; afterwards a STOP task may end without failing."""
        await self._stop.wait()
        self._stopping = True

    async def cancel_restartable(self) -> None:
        """Cancel the RESTART loops and wait until they are gone."""
        tasks = list(self._restartable.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def join(self) -> None:
        """Wait for the STOP tasks, which their owners have asked to finish."""
        self._stopping = True
        await asyncio.gather(*self._essential.values(), return_exceptions=True)
        if self.failed is not None:
            raise LoopFailed(f"the {self.failed} stopped the broker; see the log above")

    async def _keep(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        failures = 0
        while True:
            started = time.monotonic()
            try:
                await run()
                log.error("loop %s returned; restarting it", name)
            except Exception:
                log.exception("loop %s crashed; restarting it", name)
            if time.monotonic() - started >= self._backoff.healthy_s:
                failures = 0
            failures += 1
            self.restarts[name] = self.restarts.get(name, 0) + 1
            delay = self._backoff.delay(failures)
            log.info("loop %s restarts in %.1fs (failure %d in a row)", name, delay, failures)
            await asyncio.sleep(delay)

    async def _watch(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        try:
            await run()
        except Exception:
            log.critical("%s crashed; stopping the broker", name, exc_info=True)
        else:
            if self._stopping:
                return
            log.critical("%s ended unasked; stopping the broker", name)
        self.failed = name
        self._stop.set()
