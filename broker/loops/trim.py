"""Hands memory the broker freed back to the operating system (the heap's part).

`broker/memory.py` keeps blocks of 128 KiB and more out of the heap (mmap,
returned on free). Smaller ones — a 50 kB payload, the objects of a claim —
CPython frees with `free()`, and glibc keeps them inside its heaps for reuse:
after a burst (a stream whose outbox filled up, a batch of large tasks) the
broker's resident size stays at its peak although the memory is free.
`malloc_trim(0)` returns those pages. It costs a walk of the heap (milliseconds), so it runs every
`INTERVAL_S`, and after a session that had much queued closes (api/worker_service).
On a C library without `malloc_trim` (musl, macOS) both do nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

INTERVAL_S = 30.0


def _find_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    trim = getattr(libc, "malloc_trim", None)
    if trim is None:
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim  # type: ignore[no-any-return]


_TRIM = _find_trim()


def trim() -> None:
    """Return free heap memory to the system now (a no-op without glibc)."""
    if _TRIM is not None:
        _TRIM(0)


async def trim_periodically(interval_s: float = INTERVAL_S) -> None:
    while True:
        await asyncio.sleep(interval_s)
        trim()
