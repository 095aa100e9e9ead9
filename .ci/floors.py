"""The floors of pyproject.toml's dependencies, for `make deps-floor`.

`python .ci/floors.py` prints pip constraints that pin every dependency to its
floor; `make deps-floor` installs Taskyard with them in a scratch venv and runs
an import and a smoke test, so that the floors pyproject.toml states are
floors that work, not guesses. `python .ci/floors.py report` (run in that
venv) prints each floor next to the version installed.
"""

from __future__ import annotations

import sys
import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from packaging.requirements import Requirement

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def floors() -> dict[str, str]:
    """{distribution: floor} for every dependency with a `>=` bound."""
    out: dict[str, str] = {}
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    # The client side's dependencies and the broker's extra (not the dev tools, which are pinned).
    for line in project["dependencies"] + project["optional-dependencies"]["broker"]:
        requirement = Requirement(line)
        lows = [s.version for s in requirement.specifier if s.operator == ">="]
        if not lows:
            raise SystemExit(f"{requirement.name} has no floor in pyproject.toml")
        out[requirement.name] = lows[0]
    return out


def main() -> None:
    report = sys.argv[1:] == ["report"]
    for name, floor in floors().items():
        if not report:
            sys.stdout.write(f"{name}=={floor}\n")
            continue
        try:
            installed = version(name)
        except PackageNotFoundError:
            installed = "not installed"
        sys.stdout.write(f"{name:42} floor {floor:10} installed {installed}\n")


if __name__ == "__main__":
    main()
