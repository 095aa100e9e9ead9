"""The log lines of refused calls, at most one per peer per interval.

A client that keeps calling without a valid token (or over its limits) is
refused every time, and logging each refusal would let it write ~1,400
lines a second into the broker's log. So the first refusal from a peer
(its address without the port: one client opens many connections) is
logged at once; further ones within `interval_s` are only counted, and when
the interval ends a summary line says how many there were. A peer that
keeps going gets one summary per interval. Peers are kept in a bounded map;
past `max_peers`, refusals from new peers share one entry.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("taskyard.security")

OTHER_PEERS = "(other peers)"


@dataclass(slots=True)
class _Window:
    started: float
    suppressed: int = 0
    last: str = ""  # the reason of the latest refusal counted


class RefusalLog:
    def __init__(
        self,
        *,
        interval_s: float = 10.0,
        max_peers: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval_s = interval_s
        self._max_peers = max_peers
        self._clock = clock
        self._windows: dict[str, _Window] = {}

    def refused(self, method: str, peer: str, reason: str, message: str) -> None:
        """Log a refusal now, or count it into its peer's summary."""
        host = peer_host(peer)
        if host not in self._windows and len(self._windows) >= self._max_peers:
            host = OTHER_PEERS
        window = self._windows.get(host)
        if window is not None:
            window.suppressed += 1
            window.last = reason
            return
        self._windows[host] = _Window(self._clock())
        log.info("refused %s from %s: %s (%s)", method, peer, reason, message)
        if self.interval_s > 0:
            asyncio.get_running_loop().call_later(self.interval_s, self._close, host)
        else:
            del self._windows[host]

    def _close(self, host: str) -> None:
        window = self._windows.get(host)
        if window is None:
            return
        if window.suppressed == 0:
            del self._windows[host]
            return
        log.info(
            "refused %d more calls from %s in the last %.0fs (latest: %s); at most one line per "
            "peer per %.0fs",
            window.suppressed,
            host,
            self._clock() - window.started,
            window.last,
            self.interval_s,
        )
        # Still refusing: a new window, so a steady stream gets one line per interval.
        self._windows[host] = _Window(self._clock())
        asyncio.get_running_loop().call_later(self.interval_s, self._close, host)


def peer_host(peer: str) -> str:
    """`ipv4:10.0.0.5:51234` → `ipv4:10.0.0.5` (also ipv6); anything else as it is."""
    if peer.startswith(("ipv4:", "ipv6:")):
        return peer.rsplit(":", 1)[0]
    return peer
