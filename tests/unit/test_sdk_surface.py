"""The SDK's public surface is deliberate."""

from __future__ import annotations

import inspect
from typing import Any

import worker_sdk


def test_exported_members_are_sorted_public_and_documented() -> None:
    names = worker_sdk.__all__
    # As ruff's RUF022 sorts: constants (CONTEXT), then classes, then the rest.
    assert names == sorted(
        names, key=lambda n: (0 if n.isupper() else 1 if n[0].isupper() else 2, n)
    )
    for name in names:
        member = getattr(worker_sdk, name)
        assert not getattr(member, "__module__", "worker_sdk").startswith("worker_sdk._") or (
            member.__doc__
        ), f"{name} needs a docstring"


def _public_methods(cls: type) -> dict[str, Any]:
    return {n: m for n, m in _vars_of(cls).items() if callable(m) and not n.startswith("_")}


def _vars_of(cls: type) -> dict[str, Any]:
    """Attributes of `cls` and its bases (the schedule methods come from a mixin)."""
    out: dict[str, Any] = {}
    for base in reversed(cls.__mro__[:-1]):
        out.update(vars(base))
    return out


def test_sync_client_has_every_client_method_with_its_parameters_and_docstring() -> None:
    # SyncClient derives its methods from Client's; no method is async-only, so the public
    # surfaces are equal: a method added to Client alone fails here.
    methods = _public_methods(worker_sdk.Client)
    sync_methods = _public_methods(worker_sdk.SyncClient)
    assert sorted(sync_methods) == sorted(methods)
    for name, method in {"__init__": worker_sdk.Client.__init__, **methods}.items():
        sync = getattr(worker_sdk.SyncClient, name)
        expected = inspect.signature(method)
        actual = inspect.signature(sync)
        assert actual.parameters == expected.parameters, name
        assert inspect.getdoc(sync) == inspect.getdoc(method), name
        assert name == "__init__" or inspect.getdoc(method), f"Client.{name} needs a docstring"
        assert not inspect.iscoroutinefunction(sync), name
        if inspect.isasyncgenfunction(method):
            assert str(actual.return_annotation).startswith("Iterator["), name
        elif name != "__init__":
            assert actual.return_annotation == expected.return_annotation, name
