"""Task ids sort by creation; payloads round-trip between Python and the wire."""

from __future__ import annotations

import pytest

from broker.ids import UlidGenerator, is_ulid
from worker_sdk._payload import from_payload, to_payload


def test_ids_are_ulids_in_strict_creation_order() -> None:
    generator = UlidGenerator()
    ids = [generator.new() for _ in range(10_000)]
    assert all(is_ulid(i) for i in ids)
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        0,
        -3,
        2**53,
        1.5,
        "héllo ✓",
        [],
        {},
        {"a": [1, {"b": None}], "c": "d"},
        b"\x00\xff",
    ],
)
def test_values_round_trip(value: object) -> None:
    assert from_payload(to_payload(value)) == value


def test_integers_beyond_double_precision_are_refused() -> None:
    with pytest.raises(TypeError, match="2\\*\\*53"):
        to_payload({"id": 2**53 + 1})


def test_non_json_values_are_refused_with_their_path() -> None:
    with pytest.raises(TypeError, match=r"payload\.when"):
        to_payload({"when": object()})
    with pytest.raises(TypeError, match="non-string key"):
        to_payload({1: "x"})
