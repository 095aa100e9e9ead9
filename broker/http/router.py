"""The ASGI application on the HTTP port: RPCs by service, everything else to the site.

`POST /taskyard.v1.<Service>/<Method>` goes to that service's Connect
application (broker/http/gate.py). Every other request goes to `site`: the
web dashboard (`/`, `/static/…`, broker/http/site.py). Without one, `index`
answers `/` with a short text pointing at docs/http.md and anything else
with 404.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

INDEX = (
    "Taskyard broker: the taskyard.v1 API over HTTP/JSON (Connect protocol).\n"
    "POST /taskyard.v1.<Service>/<Method> with a JSON body; see docs/http.md.\n"
)


async def _text(send: Send, status: int, body: str) -> None:
    data = body.encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(data)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


async def index(scope: Scope, receive: Receive, send: Send) -> None:
    """The default site: a pointer to the docs at `/`, 404 elsewhere."""
    if scope["path"] == "/" and scope["method"] in ("GET", "HEAD"):
        await _text(send, 200, INDEX)
    else:
        await _text(send, 404, f"no such path: {scope['path']}\n")


class Router:
    def __init__(self, services: Mapping[str, ASGIApp], site: ASGIApp = index) -> None:
        self._services = dict(services)
        self._site = site

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # lifespan is off; websockets are not served
        path: str = scope["path"]
        service = path[1:].split("/", 1)[0] if path.count("/") >= 2 else ""
        app = self._services.get(service)
        await (app or self._site)(scope, receive, send)
