"""pyproject.toml's dependency ranges against what the code imports and what is locked.

The floors themselves are verified by `make deps-floor`, which installs every
dependency at its floor and runs a smoke test (too slow for every CI run).
These checks are the cheap part: every library the code imports is declared
(so it has a floor at all), the generated code needs no newer grpcio or
protobuf than the floors, and the locked versions the suite runs on lie
inside the ranges.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import re
import sys
import tomllib
from functools import cache
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.helpers import ROOT

FIRST_PARTY = {"broker", "worker_sdk", "taskyard", "__future__"}


def _requirements(*, broker: bool = True) -> dict[str, Requirement]:
    """The client side's dependencies, and (with `broker`) the broker extra's."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = project["dependencies"] + (project["optional-dependencies"]["broker"] if broker else [])
    return {canonicalize_name(r.name): r for r in map(Requirement, lines)}


def _floor(name: str) -> Version:
    requirement = _requirements()[canonicalize_name(name)]
    [low] = [Version(s.version) for s in requirement.specifier if s.operator == ">="]
    return low


def _imported_modules(
    packages: tuple[str, ...] = ("broker", "worker_sdk", "taskyard"), *, connect: bool = True
) -> set[str]:
    """Every module the shipped code imports by absolute name (`from a import b` counts a.b).

    `connect=False` leaves out the generated Connect stubs (taskyard/v1/*_connect.py): only
    the broker's HTTP gateway (broker/http) imports them, so a worker or client never does.
    """
    modules: set[str] = set()
    for package in packages:
        for path in (ROOT / package).rglob("*.py"):
            if not connect and path.name.endswith("_connect.py"):
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    modules |= {alias.name for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules.add(node.module)
                    modules |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {m for m in modules if m.split(".")[0] not in FIRST_PARTY | sys.stdlib_module_names}


@cache
def _owners() -> dict[Path, str]:
    """Installed file -> the distribution that installed it."""
    owners: dict[Path, str] = {}
    for dist in importlib.metadata.distributions():
        for file in dist.files or ():
            owners[Path(str(dist.locate_file(file))).resolve()] = dist.metadata["Name"]
    return owners


def _distribution_of(module: str) -> str | None:
    """The distribution whose file defines `module`; None for a name that is not a module."""
    try:
        spec = importlib.util.find_spec(module)
    except ModuleNotFoundError:
        return None
    if spec is None or spec.origin is None:
        return None  # a class or function imported by name, or a namespace package
    return _owners().get(Path(spec.origin).resolve())


def test_every_library_the_code_imports_is_a_declared_dependency() -> None:
    declared = set(_requirements())
    undeclared = {
        module: dist
        for module in sorted(_imported_modules())
        if (dist := _distribution_of(module)) is not None
        and canonicalize_name(dist) not in declared
    }
    assert undeclared == {}, "imported directly but not in pyproject.toml's dependencies"


def test_the_sdk_imports_only_the_client_sides_dependencies() -> None:
    # `pip install taskyard` (no extra) must be enough for workers and clients; the SDK may
    # use opentelemetry-api when it is there (worker_sdk/_tracing.py imports it guarded).
    client_side = set(_requirements(broker=False)) | {"opentelemetry-api"}
    beyond = {
        module: dist
        for module in sorted(_imported_modules(("worker_sdk", "taskyard"), connect=False))
        if (dist := _distribution_of(module)) is not None
        and canonicalize_name(dist) not in client_side
    }
    assert beyond == {}, "the SDK imports a broker-only dependency"


def test_some_imports_were_traced_to_their_distributions() -> None:
    # Guards the test above against passing because nothing resolved.
    found = {_distribution_of(m) for m in _imported_modules()}
    assert {"SQLAlchemy", "grpcio", "protobuf", "opentelemetry-api", "croniter"} <= found


def test_the_generated_code_needs_no_newer_grpcio_or_protobuf_than_the_floors() -> None:
    generated = ROOT / "taskyard" / "v1"
    gencode = [
        Version(".".join(m.groups()))
        for path in generated.glob("*_pb2.py")
        for m in re.finditer(
            r"ValidateProtobufRuntimeVersion\(\s*\S+,\s*(\d+),\s*(\d+),\s*(\d+),", path.read_text()
        )
    ]
    grpc = [
        Version(m.group(1))
        for path in generated.glob("*_pb2_grpc.py")
        for m in re.finditer(r"GRPC_GENERATED_VERSION = '([^']+)'", path.read_text())
    ]
    assert gencode and grpc
    assert _floor("protobuf") >= max(gencode)
    for name in ("grpcio", "grpcio-status", "grpcio-health-checking", "grpcio-reflection"):
        assert _floor(name) >= max(grpc), name


def test_the_locked_versions_lie_inside_the_declared_ranges() -> None:
    locked: dict[str, str] = {
        canonicalize_name(name): version
        for name, version in (
            line.split("==")
            for line in (ROOT / "requirements.lock").read_text().splitlines()
            if "==" in line
        )
    }
    outside = {
        name: (str(r.specifier), locked.get(name))
        for name, r in _requirements().items()
        if locked.get(name) is None or not r.specifier.contains(locked[name], prereleases=True)
    }
    assert outside == {}


def test_the_libraries_whose_internals_the_fast_path_uses_are_capped() -> None:
    # broker/store/sqlite_onehop.py: a new minor version may change them.
    for name in ("sqlalchemy", "aiosqlite"):
        assert any(s.operator == "<" for s in _requirements()[name].specifier), name
