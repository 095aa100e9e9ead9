"""This replica's open Lease streams, and what the rest of the broker may ask of them.

The worker registry lists them (fresher than their registry rows), the
listener drains a worker an operator drained through another replica, and
shutdown tells each worker the broker is going. A session itself
(`api/worker_service.Session`) is also the dispatcher's `LeaseHolder`.
"""

from __future__ import annotations

from typing import Protocol

from broker.store.workers import SessionRow


class LiveSession(Protocol):
    @property
    def key(self) -> str: ...

    @property
    def worker_id(self) -> str: ...

    def row(self) -> SessionRow:
        """This session as the worker registry shows it."""

    def drain(self, message: str) -> None:
        """No new tasks on this stream; the worker finishes the ones it holds."""

    def shutdown(self, grace_s: float, reason: str) -> None:
        """Tell the worker the broker stops in `grace_s`; it keeps its leases."""


class Sessions:
    def __init__(self) -> None:
        self._open: dict[str, LiveSession] = {}

    def add(self, session: LiveSession) -> None:
        self._open[session.key] = session

    def remove(self, session: LiveSession) -> None:
        self._open.pop(session.key, None)

    def __len__(self) -> int:
        return len(self._open)

    def rows(self) -> list[SessionRow]:
        return [s.row() for s in self._open.values()]

    def drain(self, worker_id: str) -> None:
        """Drain this replica's sessions of a worker (other replicas hear a notice)."""
        for session in list(self._open.values()):
            if session.worker_id == worker_id:
                session.drain("drained by an operator")

    def shutdown(self, grace_s: float, reason: str) -> None:
        for session in list(self._open.values()):
            session.shutdown(grace_s, reason)
