"""Delete for everyone in real Chromium against the local stack (protocol.md §16): the Delete
action on our own message replaces it by "Message deleted" on both sides (the text is gone from
the peer's page, also after a reload: history returns the tombstone only); the peer's message
carries no Delete action for us; the conversation list says "Message deleted", also after a
reload (the server's list entry carries the tombstone's event)."""
from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.browser.pages import ChatPage, unique
from tests.browser.support import BrowserErrors, NewContext

pytestmark = pytest.mark.e2e


def test_delete_for_everyone_from_the_bubble(new_context: NewContext, browser_errors: BrowserErrors) -> None:
    alice_name, bob_name = unique("alice"), unique("bob")
    alice = ChatPage(new_context().new_page()).sign_in(alice_name)
    bob = ChatPage(new_context().new_page()).sign_in(bob_name)
    alice.start_chat(bob_name).send("my address is 12 Elm St")
    bob.open_conversation(f"user:{alice_name}")
    expect(bob.peer("my address is 12 Elm St")).to_have_count(1)
    bob.send("thanks")
    expect(alice.peer("thanks")).to_have_count(1)
    expect(alice.peer("thanks").locator("button.delete")).to_have_count(0)  # not ours

    mine = alice.own("my address is 12 Elm St")
    alice.page.once("dialog", lambda dialog: dialog.accept())
    mine.hover()
    mine.locator("button.delete").click()

    for page, side in ((alice, "li.own"), (bob, "li.peer")):
        gone = page.page.locator(f"#messages {side}.deleted")
        expect(gone).to_have_count(1)
        expect(gone.locator(".text")).to_have_text("Message deleted")
        expect(page.page.locator("#messages")).not_to_contain_text("12 Elm St")
    expect(alice.page.locator("#messages li.own.deleted button.delete")).to_have_count(0)
    expect(bob.row(f"user:{alice_name}")).to_contain_text("Message deleted")

    bob.page.reload()  # the list as the server has it (the 1:1 copy of the last message: the tombstone)
    expect(bob.row(f"user:{alice_name}")).to_contain_text("Message deleted")
    bob.open_conversation(f"user:{alice_name}")
    expect(bob.page.locator("#messages li.peer.deleted .text")).to_have_text("Message deleted")
    expect(bob.peer("thanks")).to_have_count(0)  # (bob's own "thanks" is his, and stays)
    expect(bob.own("thanks")).to_have_count(1)
    expect(bob.page.locator("#messages")).not_to_contain_text("12 Elm St")
