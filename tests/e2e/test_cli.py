"""The `taskyard` command line (the real console script) against a real broker and worker."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli import taskyard
from tests.helpers import Broker, start_worker


async def test_submit_and_wait_prints_the_result(broker: Broker, tmp_path: Path) -> None:
    worker = await start_worker(broker, tmp_path, name="w1")
    run = await taskyard("submit", "echo", "--payload", '{"n": 1}', "--wait", target=broker.target)
    assert run.code == 0 and json.loads(run.out) == {"n": 1}
    await worker.stop()


async def test_submit_get_list_cancel_and_watch(broker: Broker) -> None:
    run = await taskyard(
        "submit", "mail.send", "-q", "mail", "-p", "3", "-l", "who=me",
        "--backoff", "linear:2s", "--execution-timeout", "5m", "--expires-in", "1h",
        target=broker.target,
    )  # fmt: skip
    assert run.code == 0
    task_id = run.out.strip()
    run = await taskyard("get", task_id, "--json", target=broker.target)
    shown = json.loads(run.out)
    assert (shown["queue"], shown["priority"], shown["labels"]) == ("mail", 3, {"who": "me"})
    run = await taskyard("list", "--state", "pending", target=broker.target)
    assert task_id in run.out and "mail.send" in run.out
    run = await taskyard("cancel", task_id, "--json", target=broker.target)
    assert json.loads(run.out)["state"] == "cancelled"
    run = await taskyard("watch", task_id, target=broker.target)
    assert run.out.strip().startswith("cancelled")
    assert run.code == 1, "watch exits 1 when the task did not succeed"


async def test_retry_attempts_and_purge(broker: Broker, tmp_path: Path) -> None:
    worker = await start_worker(broker, tmp_path, name="w1")
    run = await taskyard("submit", "fail", "--max-attempts", "1", "--wait", target=broker.target)
    assert run.code == 1 and "dead" in run.out
    run = await taskyard("list", "--json", target=broker.target)
    task_id = json.loads(run.out)["tasks"][0]["id"]
    run = await taskyard("retry", task_id, "--json", target=broker.target)
    assert run.code == 0 and json.loads(run.out)["state"] in ("pending", "running")
    await taskyard("watch", task_id, target=broker.target)
    run = await taskyard("attempts", task_id, "--json", target=broker.target)
    assert [a["outcome"] for a in json.loads(run.out)] == ["failed", "failed"]
    run = await taskyard("purge", "--state", "dead", target=broker.target)
    assert run.code == 0 and run.out.strip() == "purged 1 tasks"
    await worker.stop()


async def test_an_unreachable_broker_is_one_clear_line() -> None:
    run = await taskyard("list", target="127.0.0.1:1")
    assert run.code == 1 and run.out == ""
    assert len(run.err_lines) == 1
    assert run.err_lines[0].startswith("error: cannot reach the Taskyard broker at 127.0.0.1:1")


async def test_bad_options_are_refused_before_calling_the_broker() -> None:
    run = await taskyard("submit", "x", "--backoff", "sideways", target="127.0.0.1:1")
    assert run.code == 2 and "not fixed, linear or exponential" in run.err
    run = await taskyard("submit", "x", "--payload", "{bad", target="127.0.0.1:1")
    assert run.code == 2 and "not valid JSON" in run.err


async def test_queue_workers_and_stats_commands(broker: Broker, tmp_path: Path) -> None:
    t = broker.target
    run = await taskyard(
        "queue", "create", "mail", "--max-concurrency", "2", "--rate", "50/1s", target=t
    )
    assert run.code == 0, run.err
    run = await taskyard("queue", "list", target=t)
    assert "mail" in run.out and "50/1s" in run.out
    run = await taskyard("queue", "pause", "mail", "--note", "later", "--json", target=t)
    assert json.loads(run.out)["paused"] is True
    worker = await start_worker(broker, tmp_path, name="cli-w", queues="mail")
    run = await taskyard("workers", "--json", target=t)
    assert [w["worker_id"] for w in json.loads(run.out)] == ["cli-w"]
    await taskyard("submit", "echo", "-q", "mail", target=t)
    run = await taskyard("stats", "--json", target=t)
    stats = json.loads(run.out)
    assert stats["total"]["submitted"] == 1
    assert [q["queue"] for q in stats["queues"]] == ["mail"]
    run = await taskyard("workers", "drain", "cli-w", target=t)
    assert run.code == 0 and "draining cli-w" in run.out
    await worker.stop()


async def test_whoami_says_who_the_broker_takes_you_to_be(broker: Broker) -> None:
    run = await taskyard("whoami", target=broker.target)
    assert run.code == 0, run.err
    first, *methods = run.out.splitlines()
    assert first == "anonymous: admin (the broker has no authentication)"
    assert "  taskyard.v1.SystemService/GetCaller" in methods
    as_json = json.loads((await taskyard("whoami", "--json", target=broker.target)).out)
    assert (as_json["name"], as_json["authenticated"], as_json["roles"]) == (
        "anonymous",
        False,
        ["admin"],
    )
    assert len(as_json["methods"]) == len(methods)
