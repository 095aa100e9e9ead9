"""Log output for `taskyard broker` and `taskyard worker`: human-readable lines or JSON.

Records carry structured fields — task_id, task_type, queue, attempt, worker,
and whatever a call passes as `extra` — from two places: the record itself,
and the task whose handler is running in the current context (set by the
worker SDK, so a handler's own `logging` calls get them too). Lines also carry
the current OpenTelemetry trace and span ids when there is a valid span.
The human format appends the fields as `key=value`; `--log-json` writes one
JSON object per line. Field names are listed in docs/observability.md.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from worker_sdk._tracing import task_log_fields

try:
    from opentelemetry import trace
except ImportError:  # pragma: no cover - opentelemetry-api is a dependency of the broker
    trace = None  # type: ignore[assignment]

HUMAN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

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
        line = super().format(record)
        fields = fields_of(record)
        if not fields:
            return line
        suffix = " ".join(f"{k}={v}" for k, v in fields.items())
        head, newline, rest = line.partition("\n")  # keep a traceback below the line
        return f"{head} [{suffix}]{newline}{rest}"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, then the fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in fields_of(record).items():
            out.setdefault(key, value)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exception"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=str, ensure_ascii=False)
