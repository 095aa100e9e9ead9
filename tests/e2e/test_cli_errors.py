"""Ordinary mistakes with the real `taskyard` command: one clear line on stderr, never a traceback.

Client commands point at 127.0.0.1:1, where nothing listens: each mistake must be
caught before any call (a broker would only add "cannot reach" to the output).
"""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import pytest

from tests.cli import TASKYARD, Run, taskyard
from tests.helpers import READY, START_TIMEOUT_S, python_env

NOWHERE = "127.0.0.1:1"


def one_error_line(run: Run, code: int, *fragments: str) -> None:
    """Exactly one stderr line, `error: …` with every fragment, and the exit status `code`."""
    assert "Traceback" not in run.err, run.err
    assert run.err_lines and len(run.err_lines) == 1, run.err
    line = run.err_lines[0]
    assert line.startswith("error: "), line
    for fragment in fragments:
        assert fragment in line, line
    assert run.code == code, (run.code, line)


# (arguments, exit status, fragments of the one error line); usage mistakes exit 2.
CLIENT_MISTAKES = [
    (["submit", "x", "--payload", "@missing.json"], 2, ["--payload", "missing.json", "No such"]),
    (["submit", "x", "--payload", "@/"], 2, ["--payload", "Is a directory"]),
    (["submit", "x", "-p", "99999999999"], 2, ["--priority", "99999999999"]),
    # 1e400 overflows a double: Python would read it as inf, which JSON cannot hold.
    (["submit", "x", "--payload", "1e400"], 2, ["--payload", "1e400"]),
    (["submit", "x", "--payload", "NaN"], 2, ["--payload", "NaN is not JSON"]),
    (["submit", "x", "--payload", '{"n": 12345678901234567890}'], 2, ["2**53"]),
    (["submit", "x", "--payload", '"\\ud800"'], 2, ["--payload"]),
    (["submit", "x", "--max-attempts", "0"], 2, ["--max-attempts", "1 (never retry) or more"]),
    (["submit", "x", "--run-at", "0001-01-01T00:00:00"], 2, ["--run-at", "ISO 8601"]),
    (["submit", "x", "--run-at", "tomorrow"], 2, ["--run-at"]),
    (["submit", "x", "--wait", "--timeout", "-1"], 2, ["--timeout"]),
    (["list", "-n", "0"], 2, ["--page-size"]),
    (["list", "--since", "yesterday"], 2, ["--since"]),
    (["retry"], 2, ["TASK_ID or --queue"]),
    (["schedule", "preview", "--cron", "* * * * *", "-n", "0"], 2, ["--count"]),
    (["schedule", "create", "s", "t", "--every", "1m", "--max-attempts", "0"], 2, ["attempts"]),
    (["--target", NOWHERE, "list"], 2, ["--target", "taskyard --help"]),
    (["list"], 1, ["cannot reach the Taskyard broker at 127.0.0.1:1"]),
]  # fmt: skip


@pytest.mark.parametrize(("args", "code", "fragments"), CLIENT_MISTAKES)
async def test_a_client_mistake_is_one_line_and_a_non_zero_exit(
    args: list[str], code: int, fragments: list[str]
) -> None:
    target = None if args[0] == "--target" else NOWHERE
    one_error_line(await taskyard(*args, target=target), code, *fragments)


async def test_db_given_as_a_path_in_a_missing_directory_is_one_line(tmp_path: Path) -> None:
    run = await taskyard("broker", "--listen", "127.0.0.1:0", "--db", str(tmp_path / "no/x.db"))
    one_error_line(run, 2, "--db", "does not exist")


async def test_db_given_as_a_directory_is_one_line(tmp_path: Path) -> None:
    run = await taskyard("broker", "--listen", "127.0.0.1:0", "--db", str(tmp_path))
    one_error_line(run, 2, "--db", "is a directory")


async def test_an_unreachable_postgresql_is_one_line() -> None:
    run = await taskyard("broker", "--listen", "127.0.0.1:0", "--db", "postgresql://127.0.0.1:1/x")
    one_error_line(run, 1, "cannot open the database postgresql://127.0.0.1:1/x")
    run = await taskyard("db", "upgrade", "--db", "postgresql://127.0.0.1:1/x")
    one_error_line(run, 1, "cannot open the database postgresql://127.0.0.1:1/x")


async def test_an_unknown_database_url_is_one_line() -> None:
    run = await taskyard("broker", "--listen", "127.0.0.1:0", "--db", "mysql://localhost/x")
    one_error_line(run, 1, "unsupported database URL")


async def test_a_plain_path_is_a_sqlite_file_the_broker_serves_from(tmp_path: Path) -> None:
    """`--db data/x.db`: no URL scheme means a SQLite file, relative to the working directory."""
    (tmp_path / "data").mkdir()
    proc = await asyncio.create_subprocess_exec(
        str(TASKYARD), "broker", "--listen", "127.0.0.1:0", "--db", "data/x.db",
        stderr=asyncio.subprocess.PIPE, env=python_env(), cwd=tmp_path, start_new_session=True,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        async with asyncio.timeout(START_TIMEOUT_S):
            while not (match := READY.search((await proc.stderr.readline()).decode())):
                assert proc.returncode is None, "the broker exited"
        run = await taskyard("submit", "echo", "--json", target=f"127.0.0.1:{match.group(1)}")
        assert run.code == 0 and json.loads(run.out)["state"] == "pending"
        assert (tmp_path / "data" / "x.db").exists()
        proc.send_signal(signal.SIGTERM)
        await proc.communicate()
        assert proc.returncode == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
