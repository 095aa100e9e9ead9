"""`pip install taskyard` without the [broker] extra is enough for workers and clients.

A fresh virtualenv gets the package from a copy of the sources with only the client side's
dependencies (pip's cache and the lock file's versions), and runs a typed worker with
`taskyard worker`, a client script and `taskyard submit` against a broker from the full venv.
Neither SQLAlchemy, asyncpg, alembic nor OpenTelemetry is in it.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT, Broker, LoggedProcess

APP = """
from worker_sdk import CONTEXT, TaskContext, Worker, task


@task("light.greet")
async def greet(name: str, times: int = 1, ctx: TaskContext = CONTEXT) -> str:
    ctx.log.info("greeting %s", name)
    return " ".join([f"hello {name}"] * times)


worker = Worker(tasks=[greet])
"""

CLIENT = """
import asyncio
import importlib.util
import json
import sys

from light_app import greet
from worker_sdk import Client


async def main() -> None:
    async with Client(sys.argv[1]) as client:
        handle = await greet.submit(client, name="light", times=2)
        print(json.dumps({
            "result": await handle.result(timeout=60),
            "logs": [r.message async for r in handle.logs()],
            "present": [m for m in ("sqlalchemy", "asyncpg", "alembic", "opentelemetry")
                        if importlib.util.find_spec(m)],
        }))


asyncio.run(main())
"""


@pytest.fixture(scope="module")
def light(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with `pip install taskyard` (no extra), from a copy of the sources."""
    base = tmp_path_factory.mktemp("light")
    src = base / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for package in ("broker", "worker_sdk", "taskyard"):
        shutil.copytree(ROOT / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run(
        [*pip, "-c", str(ROOT / "requirements.lock"), str(src)],
        check=True, timeout=600, env=_clean_env(), capture_output=True,
    )  # fmt: skip
    frozen = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "freeze"],
        capture_output=True, text=True, check=True,
    ).stdout.lower()  # fmt: skip
    for heavy in ("sqlalchemy", "asyncpg", "alembic", "opentelemetry", "aiosqlite"):
        assert heavy not in frozen, frozen
    (base / "light_app.py").write_text(APP)
    (base / "client.py").write_text(CLIENT)
    return base


def _clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without the full venv and the repository on the path."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return env | {"PYTHONUNBUFFERED": "1"} | extra


async def test_a_worker_and_a_client_run_from_the_client_side_install(
    broker: Broker, light: Path
) -> None:
    bin_ = light / "venv" / "bin"
    env = _clean_env(PYTHONPATH=str(light))
    worker = await LoggedProcess.start(
        [str(bin_ / "taskyard"), "worker", "light_app:worker", "--target", broker.target],
        light / "worker.log", env, cwd=light,
    )  # fmt: skip
    try:
        await worker.wait_for_line("connected to", timeout=60)
        client = await asyncio.create_subprocess_exec(
            str(bin_ / "python"), str(light / "client.py"), broker.target,
            stdout=asyncio.subprocess.PIPE, env=env, cwd=light,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(client.communicate(), 120)
        assert client.returncode == 0
        assert json.loads(out) == {
            "result": "hello light hello light",
            "logs": ["greeting light"],
            "present": [],
        }
        cli = await asyncio.create_subprocess_exec(
            str(bin_ / "taskyard"), "submit", "light.greet", "--payload", '{"name": "cli"}',
            "--wait", "--target", broker.target,
            stdout=asyncio.subprocess.PIPE, env=env, cwd=light,
        )  # fmt: skip
        printed, _ = await asyncio.wait_for(cli.communicate(), 120)
        assert (cli.returncode, printed.decode().strip()) == (0, '"hello cli"')
        refused = await asyncio.create_subprocess_exec(
            str(bin_ / "taskyard"), "broker", stderr=asyncio.subprocess.PIPE, env=env, cwd=light
        )
        _, err = await asyncio.wait_for(refused.communicate(), 60)
        assert refused.returncode == 1 and "pip install 'taskyard[broker]'" in err.decode()
    finally:
        await worker.stop()
