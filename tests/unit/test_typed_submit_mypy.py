"""mypy --strict checks `.submit()` against the task function's parameters.

tests/typecheck/submit_usage.py holds the correct uses (`make lint` type-checks it, with
`assert_type` on every inferred type); here mypy runs on wrong ones, which must be errors.
"""

from __future__ import annotations

import re
from pathlib import Path

from mypy import api

from tests.helpers import ROOT

WRONG = """
from __future__ import annotations

from typing import reveal_type

from tests import typed_tasks as tt
from worker_sdk import Client, SyncClient


async def wrong(client: Client, sync: SyncClient) -> None:
    await tt.add.submit(client, a="one")  # line 11: a str for an int
    await tt.add.submit(client)  # line 12: a required argument left out
    await tt.add.submit(client, a=1, c=2)  # line 13: an argument the task does not have
    tt.pid.submit(sync, note=5)  # line 14: the same through the SyncClient
    tt.add.call(b=2)  # line 15: a batch call without its required argument
    handle = await tt.add.submit(client, a=1)
    reveal_type(await handle.result())  # line 17: the function's return type
    reveal_type(tt.chatty.submit(sync, lines=1).result())  # line 18: async function's
"""


def test_mypy_flags_wrong_arguments_and_infers_the_result_type(tmp_path: Path) -> None:
    snippet = tmp_path / "wrong_usage.py"
    snippet.write_text(WRONG)
    out, err, status = api.run(
        ["--strict", "--config-file", str(ROOT / "pyproject.toml"), str(snippet)]
    )
    assert status == 1, out + err
    lines: dict[int, list[str]] = {}
    for match in re.finditer(r"wrong_usage\.py:(\d+): (error|note): (.*)", out):
        lines.setdefault(int(match.group(1)), []).append(match.group(3))
    errors = {
        n
        for n, found in lines.items()
        if any("[call-overload]" in m or "[arg-type]" in m or "[call-arg]" in m for m in found)
    }
    assert errors == {11, 12, 13, 14, 15}, out
    assert 'Revealed type is "int"' in lines[17], out
    assert 'Revealed type is "int"' in lines[18], out
