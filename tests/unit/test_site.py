"""The dashboard's page preloads every module it runs (no import waterfall), and the
site serves the package's files with their types, ETags and a strict CSP."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import broker.http
from broker.http.site import Site

STATIC = Path(broker.http.__file__).parent / "static"
LAZY = {"vendor/uPlot.esm.js"}  # imported when the first chart is drawn (lib/chart.js)


def test_the_page_preloads_every_module_it_imports() -> None:
    index = (STATIC / "index.html").read_text()
    preloaded = set(re.findall(r'<link rel="modulepreload" href="/static/([^"]+)">', index))
    modules = {str(p.relative_to(STATIC)) for p in [*STATIC.rglob("*.js"), *STATIC.rglob("*.mjs")]}
    assert preloaded == modules - LAZY


async def _get(
    site: Site, path: str, headers: list[tuple[bytes, bytes]] | None = None, method: str = "GET"
) -> dict[str, Any]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "headers": headers or []}
    await site(scope, receive, send)
    start, body = sent
    return {"status": start["status"], "headers": dict(start["headers"]), "body": body["body"]}


async def test_the_site_serves_the_page_and_its_files_and_nothing_else() -> None:
    site = Site()
    page = await _get(site, "/")
    assert page["status"] == 200 and b'<div id="app">' in page["body"]
    policy = page["headers"][b"content-security-policy"].decode()
    assert "script-src 'self' 'sha256-" in policy and "connect-src 'self'" in policy
    module = await _get(site, "/static/app.js")
    assert module["headers"][b"content-type"].startswith(b"text/javascript")
    again = await _get(site, "/static/app.js", [(b"if-none-match", module["headers"][b"etag"])])
    assert again["status"] == 304
    for missing in ("/static/../site.py", "/static/vendor/VENDOR.md", "/nope", "/static/"):
        assert (await _get(site, missing))["status"] == 404, missing
    assert (await _get(site, "/nope", method="POST"))["status"] == 404  # not an RPC either
    assert (await _get(site, "/", method="POST"))["status"] == 405
