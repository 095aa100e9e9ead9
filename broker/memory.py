"""Memory the broker frees goes back to the system, not into a heap that only grows.

glibc's malloc serves large blocks (task payloads, gRPC messages) from mmap
and returns them to the system when freed, but by default it raises that
threshold to the size of every mmapped block freed (up to 32 MiB): after a
burst of 1 MiB messages, later ones come from the heap instead, which keeps
its high-water mark. Measured here: 500 WatchTask streams on a 1 MiB task
left the broker at 1.5 GB after they closed. Fixing the threshold at 128 KiB
(glibc's initial value) turns the dynamic adjustment off, and the same run
ends within a few MB of its baseline. Other C libraries are left alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform

log = logging.getLogger("taskyard.broker")

M_MMAP_THRESHOLD = -3  # from glibc's malloc.h
MMAP_THRESHOLD_BYTES = 128 * 1024


def return_freed_memory() -> bool:
    """Fix glibc's mmap threshold (see the module doc); False where it does not apply."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        done = bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1)
    except (OSError, AttributeError):
        return False
    if not done:
        log.debug("mallopt(M_MMAP_THRESHOLD) failed; freed memory may stay with the broker")
    return done
