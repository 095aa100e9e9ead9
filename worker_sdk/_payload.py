"""Python values ↔ the wire's Payload: JSON values as google.protobuf.Value, bytes as binary.

JSON numbers are doubles on the wire; integral values come back as int.
Integers beyond ±2**53 cannot round-trip and are refused rather than
silently rounded; so are NaN and the infinities, which JSON has no words for.
"""

from __future__ import annotations

import math
from typing import Any

from google.protobuf import struct_pb2

from taskyard.v1 import payload_pb2

_MAX_SAFE_INT = 2**53


def to_payload(value: Any) -> payload_pb2.Payload:
    """Encode a JSON-serialisable value, or bytes, as a Payload."""
    if isinstance(value, payload_pb2.Payload):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return payload_pb2.Payload(binary=bytes(value), content_type="application/octet-stream")
    payload = payload_pb2.Payload()
    _to_value(value, payload.json, "payload")
    return payload


def from_payload(payload: payload_pb2.Payload) -> Any:
    kind = payload.WhichOneof("data")
    if kind == "json":
        return _from_value(payload.json)
    if kind == "binary":
        return payload.binary
    return None


def _to_value(value: Any, out: struct_pb2.Value, path: str) -> None:
    if value is None:
        out.null_value = struct_pb2.NULL_VALUE
    elif value is True or value is False:
        out.bool_value = value
    elif isinstance(value, int):
        if abs(value) > _MAX_SAFE_INT:
            raise TypeError(
                f"{path} is {value}, beyond the ±2**53 a JSON number holds exactly; send it as "
                "a string"
            )
        out.number_value = value
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise TypeError(
                f"{path} is {value}, which JSON cannot represent; send a finite number or a string"
            )
        out.number_value = value
    elif isinstance(value, str):
        out.string_value = value
    elif isinstance(value, dict):
        fields = out.struct_value.fields
        out.struct_value.SetInParent()
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{path} has a non-string key {key!r}; JSON keys are strings")
            _to_value(item, fields[key], f"{path}.{key}")
    elif isinstance(value, list | tuple):
        values = out.list_value.values
        out.list_value.SetInParent()
        for index, item in enumerate(value):
            _to_value(item, values.add(), f"{path}[{index}]")
    else:
        raise TypeError(
            f"{path} is a {type(value).__name__}, which is not JSON-serialisable; return "
            "dict, list, str, int, float, bool, None or bytes"
        )


def _from_value(value: struct_pb2.Value) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "struct_value":
        return {k: _from_value(v) for k, v in value.struct_value.fields.items()}
    if kind == "list_value":
        return [_from_value(v) for v in value.list_value.values]
    if kind == "number_value":
        number = value.number_value
        if number.is_integer() and abs(number) <= _MAX_SAFE_INT:
            return int(number)
        return number
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    return None
