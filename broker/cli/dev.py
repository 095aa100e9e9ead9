"""`taskyard dev` (what `make run` runs): a broker plus workers in one terminal, with a banner."""

from __future__ import annotations

import asyncio
import shlex
import sys
from dataclasses import dataclass, field

import click

from broker.cli import launcher
from broker.cli.dburl import check_reachable, database_url, shown
from worker_sdk import Client, TaskyardError

DEFAULT_TARGET = "127.0.0.1:50051"
DEFAULT_HTTP = "127.0.0.1:50080"
FIRST_TASK = """taskyard submit echo --payload '{"hello": "world"}' --wait"""


@dataclass
class Banner:
    """What `taskyard dev` prints once everything is up."""

    target: str
    database: str
    workers: list[tuple[str, list[str]]] = field(default_factory=list)  # (app, task types)
    # The HTTP/JSON API's base URL (docs/http.md), when serving it.
    http_url: str | None = None
    # The web dashboard's URL: `/` on the HTTP port (docs/dashboard.md).
    dashboard_url: str | None = None

    def lines(self) -> list[str]:
        rows = [("gRPC", f"{self.target}  (health and reflection on; try grpcurl)")]
        if self.http_url is not None:
            rows.append(("HTTP", f"{self.http_url}  (the same API as JSON; try curl, README.md)"))
        rows.append(("database", self.database))
        if self.dashboard_url is not None:
            rows.append(("dashboard", self.dashboard_url))
        for app, types in self.workers:
            rows.append(("worker", f"{app}  (task types: {', '.join(types) or '?'})"))
        out = ["", "Taskyard is running: a broker and its workers. Ctrl-C stops them.", ""]
        out += [f"  {name:<10} {value}" for name, value in rows]
        out += ["", "Try it in another terminal, from this directory:", ""]
        steps: list[tuple[str, str]] = []
        if (activate := launcher.activate_command()) is not None:
            steps.append((activate, "puts taskyard and grpcurl on PATH"))
        if self.target != DEFAULT_TARGET:
            steps.append((f"export TASKYARD_TARGET={self.target}", "this broker, for taskyard"))
        width = max((len(command) for command, _ in steps), default=0)
        out += [f"  {command:<{width}}  # {why}" for command, why in steps]
        out.append(f"  {self._first_command()}")
        return [*out, ""]

    def _first_command(self) -> str:
        types = {t for _, served in self.workers for t in served}
        if "echo" in types:
            return FIRST_TASK
        if types:
            return f"taskyard submit {shlex.quote(sorted(types)[0])} --wait"
        return "taskyard worker MODULE:ATTRIBUTE   # start a worker; see README.md"


@click.command(
    "dev", short_help="Run a broker and workers in the foreground (what `make run` does)."
)
@click.option(
    "--listen",
    default=DEFAULT_TARGET,
    show_default=True,
    help="host:port for the broker; port 0 picks a free one.",
)
@click.option(
    "--http-listen",
    default=DEFAULT_HTTP,
    show_default=True,
    help="host:port for the HTTP/JSON API (docs/http.md); an empty string turns it off.",
)
@click.option(
    "--db",
    default="taskyard.db",
    show_default=True,
    help="SQLite file (a plain path) or database URL, as for `taskyard broker`.",
)
@click.option(
    "-w",
    "--worker",
    "apps",
    multiple=True,
    help="module:attribute of a worker_sdk.Worker to run as well; repeatable.",
)
@click.option(
    "--log-level",
    type=click.Choice(sorted(launcher.LEVELS, key=launcher.LEVELS.__getitem__)),
    default="INFO",
    show_default=True,
    help="Least severe log line shown once running (warnings always show).",
)
def dev_command(
    listen: str, http_listen: str, db: str, apps: tuple[str, ...], log_level: str
) -> None:
    """Run a broker and workers in the foreground until Ctrl-C.

    The workers start once the broker passes its health check; a banner then
    says where everything is and what to type first. Ctrl-C stops the workers
    (they drain), then the broker, and exits 0.
    """
    url = database_url(db)
    check_reachable(url)
    level = launcher.level_number(log_level)
    # Children log INFO at least: their start-up lines are what the launcher waits for.
    logs = ["--log-json", "--log-level", "DEBUG" if level < launcher.LEVELS["INFO"] else "INFO"]
    broker = launcher.Child(
        "broker",
        launcher.child_argv(
            "broker",
            "--listen",
            listen,
            *(("--http-listen", http_listen) if http_listen else ()),
            *logs,
        ),
        sys.stderr,
        level,
        # The URL may hold a password: the environment, not the child's arguments (ps).
        env={"TASKYARD_DB": url},
    )
    workers = [
        launcher.Child(
            "worker",
            launcher.child_argv("worker", app, *logs),
            sys.stderr,
            level,
        )
        for app in apps
    ]

    async def ready(target: str, worker_ids: list[str]) -> None:
        banner = Banner(
            target=target,
            database=_database_label(db, url),
            http_url=broker.http_url,
            dashboard_url=broker.http_url,
        )
        banner.workers = await _worker_types(target, list(zip(apps, worker_ids, strict=True)))
        click.echo("\n".join(banner.lines()))

    async def main() -> int:
        stopper = launcher.Stopper()
        stopper.install()
        return await launcher.supervise(
            broker, workers, listen=listen, on_ready=ready, stopper=stopper
        )

    with launcher.own_terminal():
        code = asyncio.run(main())
    raise SystemExit(code)


def _database_label(given: str, url: str) -> str:
    if "://" not in given:
        return f"{given} (SQLite)"
    return shown(url)


async def _worker_types(target: str, workers: list[tuple[str, str]]) -> list[tuple[str, list[str]]]:
    """Each (app, worker id) with the task types the broker's registry lists for it."""
    try:
        async with Client(target) as client:
            sessions = await client.workers()
    except TaskyardError:
        sessions = []
    types = {w.worker_id: sorted(w.task_types) for w in sessions}
    return [(app, types.get(worker_id, [])) for app, worker_id in workers]
