"""Debian's Chromium driven by Playwright, and pages that record what they do.

Playwright's own browser download cannot work on the machines this runs on, so the
tests launch the system's chromium (`.ci/run` installs it).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Page,
    Route,
    expect,
    sync_playwright,
)

from tests.api.conftest import PredictorProcess

CHROMIUM = Path("/usr/bin/chromium")
# Long enough for a predictor under load to reload a version and the page to poll.
WAIT_MS = 30_000
# Matches once the page shows the answer to its latest prediction request. Waits
# are selectors, not wait_for_function: its polling evaluates strings, which the
# page's Content-Security-Policy (no 'unsafe-eval') refuses.
SETTLED = '#prediction[data-state="ok"]:not([aria-busy])'


# Package scope: while sync_playwright runs, its event loop is the thread's running
# loop, and every asyncio.run() in a later test package would fail.
@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    if shutil.which(str(CHROMIUM)) is None:
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM))
        yield launched
        launched.close()


@dataclass
class TryItPage:
    """One browser tab on a predictor's /ui/, with every request it made."""

    page: Page
    origin: str
    requests: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)

    def open(self) -> None:
        self.page.goto(f"{self.origin}/ui/")

    def status(self) -> str:
        return str(self.page.locator("#status").get_attribute("data-state"))

    def wait_for_status(self, state: str) -> None:
        self.page.wait_for_selector(f'#status[data-state="{state}"]', timeout=WAIT_MS)

    def prediction(self) -> str:
        """The label shown once the latest prediction has been answered."""
        self.page.locator(SETTLED).wait_for(timeout=WAIT_MS)
        return self.page.locator("#predicted-label").inner_text()

    def wait_for_label(self, label: str) -> None:
        self.page.locator(SETTLED).wait_for(timeout=WAIT_MS)
        expect(self.page.locator("#predicted-label")).to_have_text(
            label, timeout=WAIT_MS
        )

    def foreign_requests(self) -> list[str]:
        return [url for url in self.requests if not self._same_origin(url)]

    def _same_origin(self, url: str) -> bool:
        # A download the page builds itself is a blob: URL of the page's own origin.
        if url.startswith("blob:"):
            url = url.removeprefix("blob:")
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.netloc}" == self.origin


MetadataChange = Callable[[dict[str, Any]], None]


@pytest.fixture
def open_page(browser: Browser) -> Iterator[Callable[..., TryItPage]]:
    """Open the page of a predictor in a fresh browser context; after the test, no
    script error happened and no request left the predictor's origin.

    ``metadata`` changes the server's metadata answers on their way to the page: a
    stand-in for models the predictor cannot serve yet (another schema).
    """
    pages: list[TryItPage] = []

    def open_on(
        server: PredictorProcess, metadata: MetadataChange | None = None
    ) -> TryItPage:
        context = browser.new_context(viewport={"width": 1200, "height": 900})
        tab = TryItPage(context.new_page(), f"http://127.0.0.1:{server.port}")
        context.on("request", lambda request: tab.requests.append(request.url))
        tab.page.on("console", lambda message: _record_error(tab, message))
        tab.page.on("pageerror", lambda error: tab.page_errors.append(str(error)))
        if metadata is not None:
            tab.page.route("**/v1/models/*/metadata", _changed(metadata))
        pages.append(tab)
        tab.open()
        return tab

    yield open_on
    for tab in pages:
        tab.page.context.close()
    for tab in pages:
        assert tab.page_errors == [], tab.page_errors
        assert tab.foreign_requests() == [], tab.foreign_requests()


def _changed(change: MetadataChange) -> Callable[[Route], None]:
    def handle(route: Route) -> None:
        response = route.fetch()
        body = response.json()
        change(body)
        route.fulfill(response=response, json=body)

    return handle


def _record_error(tab: TryItPage, message: ConsoleMessage) -> None:
    if message.type == "error":
        tab.console_errors.append(f"{message.text} at {message.location}")
