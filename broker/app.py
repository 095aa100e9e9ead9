"""Composition root: build the broker's parts, start them in order, stop them in reverse.

`build` constructs every part with its dependencies passed in: the in-memory
state and the alarms first, so that both sides of every wake-up exist before
anything uses them and nothing is wired up after construction; then the
write path, the servicers' runtime and the server; then the loops. `serve`
starts the committer, the loops (under the supervisor, loops/supervisor.py)
and the server, waits for a signal or a fatal crash, and stops them.

Shutdown (SIGTERM/SIGINT, or the committer crashing): stop accepting, tell
connected workers, give in-flight calls a grace period, stop the loops, let
the committer finish what is queued, exit (non-zero after a crash). Leases
held by connected workers are *not* released on shutdown: the workers keep
running, reconnect to the restarted broker and re-adopt them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health

from broker import config_file, memory
from broker.api import schedule_convert, schedules_file, services, workflow_file
from broker.api.runtime import Runtime
from broker.clock import MICROS, Clock, system_clock
from broker.config import Settings
from broker.engine.committer import Committer
from broker.engine.dispatcher import Dispatcher
from broker.engine.events import TaskEvents
from broker.engine.journal import Journal
from broker.engine.notices import Notices
from broker.engine.ops import Env
from broker.engine.queue_registry import QueueRegistry
from broker.engine.storage import StorageHealth
from broker.http import gate
from broker.http.router import Router
from broker.http.server import HttpServer
from broker.http.site import Site
from broker.loops.alarm import Alarm
from broker.loops.listener import Listener
from broker.loops.polls import poll_ready, refresh_queues
from broker.loops.promoter import Promoter
from broker.loops.reaper import Reaper
from broker.loops.registry import RegistryLoop
from broker.loops.retention import RetentionLoop
from broker.loops.supervisor import Policy, Supervisor
from broker.loops.ticker import Ticker
from broker.loops.trim import trim_periodically
from broker.security.interceptor import Guard
from broker.security.limits import budget_of
from broker.server import build_server, set_serving, watch_storage
from broker.store import maintenance
from broker.store.database import Database, ensure_schema, open_database
from broker.telemetry import setup as telemetry_setup
from worker_sdk import _collector as collector

log = logging.getLogger("taskyard.broker")

Loop = Callable[[], Awaitable[None]]
LISTEN_WAIT_S = 10.0


@dataclass(frozen=True, slots=True)
class Broker:
    """Every part, built and wired, nothing started."""

    settings: Settings
    runtime: Runtime
    committer: Committer
    loops: dict[str, Loop]  # restarted by the supervisor when they crash
    listener: Listener | None  # PostgreSQL: hears the other replicas
    server: grpc.aio.Server
    health: health.aio.HealthServicer
    port: int
    guard: Guard
    telemetry: telemetry_setup.Telemetry
    http: HttpServer | None  # the HTTP/JSON API, when --http-listen is given


async def run(settings: Settings, *, clock: Clock | None = None) -> None:
    clock = clock or system_clock()
    memory.return_freed_memory()
    files = config_file.load(
        settings.config_path,
        heartbeat_us=int(settings.lease_duration_s * MICROS),
        max_attempts=settings.default_max_attempts,
    )
    db = open_database(
        settings.db,
        sqlite_synchronous=settings.sqlite_synchronous,
        sqlite_max_bytes=settings.sqlite_max_bytes,
    )
    try:
        schema = await ensure_schema(db, auto_migrate=settings.auto_migrate)
        grace_us = max(int(settings.restart_grace_s * MICROS), files.defaults.timeouts.heartbeat_us)
        await _restart_grace(db, clock, grace_us)
        await serve(await build(settings, files, clock, db, schema))
    finally:
        await db.dispose()


async def build(
    settings: Settings, files: config_file.FileConfig, clock: Clock, db: Database, schema: str
) -> Broker:
    # The wake-ups first: the committer's doorbell (rung by the dispatcher when a
    # claim is due) and the alarms the promoter and the ticker sleep on.
    doorbell = asyncio.Event()
    promotions = Alarm()  # rung by ops writing delayed tasks and retries
    fires = Alarm()  # rung by schedule changes on this replica

    # In-memory state.
    queues = QueueRegistry(db=db, defaults=files.defaults)
    await queues.load()
    # Submissions per identity, counted alike through the API and by schedule fires.
    budget = budget_of(settings.limits)
    # The schedules file is read and checked now: a bad one stops the start.
    factory = schedule_convert.Factory(settings, files.defaults, queues.options, budget=budget)
    declared = schedules_file.load(
        settings.schedules_path, settings=settings, factory=factory, now=clock.now_us()
    )
    tracing = telemetry_setup.tracing(otlp_endpoint=settings.otlp_endpoint)
    storage = StorageHealth(clock)  # does the database take writes (health, metrics)
    dispatcher = Dispatcher(
        wake=doorbell.set,
        queues=queues,
        on_deliver=tracing.on_deliver,
        parents_budget=settings.limits.max_payload_bytes,
        report_window_s=settings.lease_duration_s,
    )
    events = TaskEvents()
    replica_id = uuid.uuid4().hex[:12]
    replicated = db.backend == "postgresql"
    journal = Journal(
        stream_id=replica_id, clock=clock, window=settings.event_window, relay=replicated
    )

    # The write path.
    observe = telemetry_setup.start(
        metrics_listen=settings.metrics_listen,
        otlp_endpoint=settings.otlp_endpoint,
        db=db,
        dispatcher=dispatcher,
        tracing=tracing,
        storage=storage,
        queues=queues,
        configured_queues=files.defaults.queues.keys(),
        metrics_token=settings.metrics_token,
    )
    env = Env(
        clock=clock,
        policy=files.defaults.retry,
        dispatcher=dispatcher,
        events=events,
        due=promotions,
        notices=Notices(replica_id=replica_id, enabled=replicated),
        queues=queues,
        journal=journal,
        metrics=observe.sink,
        storage=storage,
    )
    committer = Committer(db=db, env=env, doorbell=doorbell)

    # What the servicers share, and the server.
    runtime = Runtime(
        settings=settings,
        clock=clock,
        db=db,
        committer=committer,
        dispatcher=dispatcher,
        events=events,
        journal=journal,
        schema_version=schema,
        defaults=files.defaults,
        queues=queues,
        schedule_hint=fires.due_at,
        replica_id=replica_id,
        budget=budget,
    )
    guard = Guard(settings=settings, db=db, budget=budget)
    served = services.build(runtime)
    server, health_servicer, port = build_server(runtime, guard=guard, served=served)
    http = None
    if settings.http_listen:
        apps = await gate.applications(served, guard, read_max_bytes=settings.limits.receive_bytes)
        http = HttpServer(Router(apps, site=Site()), settings)

    # The loops.
    poll_s = settings.promote_poll_s
    reconcile = _reconcilers(
        workflow_file.TemplateRegistrar(
            workflow_file.templates_from(settings.templates_path),
            runtime=runtime,
            path=settings.templates_path,
        )
        if settings.templates_path
        else None,
        schedules_file.Reconciler(declared, runtime=runtime, factory=factory) if declared else None,
    )
    loops: dict[str, Loop] = {
        "promoter": Promoter(
            db=db, committer=committer, clock=clock, alarm=promotions, poll_interval_s=poll_s
        ).run,
        "reaper": Reaper(committer=committer, interval_s=settings.sweep_interval_s).run,
        "retention": RetentionLoop(
            committer=committer,
            clock=clock,
            policy=files.retention,
            interval_s=settings.retention_interval_s,
        ).run,
        "ticker": Ticker(
            db=db,
            committer=committer,
            clock=clock,
            factory=factory,
            alarm=fires,
            poll_interval_s=poll_s,
            reconcile=reconcile,
        ).run,
        "registry": RegistryLoop(
            committer=committer, clock=clock, snapshot=runtime.sessions.rows
        ).run,
        "poll": functools.partial(poll_ready, dispatcher, poll_s),
        "queues": functools.partial(refresh_queues, queues),
        "memory": trim_periodically,
        "health": functools.partial(watch_storage, health_servicer, storage, runtime),
    }
    listener = None
    if replicated:
        listener = Listener(
            url=db.url,
            replica_id=replica_id,
            dispatcher=dispatcher,
            events=events,
            journal=journal,
            drain=runtime.sessions.drain,
        )
        loops["listener"] = listener.run
    return Broker(
        settings=settings,
        runtime=runtime,
        committer=committer,
        loops=loops,
        listener=listener,
        server=server,
        health=health_servicer,
        port=port,
        guard=guard,
        telemetry=observe,
        http=http,
    )


async def serve(broker: Broker) -> None:
    settings, runtime = broker.settings, broker.runtime
    supervisor = Supervisor()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, supervisor.request_stop)
    # SIGHUP re-reads the tokens file; streams of revoked identities end.
    loop.add_signal_handler(signal.SIGHUP, broker.guard.reload)

    # Start: the committer first (everything writes through it), the loops, then the door.
    supervisor.start("committer", broker.committer.run, Policy.STOP)
    for name, run_loop in broker.loops.items():
        supervisor.start(name, run_loop, Policy.RESTART)
    if broker.listener is not None:
        # Serve once the other replicas are heard, so that a subscriber's first
        # events include theirs; a LISTEN that cannot connect only delays that.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(broker.listener.listening.wait(), LISTEN_WAIT_S)
    await broker.server.start()
    if broker.http is not None:
        await broker.http.start()
        _announce_http(settings, broker.http)
    # Start-up is over: what it left alive lives as long as the broker (worker_sdk/_collector.py).
    log.info(
        "froze %d objects start-up left alive, out of the garbage collector's way",
        collector.settle(),
    )
    await set_serving(broker.health, True)
    _announce(settings, broker.port, runtime.db.backend)
    broker.guard.announce(settings.listen)

    await supervisor.wait()  # a signal, or the committer crashed

    # Stop, in reverse: the door, the workers' streams, the loops, the committer.
    log.info("shutting down")
    runtime.shutting_down = True
    runtime.journal.close()  # WatchEvents streams end with UNAVAILABLE
    await set_serving(broker.health, False)
    runtime.dispatcher.freeze()
    runtime.sessions.shutdown(settings.shutdown_grace_s, "broker shutting down")
    stopping = [broker.server.stop(settings.shutdown_grace_s)]
    if broker.http is not None:
        stopping.append(broker.http.stop())
    await asyncio.gather(*stopping)
    await supervisor.cancel_restartable()
    broker.committer.stop()
    try:
        await supervisor.join()  # raises LoopFailed if the committer crashed
    finally:
        await broker.telemetry.shutdown()
    log.info("stopped after %d commits", broker.committer.commits)


def _reconcilers(
    templates: workflow_file.TemplateRegistrar | None,
    schedules: schedules_file.Reconciler | None,
) -> Callable[[], Awaitable[None]] | None:
    """What the ticker reconciles at its start: templates first (schedules may start them)."""
    if templates is not None:
        templates.check()  # a bad file stops the start
    parts = [p for p in (templates, schedules) if p is not None]
    if not parts:
        return None

    async def reconcile() -> None:
        for part in parts:
            await part()

    return reconcile


async def _restart_grace(db: Database, clock: Clock, grace_us: int) -> None:
    """Leases left by a previous broker run get `grace_us` to be re-adopted.

    After that the reaper may take them, but a lease it takes only lapses: until
    the task is leased again its worker may still re-adopt it or report its
    outcome (store/leases.lapsed).
    """
    async with db.writer.begin() as conn:
        kept = await maintenance.grant_restart_grace(conn, until=clock.now_us() + grace_us)
    if kept:
        log.info(
            "%d leases from before the restart wait %.0fs for their workers",
            kept,
            grace_us / MICROS,
        )


def _announce_http(settings: Settings, http: HttpServer) -> None:
    """The HTTP API's URL (tests and `taskyard dev` read this line)."""
    assert settings.http_listen is not None
    host = settings.http_listen.rsplit(":", 1)[0] or "127.0.0.1"
    log.info("HTTP/JSON API at %s://%s:%d/", http.scheme, host, http.port)
    log.info("web dashboard at %s://%s:%d/", http.scheme, host, http.port)


def _announce(settings: Settings, port: int, backend: str) -> None:
    host = settings.listen.rsplit(":", 1)[0]
    log.info("taskyard broker listening on %s:%d (%s)", host, port, backend)
    if settings.port_file:
        path = Path(settings.port_file)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(f"{port}\n")
        os.replace(tmp, path)
