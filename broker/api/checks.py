"""Protobuf input the generated classes let through: unknown enum values, malformed
Timestamps and Durations, JSON nested too deep.

proto3 keeps an enum number it does not know (it is an open enum), and a
Timestamp or Duration is two plain integers; all of them reach the servicer as
given. Each check here refuses such a value with INVALID_ARGUMENT and a reason,
so that nothing is stored or acted on that the API does not define.
"""

from __future__ import annotations

from google.protobuf import duration_pb2, struct_pb2, timestamp_pb2
from google.protobuf.descriptor import EnumDescriptor

from broker.core import validation
from broker.errors import InvalidArgument

_NANOS = 999_999_999
# Duration's own range (the proto's comment): ±10,000 years in seconds.
_DURATION_SECONDS = 315_576_000_000


def enum(field: str, value: int, descriptor: EnumDescriptor, *, reason: str) -> int:
    """An enum number the API defines (0, UNSPECIFIED, included)."""
    if value not in descriptor.values_by_number:
        known = ", ".join(v.name for v in descriptor.values if v.number)
        raise InvalidArgument(
            f"{field} {value} is not a {descriptor.name}; use one of {known}", reason=reason
        )
    return value


def instant_us(field: str, ts: timestamp_pb2.Timestamp) -> int:
    """A Timestamp in microseconds; nanos must be 0 to 999,999,999."""
    if not 0 <= ts.nanos <= _NANOS:
        raise InvalidArgument(
            f"{field}.nanos must be 0 to 999,999,999, got {ts.nanos}", reason="INVALID_TIMESTAMP"
        )
    return validation.instant(field, ts.seconds * 1_000_000 + ts.nanos // 1000)


def span_us(field: str, d: duration_pb2.Duration) -> int:
    """A Duration in microseconds (truncated toward zero); seconds and nanos agree in sign."""
    seconds, nanos = d.seconds, d.nanos
    if not -_NANOS <= nanos <= _NANOS:
        raise InvalidArgument(
            f"{field}.nanos must be -999,999,999 to 999,999,999, got {nanos}",
            reason="INVALID_DURATION",
        )
    if (seconds < 0 < nanos) or (nanos < 0 < seconds):
        raise InvalidArgument(
            f"{field} has seconds {seconds} and nanos {nanos}: their signs must agree",
            reason="INVALID_DURATION",
        )
    if abs(seconds) > _DURATION_SECONDS:
        raise InvalidArgument(f"{field} is longer than 10,000 years", reason="INVALID_DURATION")
    micros = abs(nanos) // 1000
    return validation.span(field, seconds * 1_000_000 + (-micros if nanos < 0 else micros))


def json_depth(field: str, value: struct_pb2.Value) -> None:
    """A `json` payload nests arrays and objects at most MAX_JSON_DEPTH deep."""
    limit = validation.MAX_JSON_DEPTH
    stack: list[tuple[struct_pb2.Value, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        kind = item.WhichOneof("kind")
        if kind == "struct_value":
            children = list(item.struct_value.fields.values())
        elif kind == "list_value":
            children = list(item.list_value.values)
        else:
            continue
        depth += 1
        validation.check_json_depth(field, depth if depth <= limit else limit + 1)
        stack.extend((child, depth) for child in children)
