"""The SDK's public surface is deliberate."""

from __future__ import annotations

import worker_sdk


def test_exported_members_are_sorted_public_and_documented() -> None:
    names = worker_sdk.__all__
    assert names == sorted(names)
    for name in names:
        member = getattr(worker_sdk, name)
        assert not getattr(member, "__module__", "worker_sdk").startswith("worker_sdk._") or (
            member.__doc__
        ), f"{name} needs a docstring"
