"""The web dashboard's files: `/` is the page; `/static/…` its modules, styles and libraries.

The dashboard is a single page of plain ES modules (broker/http/static/,
docs/dashboard.md) that calls the same Connect API as every other HTTP
client, with the caller's bearer token: nothing here knows about tasks or
roles. The files ship inside the package and are read once, at start, so a
request never touches the disk and nothing is ever fetched from elsewhere.

Every answer carries a strict Content-Security-Policy: scripts only from this
origin plus the page's one inline import map (allowed by its hash), no
frames, no plugins, and `connect-src 'self'` so the page can reach no other
host even if a payload it displays tried to make it.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import PurePosixPath

from broker.http.router import Receive, Scope, Send

STATIC = "static"
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".txt": "text/plain; charset=utf-8",
}
_IMPORT_MAP = re.compile(rb'<script type="importmap">(.*?)</script>', re.S)


@dataclass(frozen=True, slots=True)
class _File:
    body: bytes
    content_type: str
    etag: bytes


def _load(root: resources.abc.Traversable, prefix: str = "") -> dict[str, _File]:
    files: dict[str, _File] = {}
    for entry in root.iterdir():
        name = f"{prefix}{entry.name}"
        if entry.is_dir():
            files.update(_load(entry, f"{name}/"))
            continue
        content_type = _TYPES.get(PurePosixPath(entry.name).suffix)
        if content_type is None or entry.name.startswith("."):
            continue  # VENDOR.md and hidden files: in the package, not served
        body = entry.read_bytes()
        etag = b'"' + hashlib.sha256(body).hexdigest()[:20].encode() + b'"'
        files[name] = _File(body, content_type, etag)
    return files


def _policy(index: bytes) -> bytes:
    """The Content-Security-Policy, allowing the page's inline import map by its hash."""
    hashes = [
        "'sha256-" + base64.b64encode(hashlib.sha256(m).digest()).decode() + "'"
        for m in _IMPORT_MAP.findall(index)
    ]
    return (
        "default-src 'self'; "
        f"script-src 'self' {' '.join(hashes)}; "
        "style-src 'self'; "
        "img-src 'self' data:; "
        "connect-src 'self'; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ).encode()


class Site:
    """The ASGI application for `/` and `/static/…` (the router's `site`)."""

    def __init__(self) -> None:
        root = resources.files("broker.http").joinpath(STATIC)
        self._files = _load(root)
        self._index = self._files["index.html"]
        self._policy = _policy(self._index.body)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        found = self._index if path == "/" else None
        if path.startswith(f"/{STATIC}/"):
            found = self._files.get(path.removeprefix(f"/{STATIC}/"))
        if found is None:
            body = f"no such path: {path}\n".encode()
            await self._answer(send, 404, b"text/plain; charset=utf-8", body)
        elif scope["method"] not in ("GET", "HEAD"):
            await self._answer(send, 405, b"text/plain; charset=utf-8", b"GET or HEAD only\n")
        elif found.etag in _if_none_match(scope):
            await self._answer(send, 304, found.content_type.encode(), b"", found.etag)
        else:
            body = b"" if scope["method"] == "HEAD" else found.body
            await self._answer(
                send, 200, found.content_type.encode(), body, found.etag, len(found.body)
            )

    async def _answer(
        self,
        send: Send,
        status: int,
        content_type: bytes,
        body: bytes,
        etag: bytes | None = None,
        length: int | None = None,
    ) -> None:
        headers = [
            (b"content-type", content_type),
            (b"content-length", str(len(body) if length is None else length).encode()),
            # Revalidate every time (cheap: a 304 by ETag), so an upgraded broker's
            # files are never mixed with a cached older version.
            (b"cache-control", b"no-cache"),
            (b"content-security-policy", self._policy),
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer"),
        ]
        if etag is not None:
            headers.append((b"etag", etag))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _if_none_match(scope: Scope) -> list[bytes]:
    for key, value in scope["headers"]:
        if key == b"if-none-match":
            return [v.strip() for v in value.split(b",")]
    return []
