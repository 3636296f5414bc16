"""Helpers for the browser tests: where Chromium is, how it is started, what pages reported."""
from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import pytest
from playwright.sync_api import BrowserContext, ConsoleMessage, Page

if TYPE_CHECKING:
    from tests.conftest import LocalStackProcess

DEFAULT_CHROMIUM = "/usr/bin/chromium"
# Headless as root in a container: no sandbox (Playwright's default too), no GPU, /tmp rather
# than a small /dev/shm, and no calls home (there is no network but the loopback).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking"]
# Playwright's default of 30 s per action is longer than any wait here should be.
ACTION_TIMEOUT_MS = 10_000
PHONE = {"width": 390, "height": 844}

T = TypeVar("T")


def separate_stack(local_dir: Path, env: dict[str, str] | None = None) -> Iterator[LocalStackProcess]:
    """A local stack of a test module's own (other settings or secrets than the session's), for
    `yield from` in a fixture."""
    from tests.conftest import LocalStackProcess, free_port

    stack = LocalStackProcess(free_port(), local_dir=local_dir, extra_env=env)
    try:
        stack.wait_ready()
        yield stack
    finally:
        stack.stop()


def chromium_executable() -> str:
    configured = os.environ.get("WEBIM_CHROMIUM", DEFAULT_CHROMIUM)
    path = shutil.which(configured) if not os.path.isabs(configured) else configured
    if path is None or not os.access(path, os.X_OK) or not Path(path).is_file():
        pytest.fail(
            f"browser tests need Chromium at {configured!r}, which is missing. Install Debian's package "
            f"(`apt-get install chromium`) or point WEBIM_CHROMIUM at a Chromium executable. "
            f"Never `playwright install`: browsers are not downloaded here.",
            pytrace=False,
        )
    return path


@dataclass
class BrowserErrors:
    """What the watched pages reported: uncaught exceptions, and console messages of type error."""

    page_errors: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)

    def watch(self, page: Page) -> None:
        def on_page_error(error: Exception) -> None:
            self.page_errors.append(f"{page.url}: {error}")

        def on_console(message: ConsoleMessage) -> None:
            if message.type == "error":
                location = message.location
                self.console_errors.append(f"{location.get('url', page.url)}:{location.get('lineNumber', '?')}: "
                                           f"{message.text}")

        page.on("pageerror", on_page_error)
        page.on("console", on_console)

    def take(self) -> tuple[list[str], list[str]]:
        """Returns and forgets what was recorded, for a test that provokes errors on purpose."""
        taken = (self.page_errors, self.console_errors)
        self.page_errors, self.console_errors = [], []
        return taken

    def assert_none(self, *, console: bool = True) -> None:
        """No uncaught page error and (unless console=False) no console error so far. Call it once the
        pages have been used since the error could happen (events are delivered during Playwright calls)."""
        assert self.page_errors == [], f"uncaught errors in the page: {self.page_errors}"
        if console:
            assert self.console_errors == [], f"console errors in the page: {self.console_errors}"


class NewContext(Protocol):
    def __call__(self, *, viewport: dict[str, int] | None = ..., **options: Any) -> BrowserContext: ...


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)` for a test that also drives the browser: in a thread of its own, since
    Playwright's sync API keeps its loop marked as running in the test's thread."""
    with ThreadPoolExecutor(max_workers=1) as thread:
        return thread.submit(asyncio.run, main).result()
