"""The listening port: plaintext, TLS (`--tls-cert/--tls-key`) or mutual TLS (`--tls-client-ca`)."""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path

import grpc

from broker.config import Security
from broker.errors import ConfigError

log = logging.getLogger("taskyard.security")


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the {what} {path}: {exc.strerror}") from None


def server_credentials(security: Security) -> grpc.ServerCredentials | None:
    """None for plaintext; a ConfigError for an incomplete or unreadable setup."""
    if security.tls_cert is None and security.tls_key is None:
        if security.tls_client_ca is not None:
            raise ConfigError("--tls-client-ca needs --tls-cert and --tls-key: mTLS is TLS first")
        return None
    if security.tls_cert is None or security.tls_key is None:
        raise ConfigError("--tls-cert and --tls-key go together")
    cert = _read(security.tls_cert, "TLS certificate (--tls-cert)")
    key = _read(security.tls_key, "TLS key (--tls-key)")
    client_ca = (
        _read(security.tls_client_ca, "client CA (--tls-client-ca)")
        if security.tls_client_ca is not None
        else None
    )
    for text, what in ((cert, "--tls-cert"), (key, "--tls-key"), (client_ca, "--tls-client-ca")):
        if text is not None and b"-----BEGIN" not in text:
            raise ConfigError(f"{what} must be a PEM file")
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def add_port(server: grpc.aio.Server, listen: str, security: Security) -> int:
    """Bind `listen` as the settings say; returns the port (0 if it could not bind)."""
    credentials = server_credentials(security)
    if credentials is None:
        return server.add_insecure_port(listen)
    return server.add_secure_port(listen, credentials)


def is_loopback(listen: str) -> bool:
    host = listen.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name, or 0.0.0.0 / [::] (every interface)


def warn_if_exposed(listen: str, security: Security) -> None:
    """Say it loudly when a non-loopback port lets anyone in, or carries tokens in clear."""
    if is_loopback(listen):
        return
    tls = security.tls_cert is not None
    if security.tokens_path is None and security.tls_client_ca is None:
        log.warning(
            "\n%s\nSECURITY WARNING: listening on %s WITHOUT AUTHENTICATION: anyone who can "
            "reach this port may submit, read, cancel and purge tasks and run workers.\n"
            "Use --tokens FILE (and --tls-cert/--tls-key), or listen on 127.0.0.1. "
            "See docs/security.md.\n%s",
            "!" * 78,
            listen,
            "!" * 78,
        )
    elif not tls:
        log.warning(
            "\n%s\nSECURITY WARNING: listening on %s without TLS: bearer tokens and task "
            "payloads cross the network in clear text. Add --tls-cert and --tls-key.\n%s",
            "!" * 78,
            listen,
            "!" * 78,
        )
