"""The browser reaches the local stack: the page loads, and its settings are fetchable from it."""
from __future__ import annotations

import asyncio
from typing import Any

import pytest
from playwright.sync_api import Page

from tests.browser.support import PHONE, BrowserErrors, NewContext, run_async

pytestmark = pytest.mark.e2e


def test_index_loads_with_a_title_and_config_is_fetchable(new_context: NewContext, base_url: str,
                                                          browser_errors: BrowserErrors) -> None:
    page = new_context(viewport=PHONE).new_page()

    response = page.goto("/")

    assert response is not None
    assert response.status == 200
    assert response.url == f"{base_url}/"
    assert page.locator("head > title").count() == 1
    assert page.title().strip() != ""
    config: dict[str, Any] = page.evaluate("""async () => {
        const response = await fetch("/config.json");
        return {status: response.status, body: await response.json()};
    }""")
    assert config["status"] == 200
    assert config["body"]["websocketUrl"].startswith("ws://")
    assert config["body"]["apiUrl"].startswith("http://")
    # console errors are not checked: Chromium asks for /favicon.ico, a 404 while frontend/ has none
    browser_errors.assert_none(console=False)


def test_contexts_are_separate_people(new_context: NewContext) -> None:
    alice, bob = new_context().new_page(), new_context(viewport=PHONE).new_page()
    for person in (alice, bob):
        person.goto("/config.json")
    alice.evaluate("localStorage.setItem('who', 'alice')")

    assert bob.evaluate("localStorage.getItem('who')") is None
    assert bob.viewport_size == PHONE


def test_asyncio_code_runs_beside_the_browser(page: Page) -> None:
    async def answer() -> int:
        await asyncio.sleep(0)
        return 42

    page.goto("/config.json")
    assert run_async(answer()) == 42
