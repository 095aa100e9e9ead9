"""The `taskyard` command line against a real broker and worker."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from tests.helpers import ROOT, Broker, python_env, start_worker


async def taskyard(*args: str, target: str | None = None) -> tuple[int, str, str]:
    argv = [sys.executable, "-m", "broker", *args]
    if target is not None:
        argv += ["--target", target]
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=python_env(),
        cwd=ROOT,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_submit_and_wait_prints_the_result(broker: Broker, tmp_path: Path) -> None:
    worker = await start_worker(broker, tmp_path, name="w1")
    code, out, _ = await taskyard(
        "submit", "echo", "--payload", '{"n": 1}', "--wait", target=broker.target
    )
    assert code == 0 and json.loads(out) == {"n": 1}
    await worker.stop()


async def test_submit_get_list_cancel_and_watch(broker: Broker) -> None:
    code, out, _ = await taskyard(
        "submit", "mail.send", "-q", "mail", "-p", "3", "-l", "who=me",
        "--backoff", "linear:2s", "--execution-timeout", "5m", "--expires-in", "1h",
        target=broker.target,
    )  # fmt: skip
    assert code == 0
    task_id = out.strip()
    code, out, _ = await taskyard("get", task_id, "--json", target=broker.target)
    shown = json.loads(out)
    assert (shown["queue"], shown["priority"], shown["labels"]) == ("mail", 3, {"who": "me"})
    code, out, _ = await taskyard("list", "--state", "pending", target=broker.target)
    assert task_id in out and "mail.send" in out
    code, out, _ = await taskyard("cancel", task_id, "--json", target=broker.target)
    assert json.loads(out)["state"] == "cancelled"
    code, out, _ = await taskyard("watch", task_id, target=broker.target)
    assert out.strip().startswith("cancelled")


async def test_retry_attempts_and_purge(broker: Broker, tmp_path: Path) -> None:
    worker = await start_worker(broker, tmp_path, name="w1")
    code, out, _ = await taskyard(
        "submit", "fail", "--max-attempts", "1", "--wait", target=broker.target
    )
    assert code == 1 and "dead" in out
    code, out, _ = await taskyard("list", "--json", target=broker.target)
    task_id = json.loads(out)[0]["id"]
    code, out, _ = await taskyard("retry", task_id, "--json", target=broker.target)
    assert code == 0 and json.loads(out)["state"] in ("pending", "running")
    code, out, _ = await taskyard("watch", task_id, target=broker.target)
    code, out, _ = await taskyard("attempts", task_id, "--json", target=broker.target)
    assert [a["outcome"] for a in json.loads(out)] == ["failed", "failed"]
    code, out, _ = await taskyard("purge", "--state", "dead", target=broker.target)
    assert code == 0 and out.strip() == "purged 1 tasks"
    await worker.stop()


async def test_an_unreachable_broker_is_one_clear_line() -> None:
    code, out, err = await taskyard("list", target="127.0.0.1:1")
    assert code == 1 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: cannot reach the Taskyard broker at 127.0.0.1:1")


async def test_bad_options_are_refused_before_calling_the_broker() -> None:
    code, _, err = await taskyard("submit", "x", "--backoff", "sideways", target="127.0.0.1:1")
    assert code == 2 and "not fixed, linear or exponential" in err
    code, _, err = await taskyard("submit", "x", "--payload", "{bad", target="127.0.0.1:1")
    assert code == 2 and "not valid JSON" in err


async def test_queue_workers_and_stats_commands(broker: Broker, tmp_path: Path) -> None:
    t = broker.target
    code, out, err = await taskyard(
        "queue", "create", "mail", "--max-concurrency", "2", "--rate", "50/1s", target=t
    )
    assert code == 0, err
    code, out, _ = await taskyard("queue", "list", target=t)
    assert "mail" in out and "50/1s" in out
    code, out, _ = await taskyard("queue", "pause", "mail", "--note", "later", "--json", target=t)
    assert json.loads(out)["paused"] is True
    worker = await start_worker(broker, tmp_path, name="cli-w", queues="mail")
    code, out, _ = await taskyard("workers", "--json", target=t)
    assert [w["worker_id"] for w in json.loads(out)] == ["cli-w"]
    code, out, _ = await taskyard("submit", "echo", "-q", "mail", target=t)
    code, out, _ = await taskyard("stats", "--json", target=t)
    stats = json.loads(out)
    assert stats["total"]["submitted"] == 1
    assert [q["queue"] for q in stats["queues"]] == ["mail"]
    code, out, _ = await taskyard("workers", "drain", "cli-w", target=t)
    assert code == 0 and "draining cli-w" in out
    await worker.stop()
