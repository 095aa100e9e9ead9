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


def crockford(value: int) -> str:
    """The reference: 26 base32 digits, most significant first."""
    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    return "".join(alphabet[(value >> (5 * i)) & 31] for i in reversed(range(26)))


def test_an_id_encodes_its_millisecond_then_its_random_part(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    generator = UlidGenerator()
    ms = 1_764_000_000_123
    monkeypatch.setattr("broker.ids.time.time_ns", lambda: ms * 1_000_000 + 999_999)
    first = generator.new()
    random = generator._last_random
    assert first == crockford((ms << 80) | random)
    assert generator.new() == crockford((ms << 80) | (random + 1))  # same ms: counts up
    generator._last_random = (1 << 80) - 1  # the random part is exhausted: the next ms
    assert generator.new()[:10] == crockford((ms + 1) << 80)[:10]


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
