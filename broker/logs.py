"""Log output for `taskyard broker` and `taskyard worker`: human-readable lines or JSON.

Records carry structured fields — task_id, task_type, queue, attempt, worker,
and whatever a call passes as `extra` — from two places: the record itself,
and the task whose handler is running in the current context (set by the
worker SDK, so a handler's own `logging` calls get them too). Lines also carry
the current OpenTelemetry trace and span ids when there is a valid span.
The human format appends the fields as `key=value`; `--log-json` writes one
JSON object per line. Field names are listed in docs/observability.md.

Whatever a client sends (method paths, worker ids, SDK names, task types,
error text) reaches a line only as a `%s` argument or an `extra` field, never
inside the format string; both formats escape those strings (`escape`), so no
client can start a line of its own, hide text with ANSI sequences or reverse
it with bidirectional overrides (docs/security.md, "What is logged").
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from worker_sdk._tracing import task_log_fields

try:
    from opentelemetry import trace
except ImportError:  # pragma: no cover - opentelemetry-api is a dependency of the broker
    trace = None  # type: ignore[assignment]

HUMAN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# C0 and C1 controls (newlines, ESC), DEL, line and paragraph separators,
# bidirectional marks and overrides, and the backslash that introduces escapes.
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069\\]")
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}


def _escape_one(match: re.Match[str]) -> str:
    char = match.group()
    short = _SHORT.get(char)
    if short is not None:
        return short
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape(text: str) -> str:
    """`text` with every character that could forge or hide log output written as an escape."""
    return _UNSAFE.sub(_escape_one, text) if _UNSAFE.search(text) else text


def _safe(value: Any) -> Any:
    """A log argument as it may be printed: numbers as they are, anything else escaped."""
    if value is None or isinstance(value, int | float):
        return value
    return escape(value if isinstance(value, str) else str(value))


def message(record: logging.LogRecord) -> str:
    """The record's message with its arguments escaped (the format string is the broker's)."""
    if not isinstance(record.msg, str):
        return escape(str(record.msg))  # an object logged as it is: all of it may be foreign
    args = record.args
    if not args:
        return record.msg
    if isinstance(args, dict):
        return record.msg % {key: _safe(value) for key, value in args.items()}
    return record.msg % tuple(_safe(a) for a in args)


# Attributes every LogRecord has; anything else on a record came from `extra`.
_STANDARD = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()
    | {"message", "asctime", "taskName"}
)


def configure(level: str, *, json_lines: bool = False, stream: TextIO | None = None) -> None:
    """Send every log record to stderr (or `stream`) in the chosen format."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if json_lines else HumanFormatter(HUMAN_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Alembic narrates every migration step at INFO; the broker logs one line
    # per schema change instead (store/database.py). DEBUG shows alembic's too.
    quiet = root.getEffectiveLevel() > logging.DEBUG
    logging.getLogger("alembic").setLevel(logging.WARNING if quiet else logging.NOTSET)


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    """The structured fields of a record: its extras, the running task's, the trace's."""
    fields: dict[str, Any] = dict(task_log_fields() or {})
    fields.update((key, value) for key, value in record.__dict__.items() if key not in _STANDARD)
    if trace is not None and "trace_id" not in fields:
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            fields["trace_id"] = format(span.trace_id, "032x")
            fields["span_id"] = format(span.span_id, "016x")
    return fields


class HumanFormatter(logging.Formatter):
    """The classic line, then the fields as key=value."""

    def format(self, record: logging.LogRecord) -> str:
        # A copy carries the escaped message, so other handlers see the record unchanged.
        escaped = logging.makeLogRecord(record.__dict__)
        escaped.msg, escaped.args = message(record), None
        line = super().format(escaped)
        record.exc_text = escaped.exc_text
        fields = fields_of(record)
        if not fields:
            return line
        suffix = " ".join(f"{k}={_safe(v)}" for k, v in fields.items())
        head, newline, rest = line.partition("\n")  # keep a traceback below the line
        return f"{head} [{suffix}]{newline}{rest}"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, then the fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": message(record),
        }
        for key, value in fields_of(record).items():
            # JSON escapes control characters itself; strings are escaped as in
            # the human format so that bidi overrides and C1 controls are too.
            out.setdefault(key, escape(value) if isinstance(value, str) else value)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exception"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=str, ensure_ascii=False)
