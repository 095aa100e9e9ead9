"""Workflow and template files (YAML or TOML), in the schedules file's format family.

A node's `task` table is read exactly as a schedule's (`broker/api/schedules_file.py`):
the same keys, durations (`30s`, `5m`) and retry table. Used by `taskyard workflow
submit FILE`, `taskyard workflow template register FILE` and the broker's
`--templates FILE`, which registers every template at start (an unchanged one
keeps its version, so restarts and replicas register nothing twice).

A workflow:

    name: nightly-etl
    failure_policy: fail_fast          # continue (default) | fail_fast
    labels: {team: data}
    nodes:
      - name: extract
        task: {type: etl.extract, payload: {day: "2026-12-01"}}
      - name: load
        task: {type: etl.load, queue: loads}
        depends_on: [extract]
        trigger_rule: all_succeeded    # all_finished | any_failed
        join_spawned: false

or a template to start: `template: nightly-etl`, `version: 2` (optional) and
`params: {day: "2026-12-01"}`. A templates file holds `templates:`, a list of
workflows that also have `description` and `params`:

    templates:
      - name: nightly-etl
        params:
          day: {type: string, required: true}
          shards: {type: integer, default: 4}
        nodes:
          - name: extract
            task: {type: etl.extract, payload: {day: "{{ params.day }}"}}
"""

from __future__ import annotations

import logging
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import json_format, struct_pb2

from broker.api import workflow_convert as wc
from broker.api.runtime import Runtime
from broker.api.schedules_file import _jsonable, _str, _table, _task
from broker.engine.workflow_ops import SaveTemplate
from broker.errors import ConfigError, InvalidArgument
from taskyard.v1 import workflow_pb2

log = logging.getLogger("taskyard.workflows")

_SPEC_KEYS = {"name", "failure_policy", "labels", "nodes"}
_TEMPLATE_KEYS = _SPEC_KEYS | {"description", "params"}
_START_KEYS = {"template", "version", "params"}
_NODE_KEYS = {"name", "task", "depends_on", "trigger_rule", "join_spawned"}
_PARAM_KEYS = {"type", "default", "required", "description"}
_RULES = {
    "all_succeeded": workflow_pb2.TRIGGER_RULE_ALL_SUCCEEDED,
    "all_finished": workflow_pb2.TRIGGER_RULE_ALL_FINISHED,
    "any_failed": workflow_pb2.TRIGGER_RULE_ANY_FAILED,
}
_POLICIES = {
    "continue": workflow_pb2.FAILURE_POLICY_CONTINUE,
    "fail_fast": workflow_pb2.FAILURE_POLICY_FAIL_FAST,
}


def read(path: str) -> dict[object, object]:
    """The file's top-level table (ConfigError if it is not YAML or TOML, or not a table)."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    try:
        if path.endswith(".toml"):
            data: object = tomllib.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:
        raise ConfigError(f"{path} is not valid YAML or TOML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a table at the top")
    return data


@dataclass(frozen=True, slots=True)
class Start:
    """What `taskyard workflow submit FILE` creates: a graph, or a template with params."""

    spec: workflow_pb2.WorkflowSpec | None = None
    template: workflow_pb2.WorkflowTemplateRef | None = None


def start_from(data: dict[object, object], where: str) -> Start:
    if "template" in data:
        entry = _table(data, _START_KEYS, where)
        ref = workflow_pb2.WorkflowTemplateRef(name=_str(entry["template"], f"{where}.template"))
        version = entry.get("version", 0)
        if not isinstance(version, int) or isinstance(version, bool) or version < 0:
            raise ConfigError(f"{where}.version: expected 0 (latest) or more, got {version!r}")
        ref.version = version
        ref.params.CopyFrom(_struct(entry.get("params", {}), f"{where}.params"))
        return Start(template=ref)
    return Start(spec=spec_from(data, where, _SPEC_KEYS))


def spec_from(data: object, where: str, keys: set[str]) -> workflow_pb2.WorkflowSpec:
    entry = _table(data, keys, where)
    out = workflow_pb2.WorkflowSpec(name=_str(entry.get("name", ""), f"{where}.name"))
    if "failure_policy" in entry:
        out.failure_policy = _choice(entry["failure_policy"], _POLICIES, f"{where}.failure_policy")
    labels = _table(entry.get("labels", {}), None, f"{where}.labels")
    out.labels.update({str(k): str(v) for k, v in labels.items()})
    nodes = entry.get("nodes")
    if not isinstance(nodes, list) or not nodes:
        raise ConfigError(f"{where}.nodes: expected a list of nodes, at least one")
    for index, node in enumerate(nodes):
        out.nodes.append(_node(node, f"{where}.nodes[{index}]"))
    return out


def _node(value: object, where: str) -> workflow_pb2.WorkflowNode:
    entry = _table(value, _NODE_KEYS, where)
    if "task" not in entry:
        raise ConfigError(f"{where}: task is required (at least task.type)")
    deps = entry.get("depends_on", [])
    if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
        raise ConfigError(f"{where}.depends_on: expected a list of node names")
    out = workflow_pb2.WorkflowNode(
        name=_str(entry.get("name", ""), f"{where}.name"),
        task=_task(entry["task"], f"{where}.task"),
        depends_on=deps,
    )
    if "trigger_rule" in entry:
        out.trigger_rule = _choice(entry["trigger_rule"], _RULES, f"{where}.trigger_rule")
    join = entry.get("join_spawned", False)
    if not isinstance(join, bool):
        raise ConfigError(f"{where}.join_spawned: expected true or false")
    out.join_spawned = join
    return out


def template_from(value: object, where: str) -> workflow_pb2.WorkflowTemplate:
    entry = _table(value, _TEMPLATE_KEYS, where)
    spec_entry = {k: v for k, v in entry.items() if k in _SPEC_KEYS}
    out = workflow_pb2.WorkflowTemplate(
        name=_str(entry.get("name", ""), f"{where}.name"),
        description=_str(entry.get("description", ""), f"{where}.description"),
        spec=spec_from(spec_entry, where, _SPEC_KEYS),
    )
    params = _table(entry.get("params", {}), None, f"{where}.params")
    for name, declared in params.items():
        at = f"{where}.params.{name}"
        table = _table(declared, _PARAM_KEYS, at)
        param = out.params.add(
            name=str(name),
            type=_str(table.get("type", ""), f"{at}.type"),
            description=_str(table.get("description", ""), f"{at}.description"),
        )
        required = table.get("required", False)
        if not isinstance(required, bool):
            raise ConfigError(f"{at}.required: expected true or false")
        param.required = required
        if "default" in table:
            json_format.ParseDict(_jsonable(table["default"]), param.default_value)
    return out


def templates_from(path: str) -> list[workflow_pb2.WorkflowTemplate]:
    """A templates file's templates, each checked as CreateWorkflowTemplate would check it."""
    data = read(path)
    if set(data) - {"templates"}:
        raise ConfigError(f"{path}: expected one top-level key, `templates`, holding a list")
    entries = data.get("templates") or []
    if not isinstance(entries, list):
        raise ConfigError(f"{path}: `templates` must be a list of tables")
    out = []
    for index, entry in enumerate(entries):
        label = entry.get("name") if isinstance(entry, dict) else None
        where = f"{path}: templates[{index}]" + (f" ({label})" if label else "")
        out.append(template_from(entry, where))
    return out


def _choice(value: object, names: dict[str, Any], where: str) -> Any:
    if not isinstance(value, str) or value.lower() not in names:
        raise ConfigError(f"{where}: {value!r} is not one of {', '.join(names)}")
    return names[value.lower()]


def _struct(value: object, where: str) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    json_format.ParseDict(_jsonable(_table(value, None, where)), out)
    return out


class TemplateRegistrar:
    """Registers the `--templates` file's templates through the committer (at ticker start)."""

    def __init__(
        self, templates: list[workflow_pb2.WorkflowTemplate], *, runtime: Runtime, path: str
    ) -> None:
        self._templates = templates
        self._rt = runtime
        self._path = path

    def check(self) -> None:
        """Refuse a bad file before the broker starts (ConfigError naming the template)."""
        for index, t in enumerate(self._templates):
            try:
                wc.template_in(t, self._rt.settings)
            except InvalidArgument as error:
                raise ConfigError(
                    f"{self._path}: templates[{index}] ({t.name}): {error.message}"
                ) from None

    async def __call__(self) -> None:
        created = 0
        for t in self._templates:
            data, digest = wc.template_in(t, self._rt.settings)
            _, new = await self._rt.committer.submit(SaveTemplate(t.name, data, digest))
            created += new
        log.info(
            "templates file: %d registered, %d unchanged", created, len(self._templates) - created
        )
