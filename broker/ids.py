"""Task identifiers: ULIDs, monotonic within this process.

A ULID is 48 bits of milliseconds plus 80 random bits in Crockford base32, so
ids sort by creation time. Within one millisecond the random part is
incremented instead of redrawn, which keeps ids created by this process in
strict creation order — the FIFO tie-break of dispatch relies on it.
"""

from __future__ import annotations

import os
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_RANDOM_BITS = 80
_RANDOM_MAX = (1 << _RANDOM_BITS) - 1


class UlidGenerator:
    def __init__(self) -> None:
        self._last_ms = -1
        self._last_random = 0
        self._prefix = ""  # the encoded time of _last_ms

    def new(self) -> str:
        ms = time.time_ns() // 1_000_000
        if ms <= self._last_ms:
            # Same (or an earlier, after a clock step back) millisecond: stay
            # monotonic by counting up from the previous id.
            ms = self._last_ms
            self._last_random += 1
            if self._last_random > _RANDOM_MAX:
                ms += 1
                self._last_random = int.from_bytes(os.urandom(10), "big") >> 1
        else:
            # Leave headroom below the maximum so increments rarely overflow.
            self._last_random = int.from_bytes(os.urandom(10), "big") >> 1
        if ms != self._last_ms or not self._prefix:
            self._prefix = _encode(ms, 10)
        self._last_ms = ms
        return self._prefix + _encode_random(self._last_random)


def _encode(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


# Two characters (10 bits) per lookup: ids are made once per task on the hot path.
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]


def _encode_random(r: int) -> str:
    """The 16 characters of an 80-bit value."""
    p = _PAIRS
    return (
        p[r >> 70] + p[(r >> 60) & 1023] + p[(r >> 50) & 1023] + p[(r >> 40) & 1023]
        + p[(r >> 30) & 1023] + p[(r >> 20) & 1023] + p[(r >> 10) & 1023] + p[r & 1023]
    )  # fmt: skip


_default = UlidGenerator()
new_ulid = _default.new


def is_ulid(text: str) -> bool:
    return len(text) == 26 and all(c in _ALPHABET for c in text) and text[0] <= "7"
