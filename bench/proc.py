"""What the kernel says a benchmark's processes spent (Linux /proc).

* `cpu_seconds`: user + system time of one process.
* `tree_cpu`: a process tree (a broker, a worker and the pool children it forks): the
  process, every live descendant, and the children it has already reaped
  (`cutime`/`cstime`).

Both read 0 for a process that is gone: the PostgreSQL backends a sampler follows
(bench/peers/probes.py) may disconnect between two reads.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) may hold spaces; the fields after it do not.
    return text.rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (0 once it is gone)."""
    fields = _stat(pid)
    return 0.0 if fields is None else (int(fields[11]) + int(fields[12])) / _TICK


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            kids += [int(p) for p in (task / "children").read_text().split()]
    return kids


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process, its live descendants and the children it has reaped."""
    fields = _stat(pid)
    if fields is None:
        return 0.0
    used = sum(int(f) for f in fields[11:15]) / _TICK  # utime stime cutime cstime
    return used + sum(tree_cpu(child) for child in _children(pid))
