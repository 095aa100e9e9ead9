"""A real browser against a real broker: headless Chromium from Debian, driven by Playwright.

Playwright never downloads a browser here (`playwright install` is not used):
it drives Debian's /usr/bin/chromium through `executable_path`; `make test`
and `.ci/run` install the `chromium` package when it is missing. Each test
gets its own browser context (fixed viewport, locale and time zone) and fails
on any page error or console error. A screenshot of the page as the test left
it goes to `.artifacts/web/` (or `$TASKYARD_WEB_ARTIFACTS`), also when the test
fails.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.async_api import Browser, ConsoleMessage, Error, Page, async_playwright, expect

from tests.helpers import ROOT, Broker

CHROMIUM = Path(os.environ.get("TASKYARD_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(os.environ.get("TASKYARD_WEB_ARTIFACTS", ROOT / ".artifacts" / "web"))
# Generous for a loaded 2-core machine; each expect() still returns as soon as it holds.
expect.set_options(timeout=30_000)


@pytest.fixture
def broker_args() -> list[str]:
    return ["--http-listen", "127.0.0.1:0"]


@pytest.fixture(scope="session")
def chromium() -> Path:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (make test installs it)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return CHROMIUM


@pytest.fixture
async def browser(chromium: Path) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        instance = await playwright.chromium.launch(
            executable_path=str(chromium), args=["--disable-dev-shm-usage"]
        )
        try:
            yield instance
        finally:
            await instance.close()


@dataclass
class Problems:
    """Page errors and console errors seen while the test ran: any one fails the test."""

    seen: list[str] = field(default_factory=list)
    allowed: list[re.Pattern[str]] = field(default_factory=list)

    def allow(self, pattern: str) -> None:
        """A console error the test provokes on purpose (say, a refused request's status)."""
        self.allowed.append(re.compile(pattern))

    def console(self, message: ConsoleMessage) -> None:
        if message.type == "error" and not any(p.search(message.text) for p in self.allowed):
            self.seen.append(f"console error: {message.text} ({message.location})")

    def page_error(self, error: Error) -> None:
        self.seen.append(f"page error: {error}")


@dataclass
class Dashboard:
    """The page and where it points."""

    page: Page
    base: str
    problems: Problems
    navigations: int = 0

    async def open(self, route: str = "") -> None:
        await self.page.goto(f"{self.base}#/{route}")
        await self.live()

    async def live(self) -> None:
        """Wait until the tab's event stream is up: what happens next will show."""
        await expect(self.page.get_by_test_id("live-status")).to_have_attribute(
            "data-status", "live"
        )


def _artifact_name(request: pytest.FixtureRequest) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)[:150]


async def open_dashboard(
    browser: Browser, base: str, request: pytest.FixtureRequest
) -> AsyncIterator[Dashboard]:
    context = await browser.new_context(
        viewport={"width": 1280, "height": 900}, locale="en-US", timezone_id="UTC"
    )
    page = await context.new_page()
    problems = Problems()
    page.on("console", problems.console)
    page.on("pageerror", problems.page_error)
    dashboard = Dashboard(page, base, problems)

    def navigated(frame: object) -> None:
        if frame is page.main_frame:
            dashboard.navigations += 1

    page.on("framenavigated", navigated)
    try:
        yield dashboard
    finally:
        try:
            await page.screenshot(
                path=str(ARTIFACTS / f"{_artifact_name(request)}.png"),
                full_page=True,
                animations="disabled",
            )
        finally:
            await context.close()
    assert problems.seen == [], problems.seen


@pytest.fixture
async def dashboard(
    broker: Broker, browser: Browser, request: pytest.FixtureRequest
) -> AsyncIterator[Dashboard]:
    async for opened in open_dashboard(browser, f"http://127.0.0.1:{broker.http_port}/", request):
        yield opened


OpenPage = Callable[[str], Awaitable[Dashboard]]
