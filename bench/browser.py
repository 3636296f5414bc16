"""The web client in real Chromium against the local stack: how long until a page is online, a
message from one browser to another, and a tab handover. `python -m bench.browser`.

Page loads and handovers are timed from Python around Playwright calls (each adds a few ms);
messages are timed inside the pages (submit -> element shown, with the browser's one clock). The
local stack runs moto on the same 2 cores as Chromium: upper bounds, not AWS latencies.
"""
from __future__ import annotations

import re
import time
from collections.abc import Callable

from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from bench.exchange import Stack
from bench.report import machine, percentile, update_section
from tests.browser import pages
from tests.browser.pages import ChatPage
from tests.browser.support import CHROMIUM_ARGS, chromium_executable

ROUNDS = 10


def signed_in(browser: Browser, base: str, name: str, block_websocket: bool = False) -> BrowserContext:
    """A person already signed in (as the browser tests do it), optionally behind a proxy that
    breaks every WebSocket."""
    context = pages.signed_in(lambda **options: browser.new_context(base_url=base, **options), base, name)
    context.set_default_timeout(30_000)
    if block_websocket:
        context.route_web_socket(re.compile(r"/ws(\?|$)"), lambda route: route.close(code=1011, reason="blocked"))
    return context


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return (time.perf_counter() - started) * 1000


def page_to_online(context: BrowserContext, transport: str) -> list[float]:
    page = context.new_page()
    samples = []
    for _ in range(ROUNDS):
        def load(page: Page = page) -> None:
            page.goto("/")
            expect(page.locator("#status")).to_have_attribute("data-state", "online")
            expect(page.locator("#status")).to_have_attribute("data-transport", transport)
        samples.append(timed(load))
    page.close()
    return samples


# Started in a page, resolved (with the page's clock, shared by all pages of one browser) when an
# element matching the selector has exactly that text.
WATCH = """([name, selector, text]) => {
  window[name] = new Promise((resolve) => {
    const found = () => [...document.querySelectorAll(selector)].some((el) => el.textContent === text);
    if (found()) { resolve(Date.now()); return; }
    new MutationObserver((_, observer) => {
      if (found()) { observer.disconnect(); resolve(Date.now()); }
    }).observe(document.body, { subtree: true, childList: true, attributes: true, characterData: true });
  });
}"""

SUBMIT = """(text) => {
  document.getElementById("input").value = text;
  const started = Date.now();
  document.getElementById("composer").requestSubmit();
  return started;
}"""


def message_round(sender: ChatPage, receiver: ChatPage, tag: str) -> tuple[list[float], list[float]]:
    """Send -> shown in the other browser, and -> delivered shown to the sender, timed in the pages."""
    shown, delivered = [], []
    for i in range(ROUNDS):
        text = f"{tag} {i}"
        receiver.page.evaluate(WATCH, ["shown", "#messages li.peer .text", text])
        sender.page.evaluate(WATCH, ["delivered", "#messages li.own[data-state=delivered] .text", text])
        started = sender.page.evaluate(SUBMIT, text)
        shown.append(receiver.page.evaluate("window.shown") - started)
        delivered.append(sender.page.evaluate("window.delivered") - started)
    return shown, delivered


def handover(browser: Browser, base: str, name: str, crash: bool) -> float:
    context = signed_in(browser, base, name)
    leader, follower = context.new_page(), context.new_page()
    ChatPage(leader).open()
    ChatPage(follower).open()
    expect(follower.locator("#app")).to_have_attribute("data-leader", "false")
    started = time.perf_counter()
    if crash:
        try:
            leader.goto("chrome://crash")
        except Exception:  # noqa: BLE001 - the renderer dies: that is the point
            pass
    else:
        leader.close()
    expect(follower.locator("#app")).to_have_attribute("data-leader", "true")
    expect(follower.locator("#status")).to_have_attribute("data-state", "online")
    elapsed = (time.perf_counter() - started) * 1000
    context.close()
    return elapsed


def row(label: str, samples: list[float]) -> str:
    p50, p90 = percentile(samples, 50), percentile(samples, 90)
    return f"| {label} | {len(samples)} | {p50:.0f} | {p90:.0f} | {max(samples):.0f} |"


def main() -> None:
    stack = Stack()
    try:
        with sync_playwright() as driver:
            browser = driver.chromium.launch(executable_path=chromium_executable(), args=CHROMIUM_ARGS)
            ws_online = page_to_online(signed_in(browser, stack.base, "bench-load"), "websocket")
            blocked = signed_in(browser, stack.base, "bench-load-lp", block_websocket=True)
            lp_online = page_to_online(blocked, "longpoll")

            alice = ChatPage(signed_in(browser, stack.base, "bench-alice").new_page()).open()
            bob = ChatPage(signed_in(browser, stack.base, "bench-bob").new_page()).open()
            alice.start_chat("bench-bob").send("hello")
            bob.open_conversation("user:bench-alice")
            ws_shown, ws_delivered = message_round(alice, bob, "ws")

            carol = ChatPage(signed_in(browser, stack.base, "bench-carol", block_websocket=True).new_page()).open()
            dave = ChatPage(signed_in(browser, stack.base, "bench-dave", block_websocket=True).new_page()).open()
            carol.start_chat("bench-dave").send("hello")
            dave.open_conversation("user:bench-carol")
            lp_shown, lp_delivered = message_round(carol, dave, "lp")

            closed = [handover(browser, stack.base, f"bench-tabs-{i}", crash=False) for i in range(5)]
            crashed = [handover(browser, stack.base, f"bench-crash-{i}", crash=True) for i in range(5)]
            browser.close()
    finally:
        stack.stop()

    body = "\n".join([
        f"Measured {machine()}, headless Chromium 150 against the local stack (`python -m bench.browser`).",
        "Milliseconds. Messages: timed inside the pages, from the composer's submit to the element",
        "shown (a MutationObserver), on the browser's one clock. Page loads and handovers: wall time",
        "around the Playwright calls (`expect` polls, so add up to ~100 ms of granularity).",
        "",
        "| what | n | p50 | p90 | max |",
        "|---|---|---|---|---|",
        row("page load to online, WebSocket", ws_online),
        row("page load to online, WebSocket blocked (fallback to long poll)", lp_online),
        row("send in one browser to the message shown in another, WebSocket", ws_shown),
        row("... to ✓✓ delivered shown to the sender, WebSocket", ws_delivered),
        row("send to the message shown in another, long poll both sides", lp_shown),
        row("... to ✓✓ delivered shown to the sender, long poll", lp_delivered),
        row("leader tab closed to the other tab online with the connection", closed),
        row("leader tab crashed (renderer killed) to the other tab online", crashed),
    ])
    update_section("browser", body)
    print(body)


if __name__ == "__main__":
    main()
