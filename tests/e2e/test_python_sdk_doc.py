"""docs/python-sdk.md's examples, run as written against a real broker and worker.

The `# file:` block is written to disk and served by `taskyard worker shop:worker`; each
`# run:` block runs as a script. The only substitution is the test broker's address.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

from tests.helpers import ROOT, Broker, python_env, start_worker

DOC = (ROOT / "docs" / "python-sdk.md").read_text()
BLOCK = re.compile(r"^```python\n# (file|run): (\S+)\n(.*?)^```", re.DOTALL | re.MULTILINE)
TARGET = "127.0.0.1:50051"

# What each script prints, checked line by line where it is deterministic.
CHECKS: dict[str, Callable[[list[str]], bool]] = {
    "submit.py": lambda out: out[1].startswith("1024 ") and out[2] == "scheduled",
    "sync.py": lambda out: out[0] == "42" and out[-1] == "succeeded",
    "validation.py": lambda out: (
        out[0].startswith("the shop database: invoice for order 1152921504606846977, 19.99")
        and out[1] == "1152921504606846977"
        and out[2].startswith("[('a', 'Input should be a valid integer")
        and out[3] == "failed ValidationError"
    ),
    "logs.py": lambda out: out[-1].endswith("INFO 1 scaling dog.png to 128 px"),
    "batch.py": lambda out: out == ["9900", "1 ['Task', 'TaskyardError']"],
}


async def test_every_example_of_the_sdk_guide_runs(broker: Broker, tmp_path: Path) -> None:
    blocks = BLOCK.findall(DOC)
    files = [(name, code) for kind, name, code in blocks if kind == "file"]
    runs = [(name, code) for kind, name, code in blocks if kind == "run"]
    assert [name for name, _ in files] == ["shop.py"]
    assert sorted(name for name, _ in runs) == sorted(CHECKS), "a new example needs a check"
    for name, code in files:
        (tmp_path / name).write_text(code)
    path = os.pathsep.join([str(tmp_path), str(ROOT)])
    worker = await start_worker(
        broker, tmp_path, name="shop", app="shop:worker", env={"PYTHONPATH": path}
    )
    try:
        for name, code in runs:
            (tmp_path / name).write_text(code.replace(TARGET, broker.target))
            proc = await asyncio.create_subprocess_exec(
                sys.executable, str(tmp_path / name),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                env=python_env({"PYTHONPATH": path}), cwd=tmp_path,
            )  # fmt: skip
            out, err = await asyncio.wait_for(proc.communicate(), 180)
            lines = out.decode().splitlines()
            assert proc.returncode == 0, (name, err.decode())
            assert CHECKS[name](lines), (name, lines)
    finally:
        await worker.stop()
