"""Checks on client input, each failing with a message that names the field and the fix.

Identifiers (names, ids, request ids, label keys, concurrency keys) are
printable: a control character — a NUL above all, which PostgreSQL cannot
store — is refused here, before anything reaches the database. Free text
(label values, reasons, notes) may hold tabs and line breaks but no other
control character. What a worker reports is never refused for it: `printable`
replaces such characters instead, so that an outcome is not lost.
"""

from __future__ import annotations

import json
import re
from typing import Any

from broker.config import Limits
from broker.errors import InvalidArgument
from broker.ids import is_ulid

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:\-/]*")
# C0, DEL and C1 controls (Unicode category Cc); text fields allow tab, LF and CR.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_TEXT_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
# Nesting of a JSON payload or result (arrays and objects), refused beyond this. The
# protobuf decoder refuses a request whose `json` Value nests about 48 deep on its own
# (its limit of 100 messages, two per level), as MALFORMED_REQUEST; this limit is the
# same for every RPC and for binary JSON, which the decoder never looks into.
MAX_JSON_DEPTH = 32


def name(field: str, value: str, limits: Limits, *, reason: str) -> str:
    """A type, queue or worker id: printable, no spaces, bounded."""
    if not value:
        raise InvalidArgument(f"{field} is required", reason=reason)
    if len(value) > limits.max_string:
        raise InvalidArgument(
            f"{field} is {len(value)} characters; the limit is {limits.max_string}", reason=reason
        )
    if not _NAME.fullmatch(value):
        raise InvalidArgument(
            f"{field} {value!r} may contain only letters, digits and _ . : - / "
            "and must start with a letter or digit",
            reason=reason,
        )
    return value


def identifier(field: str, value: str, *, reason: str) -> str:
    """An id or key: no control characters."""
    if (bad := _CONTROL.search(value)) is not None:
        raise InvalidArgument(
            f"{field} has a control character ({bad.group()!r} at position {bad.start()}); "
            "identifiers are printable text",
            reason=reason,
        )
    return value


def text(field: str, value: str, *, reason: str) -> str:
    """Free text: tabs and line breaks, but no other control character."""
    if (bad := _TEXT_CONTROL.search(value)) is not None:
        raise InvalidArgument(
            f"{field} has a control character ({bad.group()!r} at position {bad.start()}); "
            "only tab, line feed and carriage return are allowed",
            reason=reason,
        )
    return value


def printable(value: str) -> str:
    """What a worker reports, kept: control characters but tab and line breaks become U+FFFD."""
    return _TEXT_CONTROL.sub("\ufffd", value) if _TEXT_CONTROL.search(value) else value


def task_id(value: str) -> str:
    if not value:
        raise InvalidArgument("id is required", reason="INVALID_ID")
    if not is_ulid(value):
        raise InvalidArgument(
            f"id {value[:40]!r} is not a task id (26 characters of Crockford base32)",
            reason="INVALID_ID",
        )
    return value


def labels(value: dict[str, str], limits: Limits) -> dict[str, str]:
    if len(value) > limits.max_labels:
        raise InvalidArgument(
            f"{len(value)} labels given; the limit is {limits.max_labels}", reason="INVALID_LABELS"
        )
    for key, item in value.items():
        if not key or len(key) > limits.max_string:
            raise InvalidArgument(
                f"label key {key[:40]!r} must be 1 to {limits.max_string} characters",
                reason="INVALID_LABELS",
            )
        identifier("label key", key, reason="INVALID_LABELS")
        text(f"label {key!r}", item, reason="INVALID_LABELS")
        if len(item) > limits.max_label_value:
            raise InvalidArgument(
                f"label {key!r} has a {len(item)}-character value; the limit is "
                f"{limits.max_label_value}",
                reason="INVALID_LABELS",
            )
    return value


def payload_size(field: str, size: int, limits: Limits) -> None:
    if size > limits.max_payload_bytes:
        raise InvalidArgument(
            f"{field} is {size} bytes; the limit is {limits.max_payload_bytes} bytes — store "
            "large data elsewhere and pass a reference",
            reason="PAYLOAD_TOO_LARGE",
        )


def json_text(field: str, data: bytes) -> None:
    """Binary data that claims to be JSON must be JSON, nested at most MAX_JSON_DEPTH deep."""
    try:
        parsed = json.loads(data)
    except RecursionError:
        raise _too_deep(field) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidArgument(
            f"{field} has content_type application/json but is not valid JSON: {exc}",
            reason="MALFORMED_JSON",
        ) from None
    if json_depth(parsed) > MAX_JSON_DEPTH:
        raise _too_deep(field)


def json_depth(value: Any) -> int:
    """How deep arrays and objects nest in a parsed JSON value (a scalar is 0)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        depth += 1
        deepest = max(deepest, depth)
        if depth <= MAX_JSON_DEPTH:  # deeper than that is all we need to know
            stack.extend((child, depth) for child in children)
    return deepest


def _too_deep(field: str) -> InvalidArgument:
    return InvalidArgument(
        f"{field} nests arrays and objects more than {MAX_JSON_DEPTH} deep; flatten it",
        reason="PAYLOAD_TOO_DEEP",
    )


def check_json_depth(field: str, depth: int) -> None:
    if depth > MAX_JSON_DEPTH:
        raise _too_deep(field)


def request_id(value: str, limits: Limits) -> str | None:
    if not value:
        return None
    if len(value) > limits.max_string:
        raise InvalidArgument(
            f"request_id is {len(value)} characters; the limit is {limits.max_string}",
            reason="INVALID_REQUEST_ID",
        )
    return identifier("request_id", value, reason="INVALID_REQUEST_ID")


# google.protobuf.Timestamp's range, 0001-01-01 to 9999-12-31, and Duration's,
# ±10,000 years: beyond them a value does not fit the BIGINT microsecond columns.
_INSTANT_US = (-62_135_596_800_000_000, 253_402_300_799_999_999)
_SPAN_US = 315_576_000_000_000_000


def instant(field: str, us: int) -> int:
    if not _INSTANT_US[0] <= us <= _INSTANT_US[1]:
        raise InvalidArgument(
            f"{field} is outside 0001-01-01 to 9999-12-31", reason="INVALID_TIMESTAMP"
        )
    return us


def span(field: str, us: int) -> int:
    if not -_SPAN_US <= us <= _SPAN_US:
        raise InvalidArgument(f"{field} is longer than 10,000 years", reason="INVALID_DURATION")
    return us


def page_size(value: int, limits: Limits) -> int:
    if value < 0:
        raise InvalidArgument(f"page_size must be >= 0, got {value}", reason="INVALID_PAGE_SIZE")
    return min(value or limits.default_page_size, limits.max_page_size)
