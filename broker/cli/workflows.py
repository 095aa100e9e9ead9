"""`taskyard workflow …`: submit a workflow file, get, watch, cancel, retry, list; templates."""

from __future__ import annotations

import json
import sys
from typing import Any

import click
from google.protobuf import json_format

from broker.cli.common import json_option, reports_errors, target_option
from broker.cli.credentials import connect
from broker.cli.helpgroup import HelpGroup
from broker.cli.views import iso, jsonable, when
from broker.errors import ConfigError
from worker_sdk import NodeInfo, TemplateParam, WorkflowInfo, WorkflowState, WorkflowTemplate


@click.group("workflow", cls=HelpGroup, short_help="Graphs of tasks: submit, watch, retry.")
def workflow_group() -> None:
    """Workflows: graphs of tasks the broker runs to the end (docs/workflows.md)."""


def _params(items: tuple[str, ...]) -> dict[str, Any]:
    """key=value pairs; a value that reads as JSON is taken as JSON, else as text."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not key=value", param_hint="--param")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def _load(path: str) -> Any:
    """The file's workflow.Start (its parser loads the broker's modules: only when needed)."""
    from broker.api import workflow_file

    try:
        return workflow_file.start_from(workflow_file.read(path), path)
    except ConfigError as error:
        raise click.BadParameter(str(error), param_hint="FILE") from None


def node_dict(n: NodeInfo) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": n.name,
        "task_id": n.task_id,
        "type": n.type,
        "state": n.state.value,
        "depends_on": list(n.depends_on),
        "trigger_rule": n.trigger_rule,
        "attempt": n.attempt,
    }
    if n.join_spawned:
        out["join_spawned"] = True
    if n.spawned_by:
        out["spawned_by"] = n.spawned_by
    if n.error:
        out["error"] = {"type": n.error.type, "message": n.error.message}
    return out


def workflow_dict(w: WorkflowInfo) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": w.id,
        "name": w.name,
        "state": w.state.value,
        "failure_policy": w.failure_policy,
        "create_time": iso(w.create_time),
        "finish_time": iso(w.finish_time),
        "nodes_total": w.total,
        "nodes_unfinished": w.unfinished,
        "nodes_failed": w.failed,
        "nodes_cancelled": w.cancelled,
        "generation": w.generation,
    }
    if w.template_name:
        out["template"] = {"name": w.template_name, "version": w.template_version}
        out["params"] = jsonable(w.params)
    if w.labels:
        out["labels"] = w.labels
    if w.nodes:
        out["nodes"] = [node_dict(n) for n in w.nodes]
    return out


def _show(w: WorkflowInfo, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(workflow_dict(w), indent=2))
        return
    template = f"  template {w.template_name} v{w.template_version}" if w.template_name else ""
    click.echo(f"workflow {w.id} {w.name or ''}".rstrip())
    click.echo(
        f"  {w.state.value}; {w.total - w.unfinished}/{w.total} nodes finished"
        f" ({w.failed} failed, {w.cancelled} cancelled){template}"
    )
    click.echo(f"{'NODE':<24} {'STATE':<10} {'TYPE':<20} {'ATT':>3}  AFTER")
    for n in w.nodes:
        after = ",".join(n.depends_on)
        if n.trigger_rule != "all_succeeded":
            after += f" ({n.trigger_rule})"
        note = f"  [{n.error.type}]" if n.error and n.state.is_terminal else ""
        click.echo(
            f"{n.name:<24.24} {n.state.value:<10} {n.type:<20.20} {n.attempt:>3}  {after}{note}"
        )


@workflow_group.command("submit", short_help="Create a workflow from a YAML or TOML file.")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--param", "params", multiple=True, help="key=value for a template; repeatable.")
@click.option("--request-id", help="Idempotency key: repeating it returns the first workflow.")
@click.option("--wait", is_flag=True, help="Follow it until every node finished.")
@target_option
@json_option
@reports_errors
def submit(
    file: str,
    params: tuple[str, ...],
    request_id: str | None,
    wait: bool,
    target: str,
    as_json: bool,
) -> None:
    """Create the workflow FILE describes (its nodes, or `template:` and `params:`).

    With --wait the exit status is 0 once it succeeded and 1 otherwise.
    """
    start = _load(file)
    with connect(target) as client:
        if start.template is not None:
            given = json_format.MessageToDict(start.template.params) | _params(params)
            created = client.start_workflow(
                start.template.name, given, version=start.template.version, request_id=request_id
            )
        else:
            if params:
                raise click.BadParameter("only a template takes parameters", param_hint="--param")
            assert start.spec is not None
            created = client.create_workflow(start.spec, request_id=request_id)
        if not wait:
            click.echo(json.dumps(workflow_dict(created), indent=2) if as_json else created.id)
            return
        final = _follow(client, created.id, as_json)
    sys.exit(0 if final.state is WorkflowState.SUCCEEDED else 1)


def _follow(client: Any, workflow_id: str, as_json: bool) -> WorkflowInfo:
    for update in client.watch_workflow(workflow_id):
        if as_json:
            click.echo(json.dumps(workflow_dict(update)))
            continue
        for n in update.nodes:  # every node first, then the ones that changed
            click.echo(f"{n.name} {n.state.value}")
    final: WorkflowInfo = client.get_workflow(workflow_id)
    if not as_json:
        click.echo(f"workflow {final.state.value}")
    return final


@workflow_group.command("get")
@click.argument("workflow_id")
@target_option
@json_option
@reports_errors
def get(workflow_id: str, target: str, as_json: bool) -> None:
    """Show a workflow and every node's state."""
    with connect(target) as client:
        _show(client.get_workflow(workflow_id), as_json)


@workflow_group.command("watch")
@click.argument("workflow_id")
@target_option
@json_option
@reports_errors
def watch(workflow_id: str, target: str, as_json: bool) -> None:
    """Follow a workflow's node changes until every node finished.

    One line per node change (`NODE STATE`), then `workflow STATE`; with --json,
    one JSON object per update. Exits 0 if it succeeded, 1 otherwise.
    """
    with connect(target) as client:
        final = _follow(client, workflow_id, as_json)
    sys.exit(0 if final.state is WorkflowState.SUCCEEDED else 1)


@workflow_group.command("cancel")
@click.argument("workflow_id")
@click.option("--reason", default="", help="Recorded as the cancelled nodes' error message.")
@target_option
@json_option
@reports_errors
def cancel(workflow_id: str, reason: str, target: str, as_json: bool) -> None:
    """Cancel every unfinished node (running ones are asked to stop)."""
    with connect(target) as client:
        _show(client.cancel_workflow(workflow_id, reason), as_json)


@workflow_group.command("retry")
@click.argument("workflow_id")
@target_option
@json_option
@reports_errors
def retry(workflow_id: str, target: str, as_json: bool) -> None:
    """Re-run a finished workflow's failed and cancelled nodes and what depends on them."""
    with connect(target) as client:
        _show(client.retry_workflow(workflow_id), as_json)


@workflow_group.command("list")
@click.option(
    "-s",
    "--state",
    type=click.Choice([s.value for s in WorkflowState]),
    help="Only workflows in this state.",
)
@click.option("--template", help="Only workflows started from this template.")
@click.option(
    "-n",
    "--page-size",
    type=click.IntRange(1, 1000),
    default=20,
    show_default=True,
    help="Workflows per page (1 to 1,000).",
)
@click.option("--page-token", default="", help="Go on where a previous page ended.")
@target_option
@json_option
@reports_errors
def list_workflows(
    state: str | None,
    template: str | None,
    page_size: int,
    page_token: str,
    target: str,
    as_json: bool,
) -> None:
    """List workflows, newest first, one page at a time."""
    with connect(target) as client:
        items, token = client.list_workflows_page(
            state=state, template=template, page_size=page_size, page_token=page_token
        )
    if as_json:
        rows = [workflow_dict(w) for w in items]
        click.echo(json.dumps({"workflows": rows, "next_page_token": token}, indent=2))
        return
    click.echo(f"{'ID':<26}  {'STATE':<10} {'NAME':<20} {'NODES':>11}  CREATED")
    for w in items:
        done = f"{w.total - w.unfinished}/{w.total}"
        click.echo(
            f"{w.id:<26}  {w.state.value:<10} {w.name:<20.20} {done:>11}  {when(w.create_time)}"
        )
    if token:
        click.echo(f"more: taskyard workflow list -n {page_size} --page-token {token}", err=True)


@workflow_group.group("template", cls=HelpGroup, short_help="Named, versioned workflow templates.")
def template_group() -> None:
    """Workflow templates: register them from a file, list and show them."""


def _template_dict(t: WorkflowTemplate) -> dict[str, Any]:
    return {
        "name": t.name,
        "version": t.version,
        "description": t.description,
        "params": [
            {"name": p.name, "type": p.type or "any", "required": p.required, "default": p.default}
            for p in t.params
        ],
        "nodes": list(t.nodes),
        "create_time": iso(t.create_time),
    }


@template_group.command("register")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@target_option
@json_option
@reports_errors
def register(file: str, target: str, as_json: bool) -> None:
    """Register every template of FILE (`templates:`, a list); unchanged ones keep their version."""
    from broker.api import workflow_file

    try:
        found = workflow_file.templates_from(file)
    except ConfigError as error:
        raise click.BadParameter(str(error), param_hint="FILE") from None
    out = []
    with connect(target) as client:
        for t in found:
            params = [
                TemplateParam(
                    p.name,
                    p.type,
                    json_format.MessageToDict(p.default_value)
                    if p.HasField("default_value")
                    else None,
                    p.required,
                    p.description,
                    p.HasField("default_value"),
                )
                for p in t.params
            ]
            out.append(
                client.register_template(t.name, t.spec, params=params, description=t.description)
            )
    if as_json:
        click.echo(json.dumps([_template_dict(t) for t in out], indent=2))
        return
    for saved in out:
        click.echo(f"{saved.name} v{saved.version}")


@template_group.command("get")
@click.argument("name")
@click.option("--version", type=int, default=0, help="The version (default: the latest).")
@target_option
@json_option
@reports_errors
def template_get(name: str, version: int, target: str, as_json: bool) -> None:
    """Show a template version: its parameters and nodes."""
    with connect(target) as client:
        t = client.get_template(name, version=version)
    data = _template_dict(t)
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
        return
    click.echo(f"{t.name} v{t.version}  {t.description}".rstrip())
    for p in data["params"]:
        need = "required" if p["required"] else f"default {json.dumps(p['default'])}"
        click.echo(f"  param {p['name']}: {p['type']}, {need}")
    click.echo(f"  nodes: {', '.join(t.nodes)}")


@template_group.command("list")
@click.option("--name", help="Every version of this template, newest first.")
@target_option
@json_option
@reports_errors
def template_list(name: str | None, target: str, as_json: bool) -> None:
    """List templates (each one's latest version), or every version of one."""
    with connect(target) as client:
        listed = list(client.list_templates(name=name))
    if as_json:
        click.echo(json.dumps([_template_dict(t) for t in listed], indent=2, default=str))
        return
    for t in listed:
        click.echo(f"{t.name:<30} v{t.version:<4} {when(t.create_time)}  {t.description}".rstrip())
