"""Typing and Seen in real Chromium against the local stack (protocol.md §14.2, §14.3): "typing…"
appears on the other side and goes when the message arrives (or 6 s after the last keystroke);
"Seen" appears under the last own message once the other opens the conversation, stays after a
reload, and never shows while either of them has read receipts off."""
from __future__ import annotations

import pytest
from playwright.sync_api import Locator, expect

from tests.browser.pages import ChatPage, unique
from tests.browser.support import PHONE, BrowserErrors, NewContext

pytestmark = pytest.mark.e2e

# How long "typing…" stays after the last typing frame (frontend/app/store.js), and room for the wait.
TYPING_GONE_MS = 6000 + 4000


def pair(new_context: NewContext) -> tuple[ChatPage, ChatPage, str, str]:
    """Alice and Bob with a conversation both have open."""
    alice_name, bob_name = unique("alice"), unique("bob")
    alice = ChatPage(new_context().new_page()).sign_in(alice_name)
    bob = ChatPage(new_context(viewport=PHONE).new_page()).sign_in(bob_name)
    alice.start_chat(bob_name).send("hello")
    bob.open_conversation(f"user:{alice_name}")
    expect(bob.peer("hello")).to_have_count(1)
    return alice, bob, alice_name, bob_name


def seen_marks(page: ChatPage) -> Locator:
    return page.page.locator("#messages li.own > .seen")


def test_typing_appears_on_the_other_side_and_goes_when_the_message_arrives(
        new_context: NewContext, browser_errors: BrowserErrors) -> None:
    alice, bob, _, _ = pair(new_context)
    typing = alice.page.locator("#peer-typing")
    expect(typing).to_be_hidden()

    bob.page.locator("#input").press_sequentially("is it still th", delay=20)
    expect(typing).to_have_text("typing…")
    expect(alice.page.locator("#peer-presence")).to_be_hidden()  # in its place

    # The message ends it at once, in the same render: record what the page shows when it lands.
    alice.page.evaluate("""() => {
        window.typingWhenArrived = null;
        new MutationObserver((changes, observer) => {
            if (document.querySelector('#messages li.peer:last-child .text')?.textContent === 'is it still there?') {
                window.typingWhenArrived = !document.getElementById('peer-typing').hidden;
                observer.disconnect();
            }
        }).observe(document.getElementById('messages'), {childList: true, subtree: true});
    }""")
    bob.page.locator("#input").press_sequentially("ere?", delay=20)
    bob.page.press("#input", "Enter")
    expect(alice.peer("is it still there?")).to_have_count(1)
    assert alice.page.evaluate("window.typingWhenArrived") is False, "typing… still shown with the message there"
    expect(typing).to_be_hidden()
    expect(alice.page.locator("#peer-presence")).to_be_visible()

    # Typing that stops without a message goes by itself. (Slow typing: at most one typing frame
    # per 3 s goes, and the last one went just before the message.)
    bob.page.locator("#input").press_sequentially("hmm, let me check", delay=450)
    expect(typing).to_have_text("typing…")
    expect(typing).to_be_hidden(timeout=TYPING_GONE_MS)
    browser_errors.assert_none()


def test_seen_appears_when_the_other_opens_the_conversation_and_after_a_reload(
        new_context: NewContext, browser_errors: BrowserErrors) -> None:
    alice, bob, alice_name, bob_name = pair(new_context)
    expect(seen_marks(alice)).to_have_count(1)  # Bob has "hello" open: read
    expect(alice.own("hello").locator(".seen")).to_have_text("Seen")

    bob.page.click("#back")  # Bob looks at his list: the next message is delivered, not read
    alice.send("are you there?")
    expect(bob.row(f"user:{alice_name}").locator(".unread")).to_have_text("1")
    expect(alice.own("are you there?").locator(".tick")).to_have_attribute("aria-label", "delivered")
    expect(alice.own("are you there?").locator(".seen")).to_have_count(0)
    expect(alice.own("hello").locator(".seen")).to_have_count(1)

    bob.open_conversation(f"user:{alice_name}")
    expect(alice.own("are you there?").locator(".seen")).to_have_text("Seen")
    expect(seen_marks(alice)).to_have_count(1)  # only under the last one read

    # After a reload nothing is pushed again: the list's peer_read_seq says it.
    alice.page.reload()
    alice.open_conversation(f"user:{bob_name}")
    expect(alice.own("are you there?").locator(".seen")).to_have_text("Seen")
    expect(seen_marks(alice)).to_have_count(1)
    browser_errors.assert_none()


def test_with_read_receipts_off_no_seen_either_way(new_context: NewContext, browser_errors: BrowserErrors) -> None:
    alice_name, bob_name = unique("alice"), unique("bob")
    alice = ChatPage(new_context().new_page()).sign_in(alice_name)
    bob = ChatPage(new_context(viewport=PHONE).new_page()).sign_in(bob_name)

    # Bob turns read receipts off in the settings menu.
    bob.page.click("#settings-toggle")
    receipts = bob.page.locator("#read-receipts")
    expect(receipts).to_be_enabled()
    expect(receipts).to_be_checked()
    receipts.uncheck()
    expect(receipts).to_be_enabled()
    expect(receipts).not_to_be_checked()
    bob.page.keyboard.press("Escape")
    expect(bob.page.locator("#settings-menu")).to_be_hidden()

    alice.start_chat(bob_name).send("did you read this?")
    bob.open_conversation(f"user:{alice_name}")
    expect(bob.peer("did you read this?")).to_have_count(1)
    expect(bob.row(f"user:{alice_name}").locator(".unread")).to_be_hidden()  # read, as far as Bob's page knows
    bob.send("yes")  # Bob's own message goes after his read mark moved
    expect(alice.peer("yes")).to_have_count(1)  # Alice reads it: she has receipts on, Bob has not
    expect(alice.own("did you read this?").locator(".tick")).to_have_attribute("aria-label", "delivered")
    expect(seen_marks(alice)).to_have_count(0)
    expect(bob.own("yes").locator(".tick")).to_have_attribute("aria-label", "delivered")
    expect(seen_marks(bob)).to_have_count(0)

    # Not after a reload either (no peer_read_seq), and the setting itself stays off.
    alice.page.reload()
    alice.open_conversation(f"user:{bob_name}")
    expect(alice.own("did you read this?").locator(".tick")).to_have_attribute("aria-label", "delivered")
    expect(seen_marks(alice)).to_have_count(0)
    bob.page.reload()
    expect(bob.page.locator("#read-receipts")).to_be_enabled()
    expect(bob.page.locator("#read-receipts")).not_to_be_checked()
    browser_errors.assert_none()
