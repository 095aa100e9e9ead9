"""The broker's imports point one way: the import-linter contracts in pyproject.toml hold.

The layer order is documented in docs/architecture.md. `make lint` runs the
same contracts (`lint-imports`); this test keeps them in the suite, and shows
that the layers contract does catch an arrow against the order.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import grimp
import pytest
from importlinter import api  # noqa: F401  (configures import-linter)
from importlinter.application.use_cases import read_user_options
from importlinter.contracts.layers import LayersContract

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = ROOT / "pyproject.toml"


def test_every_import_contract_holds() -> None:
    lint_imports = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run(
        [str(lint_imports), "--config", str(PYPROJECT), "--no-cache", "--no-logo"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


@pytest.fixture(scope="module")
def layers() -> LayersContract:
    options = read_user_options(str(PYPROJECT))
    (contract,) = [c for c in options.contracts_options if c["id"] == "layers"]
    return LayersContract(
        name=contract["name"],
        session_options=options.session_options,
        contract_options=contract,
    )


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("broker", include_external_packages=True, cache_dir=None)


@pytest.mark.parametrize(
    ("importer", "imported", "kept"),
    [
        ("broker.api.task_service", "broker.engine.ops", True),  # down: allowed
        ("broker.loops.reaper", "broker.store.maintenance", True),  # down, skipping one
        ("broker.core.stats", "broker.engine.ledger", False),  # the old core/stats arrow
        ("broker.store.stats", "broker.engine.ledger", False),  # the old store/stats arrow
        ("broker.security.interceptor", "broker.api.status", False),
        ("broker.security.roles", "broker.api.convert", False),
        ("broker.engine.upkeep", "broker.telemetry.metrics", False),  # the old cycle
        ("broker.engine.ops", "broker.loops.promoter", False),
        ("broker.security.access", "broker.telemetry.setup", False),  # independent siblings
        ("broker.errors", "broker.clock", False),  # ground floor: independent too
        ("broker.api.runtime", "broker.app", False),
    ],
)
def test_an_arrow_against_the_order_breaks_the_layers_contract(
    layers: LayersContract, graph: grimp.ImportGraph, importer: str, imported: str, kept: bool
) -> None:
    changed = copy.deepcopy(graph)
    changed.add_import(
        importer=importer, imported=imported, line_number=1, line_contents=f"import {imported}"
    )
    assert layers.check(changed, verbose=False).kept is kept
