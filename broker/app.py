"""Composition root: build the broker's parts, start them in order, stop them in reverse.

Shutdown (SIGTERM/SIGINT): stop accepting, tell connected workers, give
in-flight calls a grace period, let the committer finish what is queued, exit.
Leases held by connected workers are *not* released on shutdown: the workers
keep running, reconnect to the restarted broker and re-adopt them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import uuid
from pathlib import Path

from broker import config_file
from broker.api.worker_registry import drain_local
from broker.clock import MICROS, Clock, system_clock
from broker.config import Settings
from broker.engine.committer import Committer
from broker.engine.dispatcher import Dispatcher
from broker.engine.events import TaskEvents
from broker.engine.notices import Notices
from broker.engine.ops import Env
from broker.engine.queue_registry import QueueRegistry
from broker.loops.listener import Listener
from broker.loops.promoter import Promoter
from broker.loops.reaper import Reaper
from broker.loops.registry import RegistryLoop
from broker.loops.retention import RetentionLoop
from broker.runtime import Runtime
from broker.scheduling import build_ticker
from broker.security.interceptor import Guard
from broker.server import build_server, set_serving
from broker.store import maintenance
from broker.store.database import Database, ensure_schema, open_database
from broker.telemetry import setup as telemetry_setup

log = logging.getLogger("taskyard.broker")


class _NoDue:
    def due_at(self, run_at: int) -> None:
        return None


async def run(settings: Settings, *, clock: Clock | None = None) -> None:
    clock = clock or system_clock()
    files = config_file.load(
        settings.config_path,
        heartbeat_us=int(settings.lease_duration_s * MICROS),
        max_attempts=settings.default_max_attempts,
    )
    db = open_database(settings.db, sqlite_synchronous=settings.sqlite_synchronous)
    try:
        schema = await ensure_schema(db, auto_migrate=settings.auto_migrate)
        await _restart_grace(db, clock, files.defaults.timeouts.heartbeat_us)
        await _serve(settings, files, clock, db, schema)
    finally:
        await db.dispose()


async def _serve(
    settings: Settings, files: config_file.FileConfig, clock: Clock, db: Database, schema: str
) -> None:
    queues = QueueRegistry(db=db, defaults=files.defaults)
    await queues.load()
    dispatcher = Dispatcher(queues=queues)
    events = TaskEvents()
    replica_id = uuid.uuid4().hex[:12]
    replicated = db.backend == "postgresql"
    observe = telemetry_setup.start(
        metrics_listen=settings.metrics_listen,
        otlp_endpoint=settings.otlp_endpoint,
        db=db,
        dispatcher=dispatcher,
    )
    env = Env(
        clock=clock,
        policy=files.defaults.retry,
        dispatcher=dispatcher,
        events=events,
        due=_NoDue(),
        notices=Notices(replica_id=replica_id, enabled=replicated),
        queues=queues,
        metrics=observe.sink,
    )
    committer = Committer(db=db, env=env)
    ticker = build_ticker(
        settings=settings,
        defaults=files.defaults,
        clock=clock,
        db=db,
        committer=committer,
        queue_options=queues.options,
    )
    promoter = Promoter(
        db=db, committer=committer, clock=clock, poll_interval_s=settings.promote_poll_s
    )
    env.due = promoter
    reaper = Reaper(committer=committer, interval_s=settings.sweep_interval_s)
    retention = RetentionLoop(
        committer=committer,
        clock=clock,
        policy=files.retention,
        interval_s=settings.retention_interval_s,
    )
    runtime = Runtime(
        settings,
        clock,
        db,
        committer,
        dispatcher,
        events,
        schema,
        files.defaults,
        queues,
        replica_id=replica_id,
    )
    runtime.schedule_hint = ticker.hint
    guard = Guard(settings=settings, db=db)
    server, health, port = build_server(runtime, guard=guard)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # SIGHUP re-reads the tokens file; streams of revoked identities end.
    loop.add_signal_handler(signal.SIGHUP, guard.reload)

    committer_task = asyncio.create_task(committer.run(), name="committer")
    loops = {
        "promoter": promoter.run(),
        "reaper": reaper.run(),
        "retention": retention.run(),
        "ticker": ticker.run(),
        "poll": _poll_ready(dispatcher, settings.promote_poll_s),
        "queues": queues.run(),
        "registry": RegistryLoop(
            committer=committer,
            clock=clock,
            snapshot=lambda: [s.row() for s in runtime.sessions.values()],  # type: ignore[attr-defined]
        ).run(),
    }
    if replicated:
        listener = Listener(
            url=db.url,
            replica_id=replica_id,
            dispatcher=dispatcher,
            events=events,
            drain=lambda worker_id: drain_local(runtime, worker_id),
        )
        loops["listener"] = listener.run()
    side = [asyncio.create_task(coro, name=name) for name, coro in loops.items()]
    await server.start()
    await set_serving(health, True)
    _announce(settings, port, db.backend)
    guard.announce(settings.listen)

    stopper = asyncio.create_task(stop.wait(), name="stop-signal")
    done, _ = await asyncio.wait(
        [stopper, committer_task, *side], return_when=asyncio.FIRST_COMPLETED
    )
    crashed = [t for t in done if t is not stopper]
    log.info("shutting down")
    runtime.shutting_down = True
    await set_serving(health, False)
    dispatcher.freeze()
    for session in list(runtime.sessions.values()):
        session.shutdown(settings.shutdown_grace_s, "broker shutting down")  # type: ignore[attr-defined]
    await server.stop(settings.shutdown_grace_s)
    for task in [stopper, *side]:
        task.cancel()
    committer.stop()
    with contextlib.suppress(asyncio.CancelledError):
        await committer_task
    await asyncio.gather(*side, stopper, return_exceptions=True)
    await observe.shutdown()
    for task in crashed:
        if not task.cancelled() and task.exception() is not None:
            raise RuntimeError(f"{task.get_name()} loop failed") from task.exception()
    log.info("stopped after %d commits", committer.commits)


async def _restart_grace(db: Database, clock: Clock, grace_us: int) -> None:
    """Leases left by a previous broker run get one heartbeat timeout to be re-adopted."""
    async with db.writer.begin() as conn:
        kept = await maintenance.grant_restart_grace(conn, until=clock.now_us() + grace_us)
    if kept:
        log.info(
            "%d leases from before the restart wait %.0fs for their workers",
            kept,
            grace_us / MICROS,
        )


async def _poll_ready(dispatcher: Dispatcher, interval_s: float) -> None:
    """The fallback poll: a lost wake-up costs at most this long, never a stuck task."""
    while True:
        await asyncio.sleep(interval_s)
        dispatcher.mark_all_ready()


def _announce(settings: Settings, port: int, backend: str) -> None:
    host = settings.listen.rsplit(":", 1)[0]
    log.info("taskyard broker listening on %s:%d (%s)", host, port, backend)
    if settings.port_file:
        path = Path(settings.port_file)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(f"{port}\n")
        os.replace(tmp, path)
