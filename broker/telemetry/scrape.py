"""The Prometheus scrape endpoint: /metrics over HTTP, optionally behind a bearer token.

prometheus_client's own server has no authentication; this is its WSGI app
in the same threaded server, with a constant-time check of
`Authorization: Bearer <token>` in front when a token is set (Prometheus:
`authorization: {credentials_file: ...}` in the scrape config).
"""

from __future__ import annotations

import hmac
import ipaddress
import socket
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not worth a line each."""


def guarded(app: WsgiApp, token: str) -> WsgiApp:
    """`app`, answering 401 unless the request carries the bearer token."""
    expected = f"Bearer {token}".encode()

    def check(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        given = str(environ.get("HTTP_AUTHORIZATION", "")).encode()
        if not hmac.compare_digest(given, expected):
            start_response(
                "401 Unauthorized",
                [("Content-Type", "text/plain"), ("WWW-Authenticate", "Bearer")],
            )
            return [b"this endpoint needs the header 'Authorization: Bearer <metrics token>'\n"]
        return app(environ, start_response)

    return check


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or an address) is reachable only from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # another name, or every interface


def serve(
    host: str, port: int, registry: CollectorRegistry, *, token: str | None = None
) -> WSGIServer:
    """Serve the registry on host:port in a daemon thread; port 0 picks a free one."""
    app: WsgiApp = make_wsgi_app(registry)
    if token:
        app = guarded(app, token)

    class Server(_Server):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    http = make_server(host, port, app, Server, handler_class=_Quiet)
    threading.Thread(target=http.serve_forever, name="metrics-http", daemon=True).start()
    return http
