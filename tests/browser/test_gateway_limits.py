"""The gateway's idle and lifetime limits, shortened on a local stack of its own (6 s idle, 16 s
lifetime instead of 10 minutes and 2 hours): the page's keepalive and planned reconnect keep a
chat going across them without losing or repeating a message, and without ever going offline."""
from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import BrowserContext, WebSocket, expect

from tests.browser.pages import ChatPage, signed_in, unique
from tests.browser.support import BrowserErrors, NewContext, separate_stack
from tests.conftest import LocalStackProcess

pytestmark = pytest.mark.e2e

IDLE_SECONDS, MAX_SECONDS = 6, 16  # a planned reconnect at 12 s leaves 4 s to open the next

# Every state the status line shows, in order, from the moment the page starts.
RECORD_STATES = """
window.seenStates = [];
addEventListener("DOMContentLoaded", () => {
  const status = document.getElementById("status");
  new MutationObserver(() => window.seenStates.push(status.dataset.state))
    .observe(status, { attributes: true, attributeFilter: ["data-state"] });
});
"""


@pytest.fixture(scope="module")
def short_lived_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStackProcess]:
    yield from separate_stack(tmp_path_factory.mktemp("short"), {
        "WEBIM_LOCAL_WS_IDLE_SECONDS": str(IDLE_SECONDS), "WEBIM_LOCAL_WS_MAX_SECONDS": str(MAX_SECONDS),
        "ACK_TIMEOUT_SECONDS": "1"})


def test_keepalive_and_planned_reconnects_carry_a_chat_across_the_gateway_limits(
        new_context: NewContext, short_lived_stack: LocalStackProcess, browser_errors: BrowserErrors) -> None:
    base = short_lived_stack.base_url

    def context(**options: Any) -> BrowserContext:
        created: BrowserContext = new_context(**options)
        created.add_init_script(RECORD_STATES)
        return created

    alice_name, bob_name, carol_name = unique("alice"), unique("bob"), unique("carol")
    pages = {name: signed_in(context, base, name).new_page() for name in (alice_name, bob_name, carol_name)}
    sockets: dict[str, list[WebSocket]] = {name: [] for name in pages}
    for name, page in pages.items():
        def record(socket: WebSocket, recorded: list[WebSocket] = sockets[name]) -> None:
            recorded.append(socket)

        page.on("websocket", record)
    alice, bob, carol = (ChatPage(pages[n]).open() for n in (alice_name, bob_name, carol_name))
    assert pages[alice_name].evaluate("fetch('/config.json').then(r => r.json())")["websocketLimits"] == {
        "idleSeconds": IDLE_SECONDS, "maxSeconds": MAX_SECONDS}

    alice.start_chat(bob_name)
    sent: list[str] = []
    started = time.monotonic()
    while time.monotonic() - started < 2.2 * MAX_SECONDS:  # two planned reconnects each
        sent.append(f"tick {len(sent):02d}")
        alice.send(sent[-1])
        time.sleep(1)
    bob.open_conversation(f"user:{alice_name}")
    expect(bob.peer(sent[-1])).to_have_count(1)
    assert bob.texts() == sent, "every message once, in order"
    expect(alice.own(sent[-1]).locator(".tick")).to_have_attribute("aria-label", "delivered")

    for name, page in pages.items():
        assert len(sockets[name]) >= 3, f"{name}: a fresh connection before each lifetime ran out"
        states = page.evaluate("window.seenStates")
        assert "offline" not in states, f"{name} (carol is idle throughout) went offline: {states}"
    browser_errors.assert_none()
