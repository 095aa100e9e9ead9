"""uvicorn in the broker's own event loop, started and stopped by the broker.

uvicorn's `serve()` installs its own SIGINT/SIGTERM handlers and re-raises
the signals when it ends; the broker has its own drain on SIGTERM, so this
drives uvicorn's startup, tick loop and shutdown directly and never touches
signals. TLS follows the gRPC port's: the same certificate, and when
`--tls-client-ca` is set, clients must present a certificate it signed
(callers are still named by their bearer token; docs/http.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Iterator

import uvicorn

from broker.config import Settings
from broker.errors import ConfigError
from broker.http.router import ASGIApp

log = logging.getLogger("taskyard.http")


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the broker owns the signals


class HttpServer:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        assert settings.http_listen is not None
        host, _, port = settings.http_listen.rpartition(":")
        if not port.isdigit():
            raise ConfigError(f"--http-listen {settings.http_listen!r} is not host:port")
        security = settings.security
        config = uvicorn.Config(
            app,
            host=host.strip("[]") or "127.0.0.1",
            port=int(port),
            lifespan="off",
            http="h11",
            ws="none",
            access_log=False,
            log_config=None,
            server_header=False,
            timeout_graceful_shutdown=max(1, round(settings.shutdown_grace_s)),
            ssl_certfile=security.tls_cert,
            ssl_keyfile=security.tls_key,
            ssl_ca_certs=security.tls_client_ca,
            ssl_cert_reqs=ssl.CERT_REQUIRED if security.tls_client_ca else ssl.CERT_NONE,
        )
        # uvicorn's INFO lines ("running on … press CTRL+C") speak for a server of
        # its own; the broker announces the URL itself. Its errors still show.
        logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
        self.scheme = "https" if security.tls_cert else "http"
        self._server = _Server(config)
        self._ticks: asyncio.Task[None] | None = None
        self.port = 0

    async def start(self) -> None:
        server = self._server
        config = server.config
        if not config.loaded:
            config.load()
        server.lifespan = config.lifespan_class(config)
        try:
            await server.startup()
        except SystemExit:  # uvicorn exits when it cannot bind
            raise ConfigError(
                f"cannot serve HTTP on {config.host}:{config.port}: the address is in use "
                "or not available"
            ) from None
        if not server.started:
            raise ConfigError(f"cannot serve HTTP on {config.host}:{config.port}")
        self.port = server.servers[0].sockets[0].getsockname()[1]
        self._ticks = asyncio.create_task(server.main_loop(), name="http-ticks")

    async def stop(self) -> None:
        """Stop accepting, let responses finish (WatchEvents ends itself), close."""
        server = self._server
        server.should_exit = True
        if self._ticks is not None:
            await self._ticks
        if server.started:
            await server.shutdown()
