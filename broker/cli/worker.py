"""`taskyard worker MODULE:ATTR`: run the Worker object found there."""

from __future__ import annotations

import click

from broker.cli.credentials import credential_options, credentials


@click.command("worker", short_help="Run a worker: APP is module:attribute of a Worker.")
@click.argument("app")
@click.option("-c", "--concurrency", type=int, help="Tasks run at once (overrides the Worker's).")
@click.option("-Q", "--queues", help="Comma-separated queues to consume (overrides the Worker's).")
@click.option(
    "--target",
    envvar="TASKYARD_TARGET",
    show_envvar=True,
    help="Broker address(es), comma-separated (default 127.0.0.1:50051).",
)
@click.option("--worker-id", help="Identifier shown in the broker (default host-pid).")
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    default="INFO",
    show_default=True,
    help="Least severe log record written to stderr.",
)
@click.option("--log-json", is_flag=True, help="Log one JSON object per line.")
@credential_options
def worker_command(
    app: str,
    concurrency: int | None,
    queues: str | None,
    target: str | None,
    worker_id: str | None,
    log_level: str,
    log_json: bool,
) -> None:
    """Run a worker: APP is module:attribute naming a worker_sdk.Worker."""
    from broker import logs
    from worker_sdk._loader import load_worker

    logs.configure(log_level, json_lines=log_json)
    try:
        worker = load_worker(app)
    except (ImportError, AttributeError, TypeError) as exc:
        raise click.ClickException(str(exc)) from None
    worker.configure(
        concurrency=concurrency,
        queues=queues.split(",") if queues else None,
        targets=target.split(",") if target else None,
        worker_id=worker_id,
        **credentials(),
    )
    worker.run_forever()
