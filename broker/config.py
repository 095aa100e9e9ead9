"""Typed settings, filled from the command line and TASKYARD_* environment variables."""

from __future__ import annotations

from dataclasses import dataclass, field


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
    max_message_bytes: int = 32 * 1024 * 1024
    # Per identity (docs/security.md): open Lease/WatchTask streams, and tasks
    # submitted per second with bursts up to submit_burst (0 = unlimited).
    max_streams_per_identity: int = 1000
    max_lease_items: int = 5000  # heartbeats, completions or releases per Lease message
    submit_rate: float = 10_000.0
    submit_burst: int = 20_000


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
    log_level: str = "INFO"
    log_json: bool = False
    # Telemetry (docs/observability.md): a Prometheus scrape endpoint, OTLP.
    metrics_listen: str | None = None
    otlp_endpoint: str | None = None
    limits: Limits = field(default_factory=Limits)
    security: Security = field(default_factory=Security)

    @property
    def heartbeat_interval_s(self) -> float:
        return self.lease_duration_s / 3
