"""Checks on client input, each failing with a message that names the field and the fix."""

from __future__ import annotations

import json
import re

from broker.config import Limits
from broker.errors import InvalidArgument
from broker.ids import is_ulid

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-/]*$")


def name(field: str, value: str, limits: Limits, *, reason: str) -> str:
    """A type, queue or worker id: printable, no spaces, bounded."""
    if not value:
        raise InvalidArgument(f"{field} is required", reason=reason)
    if len(value) > limits.max_string:
        raise InvalidArgument(
            f"{field} is {len(value)} characters; the limit is {limits.max_string}", reason=reason
        )
    if not _NAME.match(value):
        raise InvalidArgument(
            f"{field} {value!r} may contain only letters, digits and _ . : - / "
            "and must start with a letter or digit",
            reason=reason,
        )
    return value


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
    """Binary data that claims to be JSON must be JSON."""
    try:
        json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidArgument(
            f"{field} has content_type application/json but is not valid JSON: {exc}",
            reason="MALFORMED_JSON",
        ) from None


def request_id(value: str, limits: Limits) -> str | None:
    if not value:
        return None
    if len(value) > limits.max_string:
        raise InvalidArgument(
            f"request_id is {len(value)} characters; the limit is {limits.max_string}",
            reason="INVALID_REQUEST_ID",
        )
    return value


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
