"""deploy/: the Prometheus alert rules pass promtool (syntax and unit tests), and every
metric the rules and the Grafana dashboard name exists on a live broker's /metrics.

promtool comes from Debian's `prometheus` package; `make test` and `.ci/run` install
it when it is missing. The live broker runs real tasks first, so that every series
the deploy files use has been produced (a counter with labels appears only once
something counted it): successes, failures, retries, a cancel, an expiry, a lease
lost to a killed worker, schedule fires and skips.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from taskyard.v1 import schedule_pb2
from tests.helpers import ROOT, Broker, start_worker
from worker_sdk import Client, Event, TaskSpec, TaskState, Timeouts

DEPLOY = ROOT / "deploy"
RULES = DEPLOY / "prometheus" / "taskyard-alerts.yml"
RULE_TESTS = DEPLOY / "prometheus" / "taskyard-alerts.test.yml"
DASHBOARD = DEPLOY / "grafana" / "taskyard.json"
# Series Prometheus makes itself, not the broker.
SYNTHETIC = {"up"}
KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "bool", "offset", "inf", "nan",
}  # fmt: skip


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is missing: apt-get install prometheus (make test installs it)")
    return found


async def _run(*argv: str, cwd: Path) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_promtool_accepts_the_alert_rules(promtool: str) -> None:
    code, out = await _run(promtool, "check", "rules", RULES.name, cwd=RULES.parent)
    assert code == 0, out
    assert "SUCCESS: 6 rules found" in out


async def test_the_alerts_unit_tests_pass(promtool: str) -> None:
    code, out = await _run(promtool, "test", "rules", RULE_TESTS.name, cwd=RULES.parent)
    assert code == 0, out
    alerts = {r["alert"] for g in _rules()["groups"] for r in g["rules"]}
    tested = {t["alertname"] for case in _rule_tests()["tests"] for t in case["alert_rule_test"]}
    assert alerts == tested  # every alert has a test that makes it fire (or stay quiet)


async def test_promtool_rejects_a_broken_rule(promtool: str, tmp_path: Path) -> None:
    """The check above can fail: a rule with a bad expression is refused."""
    broken = RULES.read_text().replace("> 0.1", "> > 0.1")
    (tmp_path / "broken.yml").write_text(broken)
    code, _ = await _run(promtool, "check", "rules", "broken.yml", cwd=tmp_path)
    assert code != 0


def _rules() -> dict[str, Any]:
    return dict(yaml.safe_load(RULES.read_text()))


def _rule_tests() -> dict[str, Any]:
    return dict(yaml.safe_load(RULE_TESTS.read_text()))


def _expressions() -> list[str]:
    exprs = [str(r["expr"]) for g in _rules()["groups"] for r in g["rules"]]
    dashboard = json.loads(DASHBOARD.read_text())
    panels = [p for p in dashboard["panels"]] + [
        inner for p in dashboard["panels"] for inner in p.get("panels", [])
    ]
    exprs += [t["expr"] for p in panels for t in p.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            match = re.fullmatch(r"label_values\((.*),\s*\w+\)", query["query"])
            assert match, query
            exprs.append(match.group(1))
    return exprs


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (not functions, labels or keywords)."""
    expr = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)  # string literals
    expr = re.sub(r"\{[^}]*\}", " ", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", " ", expr)  # ranges and subqueries ($__rate_interval)
    expr = re.sub(
        r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr
    )  # grouping labels
    names = set()
    for match in re.finditer(r"(?<![\w.$])[A-Za-z_:][A-Za-z0-9_:]*", expr):
        after = expr[match.end() :].lstrip()
        if after.startswith("(") or match.group() in KEYWORDS:
            continue
        names.add(match.group())
    return names


def test_metric_names_are_found_in_expressions() -> None:
    """The extractor itself: functions, labels, keywords and durations are not metrics."""
    expr = (
        'histogram_quantile(0.99, sum by (le, queue) (rate(a_bucket{job="x", q=~"$queue"}'
        "[$__rate_interval]))) / ignoring(x) b_total unless on (queue) absent(up) > 0.1"
    )
    assert metric_names(expr) == {"a_bucket", "b_total", "up"}


def test_the_dashboard_is_grafana_json_with_targets() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["title"] == "Taskyard" and dashboard["uid"]
    targets = [t for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(targets) >= 20 and all(t["expr"] and t["refId"] for t in targets)
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


@pytest.fixture
def broker_args() -> list[str]:
    return ["--metrics-listen", "127.0.0.1:0"]


async def _exercise(broker: Broker, client: Client, tmp_path: Path) -> None:
    """Make the broker count one of everything the deploy files chart or alert on."""
    worker = await start_worker(broker, tmp_path, name="metrics")
    ok = await client.submit_many(TaskSpec("echo", i) for i in range(5))
    failed = await client.submit("fail", max_attempts=2)  # retried once, then dead
    for task in [*ok, failed]:
        async for update in client.watch(task.id):
            if update.done:
                break
    idle = await client.submit("echo", queue="nobody")  # pending: a queue without workers
    await client.cancel((await client.submit("echo", queue="nobody")).id)
    expiring = await client.submit("echo", queue="nobody", timeouts=Timeouts(expiry=0.1))
    events: asyncio.Queue[Event] = asyncio.Queue()

    async def follow() -> None:
        async for event in client.events(kinds=["schedule_fire", "task_state"]):
            await events.put(event)

    async def seen(wanted: Callable[[Event], bool]) -> Event:
        while not wanted(event := await events.get()):
            pass
        return event

    following = asyncio.create_task(follow())
    try:
        async with asyncio.timeout(60):
            slow = TaskSpec("slow", {"seconds": 60})
            await client.create_schedule("often", slow, every=1, overlap="skip")
            # Skips repeat every second, so one arrives once the subscription is live.
            await seen(lambda e: e.kind == "schedule_fire" and e.raw.schedule_fire.fire.result
                       == schedule_pb2.SCHEDULE_FIRE_RESULT_SKIPPED)  # fmt: skip
            await worker.kill()  # it held the schedule's slow task: a lease lost
            await seen(lambda e: e.type == "slow" and e.previous_state is TaskState.RUNNING)
    finally:
        following.cancel()
    async for update in client.watch(expiring.id):
        if update.done:
            assert update.state is TaskState.EXPIRED
            break
    assert (await client.get(idle.id)).state is TaskState.PENDING


async def test_every_metric_the_deploy_files_name_is_on_a_live_broker(
    broker: Broker, client: Client, tmp_path: Path
) -> None:
    assert broker.process is not None
    line = await broker.process.wait_for_line(r"metrics on (http://\S+/metrics)")
    await _exercise(broker, client, tmp_path)
    text = await asyncio.to_thread(_get, line.group(1))
    exposed = {s.name for f in text_string_to_metric_families(text) for s in f.samples}
    named = set().union(*(metric_names(e) for e in _expressions())) - SYNTHETIC
    assert len(named) >= 15, named
    missing = sorted(named - exposed)
    assert missing == [], f"named in deploy/ but not exported: {missing}"


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as response:
        return str(response.read().decode())
