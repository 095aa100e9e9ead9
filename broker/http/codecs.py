"""The JSON and binary codecs of the HTTP API.

Requests are not decoded here: the codec hands the bytes on (`RawRequest`),
and Guard decodes them after it has authenticated the caller, as on gRPC.
JSON requests are strict: a field the message does not have is
INVALID_ARGUMENT (`MALFORMED_REQUEST`) naming it, not silently dropped.
Responses are the proto3 JSON mapping, compact; WatchEvents batches arrive
pre-encoded (api/event_wire.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from connectrpc.codec import Codec
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message

from broker.api.event_wire import Batch
from broker.api.watch_frames import Frame


class RawRequest:
    """A request as it arrived, decoded once Guard asks (`to_message`)."""

    __slots__ = ("data", "is_json", "message_class")

    def __init__(self, data: bytes, message_class: type[Message], *, is_json: bool) -> None:
        self.data = data
        self.message_class = message_class
        self.is_json = is_json

    def __len__(self) -> int:
        """Bytes as received: what the per-identity byte rate counts, as for gRPC."""
        return len(self.data)


class _Codec:
    def __init__(self, *, is_json: bool) -> None:
        self._json = is_json

    def name(self) -> str:
        return "json" if self._json else "proto"

    def encode(self, message: Any) -> bytes:
        if isinstance(message, Batch):
            return message.json() if self._json else message.proto()
        if isinstance(message, Frame):  # WatchTask's shared, serialized messages
            if not self._json:
                return message.wire
            message = message.message()
        if self._json:
            return json_format.MessageToJson(message, indent=None).encode()
        return bytes(message.SerializeToString())

    def decode(self, data: bytes | bytearray, message_class: type[Message]) -> RawRequest:
        return RawRequest(bytes(data), message_class, is_json=self._json)


def codecs() -> list[Codec[Any, Any]]:
    return [_Codec(is_json=False), _Codec(is_json=True)]


def to_message(deserialize: Callable[[bytes], Any]) -> Callable[[RawRequest], Any]:
    """Guard's request decoder for HTTP: binary as on gRPC, JSON strictly."""

    def decode(raw: RawRequest) -> Any:
        if not raw.is_json:
            return deserialize(raw.data)
        message = raw.message_class()
        try:
            json_format.Parse(raw.data or b"{}", message, ignore_unknown_fields=False)
        except (json_format.ParseError, UnicodeDecodeError) as exc:
            raise DecodeError(f"invalid JSON request: {exc}") from None
        return message

    return decode
