"""Notifications in real Chromium (issue 15, point 4): while hidden, the tab holding the
connection raises one notification per conversation burst, never for my own messages nor from a
second tab of mine; the title and the widget's button count the unread; a click opens the
conversation; the permission is asked only from the button.

How "hidden" is made: headless Chromium reports every page as visible, whatever is tried (a
second page brought to front, `Page.setWebLifecycleState`, `Emulation.setFocusEmulationEnabled`,
a minimised window through `Browser.setWindowBounds`: `document.visibilityState` stays
"visible" and no `visibilitychange` fires). So, as the last resort, an init script overrides
`Document.prototype.visibilityState`/`hidden` and `__setHidden(bool)` dispatches
`visibilitychange`, as the browser does when a tab goes to the background. Everything that
reads visibility (the notifier, the tabs' election, the read marks) reads these.

Notifications are recorded by wrapping `window.Notification` (a subclass: the real one still
makes each notification; permission and requestPermission are the real ones, counted)."""
from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from playwright.sync_api import BrowserContext, Page, expect

from tests.browser.consent import introduce
from tests.browser.pages import ChatPage, GroupPage, Widget, signed_in, unique
from tests.browser.support import BrowserErrors, NewContext
from tests.conftest import free_port

pytestmark = pytest.mark.e2e

INIT = """(() => {
  let hidden = false;
  Object.defineProperty(Document.prototype, "visibilityState",
    { configurable: true, get: () => (hidden ? "hidden" : "visible") });
  Object.defineProperty(Document.prototype, "hidden", { configurable: true, get: () => hidden });
  window.__setHidden = (value) => { hidden = value; document.dispatchEvent(new Event("visibilitychange")); };
  const Real = window.Notification;
  window.__notifications = [];
  window.__permissionRequests = 0;
  class Recorded extends Real {
    constructor(title, options = {}) {
      super(title, options);
      window.__notifications.push({ title, body: options.body, tag: options.tag, notification: this });
    }
    static requestPermission(...args) { window.__permissionRequests += 1; return Real.requestPermission(...args); }
  }
  window.Notification = Recorded;
})();"""


def notifying(context: BrowserContext, base_url: str, *, grant: bool = True) -> BrowserContext:
    if grant:
        context.grant_permissions(["notifications"], origin=base_url)
    context.add_init_script(INIT)
    return context


def notifications(page: Page) -> list[dict[str, Any]]:
    recorded: list[dict[str, Any]] = page.evaluate(
        "window.__notifications.map(({ title, body, tag }) => ({ title, body, tag }))")
    return recorded


def hide(*pages: Page) -> None:
    for page in pages:
        page.evaluate("window.__setHidden(true)")


def show(page: Page) -> None:
    page.evaluate("window.__setHidden(false)")


def test_a_hidden_leader_tab_notifies_once_per_burst_and_never_for_my_own(
        new_context: NewContext, base_url: str, browser_errors: BrowserErrors) -> None:
    alice_name, bob_name, carol_name = unique("alice"), unique("bob"), unique("carol")
    introduce(base_url, alice_name, bob_name)  # bob wrote first: alice may add him to a group (§13.2)
    context = notifying(signed_in(new_context, base_url, alice_name), base_url)
    tab1 = ChatPage(context.new_page()).open()
    tab2 = ChatPage(context.new_page()).open()
    expect(tab2.page.locator("#app")).to_have_attribute("data-leader", "false")
    assert tab1.is_leader()
    # granted: nothing to enable in the settings menu, the sound toggle (off) offered instead
    tab1.page.click("#settings-toggle")
    expect(tab1.page.locator("#notify-sound")).to_be_visible()
    expect(tab1.page.locator("#notify-sound")).not_to_be_checked()
    expect(tab1.page.locator("#notify-enable")).to_be_hidden()
    tab1.page.keyboard.press("Escape")
    bob = ChatPage(signed_in(new_context, base_url, bob_name).new_page()).open()
    phone = GroupPage(signed_in(new_context, base_url, alice_name).new_page()).open()  # another device of mine

    hide(tab1.page, tab2.page)
    # Mine, from the follower tab (through the leader): no notification. From another device: a
    # group I create there and my message in it, both pushed to this device (protocol §13: the
    # sender's other connections get group messages; a 1:1 one they would only pull): none either.
    tab2.start_chat(carol_name).send("from my second tab")
    expect(tab1.row(f"user:{carol_name}").locator(".preview")).to_have_text("You: from my second tab")
    group_id = phone.create_group("Bike parts", [bob_name])
    phone.send("from my phone")
    expect(tab1.row(group_id).locator(".preview")).to_have_text("You: from my phone")
    expect(tab2.row(group_id).locator(".preview")).to_have_text("You: from my phone")

    # A burst of three from Bob: one notification, in the leader only; the titles count three.
    bob.start_chat(alice_name)
    for text in ("one", "two", "three"):
        bob.send(text)
    for tab in (tab1, tab2):
        expect(tab.page).to_have_title("(3) WebIM")
    assert notifications(tab2.page) == [], "a follower tab never notifies"
    conversation_id = tab1.page.evaluate("window.__notifications[0].tag")
    assert notifications(tab1.page) == [{"title": bob_name, "body": "one", "tag": conversation_id}]

    # The click focuses the window and opens Bob's conversation; shown, it is read: title restored.
    tab1.page.evaluate("window.__notifications[0].notification.onclick()")
    expect(tab1.page.locator("#app")).to_have_attribute("data-peer", f"user:{bob_name}")
    expect(tab1.peer("three")).to_have_count(1)
    show(tab1.page)
    for tab in (tab1, tab2):
        expect(tab.page).to_have_title("WebIM")

    # Read: the burst is over, so the next message notifies again (once).
    hide(tab1.page)
    bob.send("four")
    expect(tab1.page).to_have_title("(1) WebIM")
    assert [n["body"] for n in notifications(tab1.page)] == ["one", "four"]

    # Another tab of mine on screen (the follower shown, the leader still hidden): no notification,
    # in a conversation with no burst yet. (The leader decides before it passes the message on.)
    show(tab2.page)
    carol = ChatPage(signed_in(new_context, base_url, carol_name).new_page()).open()
    carol.open_conversation(f"user:{alice_name}").send("are you there?")
    expect(tab2.peer("are you there?")).to_have_count(1)
    assert [n["body"] for n in notifications(tab1.page)] == ["one", "four"]
    assert notifications(tab2.page) == []
    browser_errors.assert_none()


def test_the_permission_is_asked_only_from_the_button(new_context: NewContext, base_url: str,
                                                      browser_errors: BrowserErrors) -> None:
    context = notifying(signed_in(new_context, base_url, unique("dora")), base_url, grant=False)
    chat = ChatPage(context.new_page()).open()
    expect(chat.page.locator("#app")).to_have_attribute("data-ready", "true")
    enable = chat.page.locator("#notify-enable")
    chat.page.click("#settings-toggle")
    expect(enable).to_be_visible()
    expect(chat.page.locator("#notify-sound")).to_be_hidden()
    assert chat.page.evaluate("[Notification.permission, window.__permissionRequests]") == ["default", 0]
    enable.click()
    chat.page.wait_for_function("window.__permissionRequests === 1")
    browser_errors.assert_none()


@pytest.fixture
def shop(base_url: str) -> Iterator[str]:
    """A host site of its own origin (another port on the loopback: a page Playwright fulfilled
    itself would count as public, and Chromium's local network access checks would then block
    its WebSocket to the stack). /<seller>/<0|1>.html embeds the widget, 1: with data-title-count."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            _, seller, page = self.path.split("/")
            opt_in = " data-title-count" if page == "1.html" else ""
            body = (f'<!doctype html><meta charset="utf-8"><title>Listing · Shop</title><link rel="icon" href="data:,">'
                    f'<h1>A listing</h1><script src="{base_url}/widget.js" data-seller="{seller}" '
                    f'data-seller-name="Seller"{opt_in} async></script>').encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("title_count", [True, False])
def test_the_widget_notifies_counts_on_its_button_and_opens_on_click(
        title_count: bool, new_context: NewContext, base_url: str, shop: str, browser_errors: BrowserErrors) -> None:
    seller_name = unique("seller")
    buyer_page = notifying(new_context(), shop).new_page()  # the permission is the host page's origin's
    buyer_page.goto(f"{shop}/{seller_name}/{int(title_count)}.html")
    widget = Widget(buyer_page).open()
    expect(buyer_page.locator("#webim-widget .notify.enable")).to_be_hidden()  # granted already
    sound = buyer_page.locator("#webim-widget .notify.sound")
    expect(sound).to_have_attribute("aria-pressed", "false")  # off by default
    sound.click()
    expect(sound).to_have_attribute("aria-pressed", "true")
    widget.send("Does it come with lights?")
    expect(widget.own("lights")).to_have_attribute("data-state", "sent")
    buyer = ChatPage(buyer_page).me
    buyer_page.click("#webim-widget .close")

    seller = ChatPage(signed_in(new_context, base_url, seller_name).new_page()).open()
    seller.open_conversation(buyer)
    hide(buyer_page)
    seller.send("Yes, both")
    seller.send("and a bell")
    badge = buyer_page.locator("#webim-widget .badge")
    expect(badge).to_have_text("2")
    if title_count:
        expect(buyer_page).to_have_title("(2) Listing · Shop")
    else:
        assert buyer_page.title() == "Listing · Shop", "without data-title-count the host's title is never touched"
    recorded = notifications(buyer_page)
    assert [(n["title"], n["body"]) for n in recorded] == [(seller_name, "Yes, both")]

    buyer_page.evaluate("window.__notifications[0].notification.onclick()")  # opens the panel on it
    expect(buyer_page.locator("#webim-widget .panel")).to_be_visible()
    expect(widget.peer("and a bell")).to_have_count(1)
    show(buyer_page)
    expect(badge).to_be_hidden()
    expect(buyer_page).to_have_title("Listing · Shop")
    browser_errors.assert_none()
