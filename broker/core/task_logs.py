"""How many log records an attempt may store: a budget per lease, and the notice past it.

A worker in any language may log without end; the broker keeps at most `max_lines` records
and `max_bytes` of text per attempt, then one WARNING record saying that the rest were
dropped, then nothing more for that attempt.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from broker.core.models import LogLine

WARNING = 3
MAX_MESSAGE_BYTES = 8192


@dataclass(slots=True)
class LogBudget:
    """What one attempt has stored so far."""

    lines: int = 0
    bytes: int = 0
    truncated: bool = False


def clip(message: str, limit: int = MAX_MESSAGE_BYTES) -> str:
    """`message` cut to `limit` UTF-8 bytes at a character boundary, ending in "…"."""
    data = message.encode()
    if len(data) <= limit:
        return message
    return data[: limit - 3].decode(errors="ignore") + "…"


def admit(
    budget: LogBudget, lines: Sequence[LogLine], *, max_lines: int, max_bytes: int, now_us: int
) -> list[LogLine]:
    """The records of `lines` that fit the attempt's budget, plus the notice when it runs out."""
    out: list[LogLine] = []
    for line in lines:
        if budget.truncated:
            break
        size = len(line.message.encode())
        if budget.lines + 1 > max_lines or budget.bytes + size > max_bytes:
            budget.truncated = True
            notice = (
                f"[log truncated by the broker: this attempt reached the limit of {max_lines} "
                f"records or {max_bytes} bytes; later records are dropped]"
            )
            out.append(LogLine(now_us, WARNING, notice))
            break
        budget.lines += 1
        budget.bytes += size
        out.append(line)
    return out
