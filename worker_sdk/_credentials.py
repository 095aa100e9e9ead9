"""How the SDK reaches a broker: plaintext, TLS, mutual TLS, and a bearer token.

The token travels as gRPC call credentials (`authorization: Bearer …`) on
every call of the channel, the Lease stream included. gRPC sends call
credentials only over a protected channel: TLS, or a local one (loopback or a
Unix socket) for development. A token for a plaintext remote broker is
refused here rather than sent in clear.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc


@dataclass(frozen=True, slots=True)
class ChannelSecurity:
    token: str | None = None
    ca_file: str | None = None  # CA to verify the broker with (default: system roots)
    cert_file: str | None = None  # client certificate for mutual TLS
    key_file: str | None = None
    tls: bool = False  # TLS even without ca_file (system roots)

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (mutual TLS)")

    @property
    def uses_tls(self) -> bool:
        return self.tls or self.ca_file is not None or self.cert_file is not None


def _read(path: str | None) -> bytes | None:
    return None if path is None else Path(path).read_bytes()


def is_local(target: str) -> bool:
    if target.startswith("unix:"):
        return True
    host = target.rsplit(":", 1)[0].strip("[]")
    if host.startswith("ipv4:") or host.startswith("ipv6:"):
        host = host.split(":", 1)[1]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def channel_credentials(target: str, security: ChannelSecurity) -> grpc.ChannelCredentials | None:
    """None for a plaintext channel."""
    if security.uses_tls:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=_read(security.ca_file),
            private_key=_read(security.key_file),
            certificate_chain=_read(security.cert_file),
        )
    elif security.token:
        if not is_local(target):
            raise ValueError(
                f"a token for {target} would cross the network in clear text: connect with "
                "TLS (ca_file=..., or tls=True), or reach the broker on this machine"
            )
        kind = (
            grpc.LocalConnectionType.UDS
            if target.startswith("unix:")
            else grpc.LocalConnectionType.LOCAL_TCP
        )
        credentials = grpc.local_channel_credentials(kind)
    else:
        return None
    if security.token:
        token = grpc.access_token_call_credentials(security.token)
        credentials = grpc.composite_channel_credentials(credentials, token)
    return credentials


def aio_channel(
    target: str, security: ChannelSecurity, options: Sequence[tuple[str, Any]]
) -> grpc.aio.Channel:
    credentials = channel_credentials(target, security)
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=options)
    return grpc.aio.secure_channel(target, credentials, options=options)
