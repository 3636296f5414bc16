"""Security headers on the pages (issue 11, finding 9): a strict Content-Security-Policy that the
chat page and the widget demo run under without one violation, no framing of the chat page, no
referrer. CloudFront sets the same (tests/test_infra_template.py)."""
from __future__ import annotations

import re

import httpx
import pytest
from playwright.sync_api import BrowserContext, Frame, Page, expect

from tests.browser.pages import ChatPage, Widget, unique
from tests.browser.support import BrowserErrors, NewContext

pytestmark = pytest.mark.e2e

# Every violation the page sees (also inside the widget's shadow root: the event is composed).
RECORD_VIOLATIONS = """
window.__csp = [];
window.addEventListener("securitypolicyviolation",
  (e) => window.__csp.push(`${e.violatedDirective} ${e.blockedURI}`), true);
"""


def watched(context: BrowserContext) -> Page:
    context.add_init_script(RECORD_VIOLATIONS)
    return context.new_page()


def violations(page: Page) -> list[str]:
    found: list[str] = page.evaluate("window.__csp")
    return found


@pytest.mark.parametrize("path", ["/", "/demo/", "/widget.js", "/app/chat.js"])
def test_pages_and_files_carry_the_security_headers(base_url: str, path: str) -> None:
    headers = httpx.get(base_url + path).raise_for_status().headers
    policy = headers["content-security-policy"]
    assert "script-src 'self';" in policy and "'unsafe-inline'" not in policy and "'unsafe-eval'" not in policy
    assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
    assert headers["x-frame-options"] == "DENY"
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["x-content-type-options"] == "nosniff"


def test_chat_page_and_widget_demo_run_with_no_csp_violation(new_context: NewContext,
                                                              browser_errors: BrowserErrors) -> None:
    seller_name = unique("seller")
    seller = ChatPage(watched(new_context())).sign_in(seller_name)
    buyer_page = watched(new_context())
    buyer_page.goto("/demo/")
    # the demo's widget talks to seller-7; this test's seller is reached from the chat page
    widget = Widget(buyer_page).open()
    widget.send("csp check from the widget")
    expect(widget.own("csp check")).to_have_attribute("data-state", re.compile("sent|delivered"))
    seller.start_chat("seller-7").send("csp check from the chat page")
    expect(seller.own("csp check from the chat page")).to_have_attribute("data-state", re.compile("sent|delivered"))
    assert violations(seller.page) == []
    assert violations(buyer_page) == []
    browser_errors.assert_none()  # Chromium also logs each refusal as a console error


def framed(framer: Page, url: str) -> Frame:
    framer.evaluate("""(src) => new Promise((resolve) => {
        const frame = document.createElement("iframe");
        frame.onload = resolve;
        frame.src = src;
        document.body.append(frame);
    })""", url)
    return framer.frames[-1]


def test_chat_page_cannot_be_framed_by_another_origin(new_context: NewContext, base_url: str,
                                                      browser_errors: BrowserErrors) -> None:
    framer = new_context().new_page()
    # a page of another origin (localhost, not 127.0.0.1) with no policy of its own
    framer.goto(base_url.replace("127.0.0.1", "localhost") + "/config.json")
    # the check works: a response without the headers (config.json) is shown in a frame
    assert framed(framer, f"{base_url}/config.json").evaluate("document.body.innerText").startswith("{")
    chat = framed(framer, f"{base_url}/")
    assert chat.url != f"{base_url}/", "the chat page loaded inside another origin's frame"
    browser_errors.take()  # Chromium reports the refusal
