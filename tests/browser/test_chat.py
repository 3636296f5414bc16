"""The web client end to end, in real headless Chromium against the local stack: people chat
both ways with receipts, tabs share one connection and hand it over, long poll carries the chat
when WebSocket is blocked, a visitor stays the same visitor, the widget reaches the seller."""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page, WebSocket, WebSocketRoute, expect

from tests.browser.pages import ChatPage, Widget, signed_in, unique
from tests.browser.support import PHONE, BrowserErrors, NewContext

pytestmark = pytest.mark.e2e

WS = re.compile(r"/ws(\?|$)")


def open_sockets(*pages: Page) -> dict[int, list[WebSocket]]:
    """Start recording each page's WebSockets (call before the page connects)."""
    sockets: dict[int, list[WebSocket]] = {}
    for index, page in enumerate(pages):
        recorded: list[WebSocket] = []
        sockets[index] = recorded

        def record(socket: WebSocket, recorded: list[WebSocket] = recorded) -> None:
            recorded.append(socket)

        page.on("websocket", record)
    return sockets


def still_open(sockets: list[WebSocket]) -> int:
    return sum(1 for socket in sockets if not socket.is_closed())


def test_two_people_chat_both_ways_with_delivered_receipts(new_context: NewContext,
                                                           browser_errors: BrowserErrors) -> None:
    alice_name, bob_name = unique("alice"), unique("bob")
    alice = ChatPage(new_context().new_page()).sign_in(alice_name)
    bob = ChatPage(new_context(viewport=PHONE).new_page()).sign_in(bob_name)

    alice.start_chat(bob_name).send("Hi Bob, is the bike still for sale?")
    expect(alice.own("Hi Bob").locator(".tick")).to_have_attribute("aria-label", "delivered")

    # Bob (phone layout: the list, then the conversation) sees it unread, opens it, answers.
    row = bob.row(f"user:{alice_name}")
    expect(row.locator(".unread")).to_have_text("1")
    expect(row.locator(".preview")).to_have_text("Hi Bob, is the bike still for sale?")
    expect(bob.page.locator("#thread")).to_be_hidden()
    bob.open_conversation(f"user:{alice_name}")
    expect(bob.page.locator(".sidebar")).to_be_hidden()
    expect(bob.peer("Hi Bob")).to_have_count(1)
    bob.send("Yes, come and see it 🚲")
    expect(alice.peer("come and see it 🚲")).to_have_count(1)
    expect(bob.own("come and see it").locator(".tick")).to_have_attribute("aria-label", "delivered")
    expect(alice.row(f"user:{bob_name}").locator(".unread")).to_be_hidden()  # open and visible: read

    bob.page.click("#back")
    expect(bob.row(f"user:{alice_name}").locator(".unread")).to_be_hidden()
    assert alice.texts() == ["Hi Bob, is the bike still for sale?", "Yes, come and see it 🚲"]

    # After a reload the receipt is not pushed again: the conversation list says how far Bob got.
    alice.page.reload()
    alice.open_conversation(f"user:{bob_name}")
    expect(alice.own("Hi Bob").locator(".tick")).to_have_attribute("aria-label", "delivered")
    browser_errors.assert_none()


def test_text_is_shown_as_text_never_as_html_and_long_unicode_arrives_intact(new_context: NewContext,
                                                                           browser_errors: BrowserErrors) -> None:
    alice_name, bob_name = unique("alice"), unique("bob")
    alice = ChatPage(new_context().new_page()).sign_in(alice_name)
    bob = ChatPage(new_context().new_page()).sign_in(bob_name)
    attack = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script><b>bold</b>'
    # 3,400 code points (the family emoji is 7), 8 KB of UTF-8; 4,000 is the limit
    long_text = "Ünïcödé 中文 עברית 👩‍👩‍👧‍👦 " * 120 + "😀" * 400

    alice.start_chat(bob_name).send(attack)
    expect(alice.own("onerror")).to_have_count(1)
    alice.send("😀" * 4001)  # over the limit: refused in the page, nothing sent
    expect(alice.page.locator("#notice")).to_have_text("Too long: 4001 of 4000 characters")
    alice.send(long_text)
    expect(alice.own("😀😀😀").locator(".tick")).to_have_attribute("aria-label", "delivered")
    expect(alice.page.locator("#notice")).to_have_text("")

    bob.open_conversation(f"user:{alice_name}")
    expect(bob.peer("😀😀😀")).to_have_count(1)
    assert bob.texts() == [attack, long_text]
    assert bob.page.locator("#messages img, #messages script, #messages b").count() == 0
    assert bob.page.evaluate("window.pwned") is None
    browser_errors.assert_none()


def test_tabs_of_one_person_share_one_connection_and_both_update(new_context: NewContext, base_url: str,
                                                                  browser_errors: BrowserErrors) -> None:
    carol_name, dave_name = unique("carol"), unique("dave")
    context = signed_in(new_context, base_url, carol_name)
    first, second = context.new_page(), context.new_page()
    sockets = open_sockets(first, second)
    tab1 = ChatPage(first).open()
    tab2 = ChatPage(second).open()
    dave = ChatPage(new_context().new_page()).sign_in(dave_name)

    expect(second.locator("#me-name")).to_have_text(carol_name)
    assert [tab1.is_leader(), tab2.is_leader()] == [True, False]
    expect(tab2.status).to_have_text("online · through another tab")
    assert (still_open(sockets[0]), still_open(sockets[1])) == (1, 0), "exactly one tab holds the connection"

    dave.start_chat(carol_name).send("hello carol")
    for tab in (tab1, tab2):
        expect(tab.row(f"user:{dave_name}").locator(".unread")).to_have_text("1")

    # The tab without the connection sends; both tabs show it, and the read mark reaches both.
    tab2.open_conversation(f"user:{dave_name}").send("sent from the second tab")
    expect(dave.peer("sent from the second tab")).to_have_count(1)
    expect(tab2.own("second tab").locator(".tick")).to_have_attribute("aria-label", "delivered")
    expect(tab1.row(f"user:{dave_name}").locator(".unread")).to_be_hidden()
    expect(tab1.row(f"user:{dave_name}").locator(".preview")).to_have_text("You: sent from the second tab")
    tab1.open_conversation(f"user:{dave_name}")
    expect(tab1.own("second tab").locator(".tick")).to_have_attribute("aria-label", "delivered")
    assert tab1.texts() == tab2.texts() == ["hello carol", "sent from the second tab"]
    assert (still_open(sockets[0]), still_open(sockets[1])) == (1, 0)
    browser_errors.assert_none()


def test_without_broadcast_channel_and_web_locks_tabs_share_through_local_storage(
        new_context: NewContext, base_url: str, browser_errors: BrowserErrors) -> None:
    """Older browsers: the bus falls back to `storage` events and the election to a lease."""
    mia_name, ned_name = unique("mia"), unique("ned")
    context = signed_in(new_context, base_url, mia_name)
    context.add_init_script("delete window.BroadcastChannel;"
                            "Object.defineProperty(Navigator.prototype, 'locks', {get: () => undefined});")
    first, second = context.new_page(), context.new_page()
    sockets = open_sockets(first, second)
    tab1, tab2 = ChatPage(first).open(), ChatPage(second).open()
    assert first.evaluate("typeof BroadcastChannel") == "undefined" and first.evaluate("navigator.locks") is None
    expect(second.locator("#app")).to_have_attribute("data-leader", "false")
    assert (still_open(sockets[0]), still_open(sockets[1])) == (1, 0)

    ned = ChatPage(new_context().new_page()).sign_in(ned_name)
    ned.start_chat(mia_name).send("hello mia")
    tab2.open_conversation(f"user:{ned_name}").send("answered from the second tab")
    expect(ned.peer("answered from the second tab")).to_have_count(1)
    expect(tab2.own("answered").locator(".tick")).to_have_attribute("aria-label", "delivered")
    tab1.open_conversation(f"user:{ned_name}")
    expect(tab1.own("answered")).to_have_count(1)

    first.close()  # the lease is given up on the way out
    ned.send("after the handover")
    expect(tab2.page.locator("#app")).to_have_attribute("data-leader", "true", timeout=5000)
    expect(tab2.peer("after the handover")).to_have_count(1)
    assert tab2.texts() == ["hello mia", "answered from the second tab", "after the handover"]
    browser_errors.assert_none()


def test_scrolling_up_loads_older_history_in_order(new_context: NewContext, base_url: str,
                                                   browser_errors: BrowserErrors) -> None:
    olga_name, pete_name = unique("olga"), unique("pete")
    olga = ChatPage(signed_in(new_context, base_url, olga_name).new_page()).open()
    olga.start_chat(pete_name)
    for i in range(45):
        olga.send(f"line {i:02d}")
        expect(olga.own(f"line {i:02d}")).to_have_attribute("data-state", re.compile("sent|delivered"))
    pete = ChatPage(signed_in(new_context, base_url, pete_name).new_page()).open()
    pete.open_conversation(f"user:{olga_name}")
    expect(pete.messages()).to_have_count(45)  # all unacked: the offline pull brought them
    pete.page.reload()  # acked now: this time the conversation comes from history, page by page
    pete.open_conversation(f"user:{olga_name}")
    expect(pete.messages()).to_have_count(30)  # the newest page
    assert pete.texts()[-1] == "line 44"
    pete.page.locator("#scroller").evaluate("s => { s.scrollTop = 0; }")
    expect(pete.messages()).to_have_count(45)
    assert pete.texts() == [f"line {i:02d}" for i in range(45)]
    first_visible = pete.page.locator("#scroller").evaluate("s => s.scrollTop")
    assert first_visible > 0, "the view stays where the reader was, older lines above it"
    browser_errors.assert_none()


@pytest.mark.parametrize("ending", ["closed", "crashed", "hung"])
def test_when_the_leader_tab_closes_crashes_or_hangs_another_takes_over_without_loss(
        ending: str, new_context: NewContext, base_url: str, browser_errors: BrowserErrors) -> None:
    erin_name, frank_name = unique("erin"), unique("frank")
    context = signed_in(new_context, base_url, erin_name)
    first, second = context.new_page(), context.new_page()
    sockets = open_sockets(first, second)
    ChatPage(first).open()
    follower = ChatPage(second).open()
    frank = ChatPage(new_context().new_page()).sign_in(frank_name)
    frank.start_chat(erin_name).send("before")
    follower.open_conversation(f"user:{frank_name}")
    expect(follower.peer("before")).to_have_count(1)

    if ending == "closed":
        first.close()
    elif ending == "crashed":
        with pytest.raises(PlaywrightError):
            first.goto("chrome://crash")  # the renderer process dies; the browser frees its lock
    else:
        first.evaluate("setTimeout(() => { for (;;) {} }, 0)")  # alive but stuck: it keeps the lock
    for text in ("during one", "during two", "during three"):
        frank.send(text)
    follower.send("from the survivor")

    # closed or crashed: at once; hung: after 6 s without the leader's heartbeat
    expect(follower.page.locator("#app")).to_have_attribute("data-leader", "true", timeout=10_000)
    expect(follower.peer("during three")).to_have_count(1)
    expect(follower.own("from the survivor").locator(".tick")).to_have_attribute("aria-label", "delivered")
    expect(frank.peer("from the survivor")).to_have_count(1)
    assert still_open(sockets[1]) == 1, "the remaining tab opened the connection"
    expected = ["before", "during one", "during two", "during three", "from the survivor"]
    assert sorted(follower.texts()) == sorted(expected), "each message once"
    browser_errors.assert_none()


def test_with_websocket_blocked_long_poll_carries_the_chat(new_context: NewContext,
                                                           browser_errors: BrowserErrors) -> None:
    gina_name, hank_name = unique("gina"), unique("hank")
    blocked = new_context()
    # A proxy that breaks every WebSocket: the page's socket closes before it can carry anything.
    blocked.route_web_socket(WS, lambda route: route.close(code=1011, reason="blocked"))
    gina = ChatPage(blocked.new_page()).sign_in(gina_name)
    expect(gina.status).to_have_attribute("data-transport", "longpoll")
    expect(gina.status).to_have_text("online · long poll")
    hank = ChatPage(new_context().new_page()).sign_in(hank_name)

    gina.start_chat(hank_name).send("over long poll")
    expect(gina.own("over long poll").locator(".tick")).to_have_attribute("aria-label", "delivered")
    hank.open_conversation(f"user:{gina_name}").send("and back")
    expect(gina.peer("and back")).to_have_count(1)
    expect(hank.own("and back").locator(".tick")).to_have_attribute("aria-label", "delivered")
    browser_errors.assert_none()


def test_a_dropped_connection_reconnects_and_catches_up_everything_once(new_context: NewContext,
                                                                       browser_errors: BrowserErrors) -> None:
    ivy_name, jack_name = unique("ivy"), unique("jack")
    routes: list[WebSocketRoute] = []

    def through(route: WebSocketRoute) -> None:
        routes.append(route)
        route.connect_to_server()

    context = new_context()
    context.route_web_socket(WS, through)
    ivy = ChatPage(context.new_page()).sign_in(ivy_name)
    jack = ChatPage(new_context().new_page()).sign_in(jack_name)
    jack.start_chat(ivy_name).send("first")
    ivy.open_conversation(f"user:{jack_name}")
    expect(ivy.peer("first")).to_have_count(1)

    connections = len(routes)
    routes[-1].close(code=1001, reason="Going away")  # the gateway drops the connection
    for text in ("while away 1", "while away 2"):
        jack.send(text)
    expect(ivy.peer("while away 2")).to_have_count(1)
    assert len(routes) > connections, "a new connection was opened"
    assert ivy.texts() == ["first", "while away 1", "while away 2"]
    expect(jack.own("while away 2").locator(".tick")).to_have_attribute("aria-label", "delivered")
    browser_errors.assert_none()


def test_an_unanswered_send_fails_visibly_and_resend_delivers_it_once(new_context: NewContext,
                                                                      browser_errors: BrowserErrors) -> None:
    kim_name, leo_name = unique("kim"), unique("leo")
    swallowing = {"sends": True}

    def lossy(route: WebSocketRoute) -> None:
        server = route.connect_to_server()

        def to_server(message: str | bytes) -> None:
            if swallowing["sends"] and isinstance(message, str) and '"action":"send"' in message:
                return  # the frame is lost on the way
            server.send(message)

        route.on_message(to_server)

    context = new_context()
    context.route_web_socket(WS, lossy)
    kim = ChatPage(context.new_page()).sign_in(kim_name)
    leo = ChatPage(new_context().new_page()).sign_in(leo_name)

    kim.start_chat(leo_name).send("lost four times")
    expect(kim.own("lost four times")).to_have_attribute("data-state", "sending")
    expect(kim.own("lost four times")).to_have_attribute("data-state", "failed", timeout=20_000)
    swallowing["sends"] = False
    kim.own("lost four times").locator("button.resend").click()
    expect(kim.own("lost four times").locator(".tick")).to_have_attribute("aria-label", "delivered")
    leo.open_conversation(f"user:{kim_name}")
    expect(leo.peer("lost four times")).to_have_count(1)
    assert leo.texts() == ["lost four times"]
    browser_errors.assert_none()


def test_a_visitor_who_reloads_is_still_the_same_visitor(new_context: NewContext,
                                                         browser_errors: BrowserErrors) -> None:
    seller = unique("seller")
    visitor = ChatPage(new_context(viewport=PHONE).new_page()).open()
    me = visitor.me
    assert me.startswith("visitor:v-")
    visitor.start_chat(seller).send("hello from a visitor")
    expect(visitor.own("hello from a visitor").locator(".tick")).to_have_attribute("aria-label", "sent")

    visitor.page.reload()
    expect(visitor.status).to_have_attribute("data-state", "online")
    assert visitor.me == me
    visitor.open_conversation(f"user:{seller}")
    expect(visitor.own("hello from a visitor")).to_have_count(1)
    browser_errors.assert_none()


def test_the_widget_on_the_demo_listing_reaches_the_seller(new_context: NewContext,
                                                           browser_errors: BrowserErrors) -> None:
    buyer_page = new_context().new_page()
    buyer_page.goto("/demo/")
    widget = Widget(buyer_page).open()
    widget.send("Is the bike still available?")
    expect(widget.own("still available")).to_have_attribute("data-state", re.compile("sent|delivered"))
    buyer = ChatPage(buyer_page).me

    seller = ChatPage(new_context().new_page()).sign_in("seller-7")
    row = seller.row(buyer)
    expect(row.locator(".preview")).to_have_text("Is the bike still available?")
    seller.open_conversation(buyer).send("Yes! Come by tomorrow")
    expect(widget.peer("Come by tomorrow")).to_have_count(1)
    expect(widget.own("still available").locator(".tick")).to_have_attribute("aria-label", "delivered")
    # Closed, the button counts what arrives; opening shows it and clears the count.
    buyer_page.click("#webim-widget .close")
    seller.send("I can also deliver it")
    expect(buyer_page.locator("#webim-widget .badge")).to_have_text("1")
    buyer_page.click("#webim-widget .launcher")
    expect(widget.peer("deliver it")).to_have_count(1)
    expect(buyer_page.locator("#webim-widget .badge")).to_be_hidden()
    expect(buyer_page.locator("#webim-widget .presence")).to_have_text("online")  # the seller
    expect(seller.page.locator("#peer-presence")).to_have_text("online")  # the visitor, to the seller
    # The host page's hostile `button { background: hotpink }` does not reach into the widget.
    send_button = buyer_page.locator("#webim-widget .send")
    assert send_button.evaluate("b => getComputedStyle(b).backgroundColor") != "rgb(255, 105, 180)"
    browser_errors.assert_none()
