"""Typed settings, filled from the command line and TASKYARD_* environment variables."""

from __future__ import annotations

from dataclasses import dataclass, field

# Bytes a task's other fields may take besides its payload and labels (type,
# queue, ids, timestamps, retry policy, trace context), and a FULL reply's
# room for the error text a worker reports (details are cut at 100,000
# characters, up to 4 bytes each in UTF-8, plus the 10,000-character message).
FIELDS_ALLOWANCE = 64 * 1024
ERROR_ALLOWANCE = 512 * 1024


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on every input; each violation is INVALID_ARGUMENT naming the limit."""

    max_payload_bytes: int = 1024 * 1024
    max_batch: int = 1000
    max_string: int = 200
    max_labels: int = 64
    max_label_value: int = 1024
    max_page_size: int = 1000
    default_page_size: int = 100
    max_attempts: int = 1000
    max_credits: int = 10_000
    # gRPC message size both ways; 0: derived from the other limits
    # (`receive_bytes`, `send_bytes`), so that no caller can make the broker
    # buffer more than the largest legal request.
    max_message_bytes: int = 0
    # A BatchCreateTasks request or a Lease message (completions), in bytes.
    max_batch_bytes: int = 4 * 1024 * 1024
    # A ListTasks reply, in bytes: a FULL list pages by size as well as count.
    max_page_bytes: int = 4 * 1024 * 1024
    # Per identity (docs/security.md): open Lease/WatchTask streams, and tasks
    # submitted per second with bursts up to submit_burst (0 = unlimited).
    max_streams_per_identity: int = 1000
    max_lease_items: int = 5000  # heartbeats, completions, releases or held leases per message
    submit_rate: float = 10_000.0
    submit_burst: int = 20_000
    # Request bytes submitted per second per identity, bursts up to submit_bytes_burst.
    submit_bytes_rate: float = 16 * 1024 * 1024
    submit_bytes_burst: int = 64 * 1024 * 1024
    max_schedules_per_identity: int = 1000  # 0 = unlimited
    # Per connection and before authentication.
    # HTTP/2 concurrent streams (calls) on one connection: above the per-identity
    # stream limit, so that one client's streams and calls fit on its connection.
    max_streams_per_connection: int = 2000
    max_open_streams: int = 100  # health and reflection streams, all callers together
    refusal_log_interval_s: float = 10.0  # at most one "refused" line per peer per interval
    # Log records (ctx.log) stored per attempt; past either, one WARNING record says so.
    task_log_lines: int = 1000
    task_log_bytes: int = 256 * 1024

    @property
    def largest_task_bytes(self) -> int:
        """The largest legal CreateTask request (or completion): every field at its limit."""
        labels = self.max_labels * (self.max_string + self.max_label_value + 16)
        return self.max_payload_bytes + labels + FIELDS_ALLOWANCE

    @property
    def receive_bytes(self) -> int:
        """The gRPC receive limit: the largest legal request, single or batched."""
        if self.max_message_bytes:
            return self.max_message_bytes
        return max(self.largest_task_bytes, self.max_batch_bytes)

    @property
    def send_bytes(self) -> int:
        """The gRPC send limit: a FULL task (payload, result, error) or a page, whichever is
        larger."""
        if self.max_message_bytes:
            return self.max_message_bytes
        full_task = self.largest_task_bytes + self.max_payload_bytes + ERROR_ALLOWANCE
        return max(full_task, self.max_page_bytes + FIELDS_ALLOWANCE)


@dataclass(frozen=True, slots=True)
class Security:
    """TLS, tokens and which services stay open without a token (docs/security.md)."""

    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None  # set: clients must present a certificate it signed
    tokens_path: str | None = None  # unset: no authentication (development)
    open_health: bool = True
    open_reflection: bool = True


@dataclass(frozen=True, slots=True)
class Settings:
    listen: str = "127.0.0.1:50051"
    db: str = "sqlite+aiosqlite:///taskyard.db"
    # The default heartbeat timeout: how long a lease lasts without a
    # heartbeat, i.e. the time to notice a worker that died without closing
    # its stream (a closed stream is noticed at once).
    lease_duration_s: float = 10.0
    sweep_interval_s: float = 1.0
    promote_poll_s: float = 1.0
    default_max_attempts: int = 3
    shutdown_grace_s: float = 2.0
    # How long leases from before a restart wait for their workers to re-adopt
    # them (at least one lease_duration): a worker reconnecting with the SDKs'
    # backoff (capped at 10 s) gets about three tries.
    restart_grace_s: float = 30.0
    retention_interval_s: float = 30.0
    config_path: str | None = None
    auto_migrate: bool = False
    sqlite_synchronous: str = "NORMAL"
    # A cap on the SQLite file's size (PRAGMA max_page_count): writes that would grow
    # it further fail as on a full disk (STORAGE_FULL). None: the disk is the limit.
    sqlite_max_bytes: int | None = None
    port_file: str | None = None
    schedules_path: str | None = None  # --schedules (broker/api/schedules_file.py)
    templates_path: str | None = None  # --templates (broker/api/workflow_file.py)
    log_level: str = "INFO"
    log_json: bool = False
    # Telemetry (docs/observability.md): a Prometheus scrape endpoint, OTLP.
    metrics_listen: str | None = None
    metrics_token: str | None = None  # required as a bearer token by /metrics when set
    otlp_endpoint: str | None = None
    # The HTTP/JSON API (docs/http.md): host:port, or None for none.
    http_listen: str | None = None
    # WatchEvents resumes within the last this many events (docs/events.md).
    event_window: int = 100_000
    limits: Limits = field(default_factory=Limits)
    security: Security = field(default_factory=Security)

    @property
    def heartbeat_interval_s(self) -> float:
        return self.lease_duration_s / 3
