"""README.md's first screen and its tour, replayed as written, so that neither can drift.

The quick start runs `make run` on a terminal (a pseudo-terminal here), pastes the
next commands into bash, and presses Ctrl-C. The tour runs every command of its
`sh` blocks in one bash session (variables such as $TASK carry over), the Python
client as a script and the worker as `mymodule.py`, against a real broker on both
backends. The only substitutions: the test broker's address for 127.0.0.1:50051 and
a temporary database for ./taskyard.db.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import fcntl
import json
import os
import pty
import re
import shlex
import signal
import sys
import termios
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import ROOT, Broker, python_env, start_worker

README = (ROOT / "README.md").read_text()
SH_BLOCK = re.compile(r"^```sh\n(.*?)^```", re.DOTALL | re.MULTILINE)
PY_BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)
README_TARGET = "127.0.0.1:50051"
VENV_BIN = Path(sys.executable).parent


def section(name: str) -> str:
    match = re.search(rf"<!-- {name}:start -->(.*?)<!-- {name}:end -->", README, re.DOTALL)
    assert match, f"README.md lost its {name} markers"
    return match.group(1)


def sh_lines(text: str) -> list[str]:
    lines = []
    for block in SH_BLOCK.findall(text):
        joined = block.replace("\\\n", " ")
        lines += [line.strip() for line in joined.splitlines() if line.strip()]
    return lines


def without_venv_path() -> dict[str, str]:
    """The environment of a fresh terminal: the virtualenv is not on PATH yet."""
    env = python_env()
    env.pop("VIRTUAL_ENV", None)
    keep = [p for p in env["PATH"].split(os.pathsep) if Path(p).resolve() != VENV_BIN.resolve()]
    env["PATH"] = os.pathsep.join(keep)
    return env


async def bash(lines: list[str], env: dict[str, str]) -> list[tuple[str, int, str]]:
    """Run the lines in one bash session: (line, exit status, stdout+stderr) for each."""
    script = ["cd " + shlex.quote(str(ROOT))]
    for i, line in enumerate(lines):
        script += [f"printf '@@@ %s\\n' {i}", f"{{ {line}\n}} 2>&1", 'echo "@@@ rc $?"']
    proc = await asyncio.create_subprocess_exec(
        "bash", "-c", "\n".join(script), env=env,
        stdout=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 240)
    parts = re.split(r"^@@@ (\d+)\n", out.decode(), flags=re.MULTILINE)[1:]
    results = []
    for index, body in zip(parts[::2], parts[1::2], strict=True):
        text, rc = re.fullmatch(r"(.*)@@@ rc (\d+)\n", body, re.DOTALL).groups()  # type: ignore[union-attr]
        results.append((lines[int(index)], int(rc), text))
    assert len(results) == len(lines), out.decode()
    return results


def expected_status(line: str) -> int:
    """0, unless the line's comment says `exits N`."""
    match = re.search(r"#.*\bexits (\d+)", line)
    return int(match.group(1)) if match else 0


# --- The quick start: `make run` on a terminal -----------------------------------------------


class Terminal:
    """A pseudo-terminal whose output is collected as it arrives."""

    def __init__(self) -> None:
        self.primary, self.secondary = pty.openpty()
        self.text = ""
        self._changed = asyncio.Event()
        asyncio.get_running_loop().add_reader(self.primary, self._read)

    def _read(self) -> None:
        try:
            data = os.read(self.primary, 65536)
        except OSError:
            data = b""
        if not data:
            asyncio.get_running_loop().remove_reader(self.primary)
        self.text += data.decode(errors="replace")
        self._changed.set()

    async def wait_for(self, pattern: str, timeout: float = 180) -> re.Match[str]:
        try:
            async with asyncio.timeout(timeout):
                while not (match := re.search(pattern, self.text, re.MULTILINE)):
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(
                f"{pattern!r} not seen; the terminal shows:\n{self.text}"
            ) from None
        return match

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.primary)
        os.close(self.primary)


def _controlling_terminal() -> None:  # pragma: no cover - runs in the child before exec
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def descendants(pid: int) -> list[int]:
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == parent:
                    found.append(int(entry.name))
                    frontier.append(int(entry.name))
    return found


async def test_the_first_screen_gets_from_make_run_to_a_finished_task(tmp_path: Path) -> None:
    make_run, *pasted = sh_lines(section("quickstart"))
    argv = shlex.split(make_run, comments=True)
    assert argv == ["make", "run"], make_run
    assert len(pasted) + 1 <= 4, "the first screen promises four commands"
    terminal = Terminal()
    proc = await asyncio.create_subprocess_exec(
        *argv, "LISTEN=127.0.0.1:0", f"DB={tmp_path / 'taskyard.db'}",
        stdin=terminal.secondary, stdout=terminal.secondary, stderr=terminal.secondary,
        preexec_fn=_controlling_terminal, env=without_venv_path(), cwd=ROOT,
    )  # fmt: skip
    os.close(terminal.secondary)
    spawned: list[int] = []
    try:
        target = (await terminal.wait_for(r"export TASKYARD_TARGET=(\S+)")).group(1)
        await terminal.wait_for(re.escape("taskyard submit echo"))
        assert "source .venv/bin/activate" in terminal.text
        spawned = descendants(proc.pid)  # the launcher, the broker, the worker
        assert len(spawned) == 3, spawned
        env = without_venv_path() | {"TASKYARD_TARGET": target}
        results = await bash(pasted, env)
        for line, status, output in results:
            assert status == expected_status(line), (line, output)
        outputs = [output for _, _, output in results]
        assert '{"hello": "world"}' in outputs[1], outputs
        assert re.search(r"succeeded\s+default\s+echo", outputs[2]), outputs
        os.write(terminal.primary, b"\x03")  # Ctrl-C
        assert await asyncio.wait_for(proc.wait(), 90) == 0, terminal.text
        await terminal.wait_for(r"^stopped\s*$", timeout=30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        for pid in spawned:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        terminal.close()
    assert "make: ***" not in terminal.text and "Traceback" not in terminal.text, terminal.text
    leftovers = [pid for pid in spawned if _alive(pid)]
    assert leftovers == [], "make run left processes behind"


# --- The tour ------------------------------------------------------------------------------

Check = Callable[[str], bool]
CHECKS: list[tuple[str, Check]] = [
    (r"submit echo --payload '\{\"n\": 1\}' --wait", lambda out: out.strip() == '{"n": 1}'),
    (r"--run-at \+1m", lambda out: bool(re.fullmatch(r"01[0-9A-Z]{24}\n", out))),
    (r"list --state scheduled", lambda out: bool(re.search(r"scheduled\s+default\s+echo", out))),
    (r"^TASK=\$\(taskyard submit sleep", lambda out: out == ""),
    (r"get \$TASK", lambda out: "type: sleep" in out and '"seconds": 3' in out),
    (r"watch \$TASK", lambda out: out.splitlines()[-2:] == ["succeeded", 'result: {"slept": 3}']),
    (r"^LONG=\$\(taskyard submit sleep", lambda out: out == ""),
    (r"cancel \$LONG", lambda out: "state: cancelled" in out or "cancel_requested: True" in out),
    (r"-q nobody --wait", lambda out: "no connected worker takes tasks from queue 'nobody'" in out),
    (r"taskyard stats", lambda out: bool(re.search(r"^default\s+active", out, re.MULTILINE))),
    (r"submit resize --payload '\{\"width\": 640\}' --wait", lambda out: _resized(out)),
    (r"^RESIZED=\$\(taskyard submit resize", lambda out: out == ""),
    (r"logs \$RESIZED --follow", lambda out: out.rstrip().endswith("#1  resizing to 320 px")),
    (r"\"wide\"", lambda out: "ValidationError" in out and "width: Input should be" in out),
    (r"submit report --wait", lambda out: out.strip() == '"done"'),
    (r"grpcurl .* list$", lambda out: "taskyard.v1.TaskService" in out.split()),
    (r"TaskService/CreateTask", lambda out: json.loads(out)["task"]["type"] == "echo"),
    (r"Health/Check", lambda out: json.loads(out) == {"status": "SERVING"}),
]


def _resized(out: str) -> bool:
    result = json.loads(out)
    return result["ok"] is True and result["id"].startswith("01") and result["width"] == 640


def check_of(line: str) -> Check:
    matching = [check for pattern, check in CHECKS if re.search(pattern, line)]
    assert len(matching) == 1, f"the tour runs {line!r}, which this test does not check once"
    return matching[0]


async def test_every_command_of_the_tour_does_what_it_says(broker: Broker, tmp_path: Path) -> None:
    tour = section("tour")
    worker_code, client_code = PY_BLOCK.findall(tour)
    assert "Client(" in client_code and "Worker(" in worker_code
    (tmp_path / "mymodule.py").write_text(worker_code)
    run_worker = re.search(r"`(taskyard worker mymodule:worker[^`]*)`", tour)
    assert run_worker, "the tour no longer says how to run its worker"
    args = shlex.split(run_worker.group(1))[2:]
    demo = await start_worker(broker, tmp_path, name="demo", app="examples.demo_worker:worker")
    mine = await start_worker(
        broker, tmp_path, name="mine", app=args[0], concurrency=int(args[args.index("-c") + 1]),
        env={"PYTHONPATH": os.pathsep.join([str(ROOT), str(tmp_path)])},
    )  # fmt: skip

    # The client imports the worker's module, as an application's would.
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", client_code.replace(README_TARGET, broker.target),
        stdout=asyncio.subprocess.PIPE, cwd=ROOT,
        env=python_env({"PYTHONPATH": os.pathsep.join([str(ROOT), str(tmp_path)])}),
    )  # fmt: skip
    printed = (await asyncio.wait_for(proc.communicate(), 120))[0].decode().splitlines()
    assert proc.returncode == 0, printed
    result = ast.literal_eval(printed[0])  # a dict from JSON: its keys in any order
    assert result["ok"] is True and result["id"].startswith("01") and result["width"] == 640
    assert printed[-1].startswith("succeeded"), printed

    lines = [line.replace(README_TARGET, broker.target) for line in sh_lines(tour)]
    env = without_venv_path() | {"TASKYARD_TARGET": broker.target}
    results = await bash(["source .venv/bin/activate", *lines], env)
    for line, status, output in results[1:]:
        assert status == expected_status(line), (line, status, output)
        assert check_of(line)(output), (line, output)
    await demo.stop()
    await mine.stop()


@pytest.mark.parametrize("name", ["quickstart", "tour"])
def test_every_command_the_readme_shows_is_replayed(name: str) -> None:
    """A tour line without a check fails the tour test; this names the gap sooner."""
    lines = sh_lines(section(name))
    if name == "tour":
        for line in lines:
            check_of(line.replace(README_TARGET, "x"))
    assert lines
