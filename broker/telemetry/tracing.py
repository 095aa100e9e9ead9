"""Dispatch spans and per-lease debug logs: what the broker did with a traced task.

The dispatcher calls `Dispatched.delivered` after each commit that leased
tasks. A task that arrived with a W3C trace context gets one `dispatch {type}`
span in the submitter's trace, from the commit that leased it to the moment
it was handed to the worker's stream; tasks without a trace context get none,
so the broker never starts traces of its own. The span is a sibling of the
worker's execution span, not its parent: the worker continues the trace from
the context the submitter stored, whatever the broker records.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

from opentelemetry import propagate
from opentelemetry.trace import SpanKind, Tracer

from broker.core.models import Claimed

log = logging.getLogger("taskyard.broker.dispatch")


class Dispatched:
    """Observes leases handed to worker sessions.

    Args:
        tracer: Records dispatch spans; None when no trace exporter is configured.
    """

    def __init__(self, tracer: Tracer | None) -> None:
        self._tracer = tracer

    @property
    def wanted(self) -> bool:
        """Whether observing costs anything worth paying for."""
        return self._tracer is not None or log.isEnabledFor(logging.DEBUG)

    def delivered(self, worker_id: str, claimed: Sequence[Claimed]) -> None:
        debug = log.isEnabledFor(logging.DEBUG)
        for c in claimed:
            if debug:
                log.debug(
                    "task %s leased to %s (attempt %d)",
                    c.id,
                    worker_id,
                    c.attempt,
                    extra=_fields(c, worker_id),
                )
            if self._tracer is not None and c.trace_context:
                self._span(self._tracer, worker_id, c)

    @staticmethod
    def _span(tracer: Tracer, worker_id: str, c: Claimed) -> None:
        try:
            carrier = json.loads(c.trace_context or "{}")
        except ValueError:
            return
        parent = propagate.extract(carrier)
        leased_ns = (c.lease_expires_at - c.heartbeat_timeout_us) * 1000
        span = tracer.start_span(
            f"dispatch {c.type}",
            context=parent,
            kind=SpanKind.INTERNAL,
            start_time=leased_ns,
            attributes={
                "messaging.system": "taskyard",
                "messaging.operation.name": "dispatch",
                "messaging.destination.name": c.queue,
                "messaging.message.id": c.id,
                "taskyard.task.type": c.type,
                "taskyard.task.attempt": c.attempt,
                "taskyard.worker.id": worker_id,
                "taskyard.queue_wait_ms": max(leased_ns // 1000 - c.run_at, 0) / 1000,
            },
        )
        span.end()


def _fields(c: Claimed, worker_id: str) -> dict[str, object]:
    return {
        "task_id": c.id,
        "queue": c.queue,
        "task_type": c.type,
        "attempt": c.attempt,
        "worker": worker_id,
    }
