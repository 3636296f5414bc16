"""Block in real Chromium against the local stack (protocol.md §15): the conversation's menu
blocks the peer; the thread shows it (no composer, a notice, "Unblock" in the menu); the
blocked peer's message is refused (shown failed) and never reaches the blocker; the state
stays after a reload; Unblock restores writing both ways."""
from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.browser.pages import ChatPage, unique
from tests.browser.support import BrowserErrors, NewContext

pytestmark = pytest.mark.e2e


def test_block_from_the_menu_refuses_the_peer_and_unblock_restores(
        new_context: NewContext, browser_errors: BrowserErrors) -> None:
    alice_name, bob_name = unique("alice"), unique("bob")
    alice = ChatPage(new_context().new_page()).sign_in(alice_name)
    bob = ChatPage(new_context().new_page()).sign_in(bob_name)
    alice.start_chat(bob_name).send("hello, buy my stuff")
    bob.open_conversation(f"user:{alice_name}")
    expect(bob.peer("hello, buy my stuff")).to_have_count(1)

    menu = bob.page.locator("#conversation-menu")
    expect(menu).to_be_hidden()
    bob.page.click("#conversation-menu-toggle")
    expect(menu).to_be_visible()
    expect(bob.page.locator("#block-toggle")).to_have_text("Block")
    bob.page.click("#block-toggle")
    expect(menu).to_be_hidden()
    expect(bob.page.locator("#thread")).to_have_attribute("data-blocked", "true")
    expect(bob.page.locator("#composer")).to_be_hidden()
    expect(bob.page.locator("#notice")).to_contain_text("You blocked this person")

    alice.send("are you there?")
    expect(alice.own("are you there?")).to_have_attribute("data-state", "failed", timeout=20_000)
    # the refusal came back to alice: by then it was decided, and bob got nothing
    expect(bob.peer("are you there?")).to_have_count(0)

    bob.page.reload()
    bob.open_conversation(f"user:{alice_name}")
    expect(bob.page.locator("#thread")).to_have_attribute("data-blocked", "true")
    expect(bob.page.locator("#composer")).to_be_hidden()
    bob.page.click("#conversation-menu-toggle")
    expect(bob.page.locator("#block-toggle")).to_have_text("Unblock")
    bob.page.click("#block-toggle")
    expect(bob.page.locator("#thread")).to_have_attribute("data-blocked", "false")
    expect(bob.page.locator("#composer")).to_be_visible()

    alice.send("now?")
    expect(bob.peer("now?")).to_have_count(1)
    bob.send("yes, now")
    expect(alice.peer("yes, now")).to_have_count(1)
