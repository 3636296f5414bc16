"""Fixtures for end-to-end tests in a real browser: Debian's Chromium, driven by Playwright.

The browser is the system one (`/usr/bin/chromium`, or `$WEBIM_CHROMIUM`); Playwright never
downloads one (`playwright install` is never run). The pages come from the session's local
stack (`local_stack` in tests/conftest.py), the same process `make run` starts.

Each `new_context(...)` is a separate browser profile, so a separate person: own storage,
own cookies, own WebSocket. Every page in it is watched: uncaught page errors and console
errors are recorded in `browser_errors`, and a test during which a page threw an uncaught
error fails at teardown, even if it did not look.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, sync_playwright

from tests.browser.support import (
    ACTION_TIMEOUT_MS,
    CHROMIUM_ARGS,
    PHONE,
    BrowserErrors,
    NewContext,
    chromium_executable,
)

if TYPE_CHECKING:
    from tests.conftest import LocalStackProcess


# Package-scoped, not session-scoped: while Playwright's sync API is started, its event loop
# counts as running in this thread between calls, so `asyncio.run()` (the other e2e tests, the
# Python client) raises "cannot be called from a running event loop". One browser serves all
# the tests in tests/browser and is gone before the rest of the suite runs; inside these tests,
# run asyncio code with `support.run_async`. (The sync API also refuses to start inside a running
# loop: pytest runs tests outside any, no pytest-asyncio here, and anyio's plugin runs one only
# for tests marked `anyio`.)
@pytest.fixture(scope="package")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="package")
def browser(playwright: Playwright) -> Iterator[Browser]:
    instance = playwright.chromium.launch(executable_path=chromium_executable(), headless=True, args=CHROMIUM_ARGS)
    try:
        yield instance
    finally:
        instance.close()


@pytest.fixture(scope="session")
def base_url(local_stack: LocalStackProcess) -> str:
    """The local stack's origin, e.g. http://127.0.0.1:PORT: `/` is frontend/, `/config.json` its settings."""
    return local_stack.base_url


@pytest.fixture
def browser_errors() -> BrowserErrors:
    return BrowserErrors()


@pytest.fixture
def new_context(browser: Browser, base_url: str, browser_errors: BrowserErrors) -> Iterator[NewContext]:
    """A factory of isolated browser contexts (one per person), closed after the test.

    `new_context()` is a desktop-sized window, `new_context(viewport=PHONE)` a phone; other keyword
    arguments go to `Browser.new_context` (e.g. `locale`, `timezone_id`). Relative URLs such as
    `page.goto("/")` resolve against the local stack.
    """
    contexts: list[BrowserContext] = []

    def create(*, viewport: dict[str, int] | None = None, **options: Any) -> BrowserContext:
        if viewport is not None:
            options["viewport"] = viewport
        options.setdefault("base_url", base_url)  # another stack's, for tests that start their own
        context = browser.new_context(**options)
        context.set_default_timeout(ACTION_TIMEOUT_MS)
        context.on("page", browser_errors.watch)
        contexts.append(context)
        return context

    yield create
    for context in contexts:
        context.close()  # also delivers events still in flight
    if browser_errors.page_errors:
        pytest.fail(f"uncaught errors in the page during the test: {browser_errors.page_errors}", pytrace=False)


@pytest.fixture
def page(new_context: NewContext) -> Page:
    """One person's page on a phone-sized screen, for tests that need only one."""
    return new_context(viewport=PHONE).new_page()
