"""The operator page in real Chromium against the local stack (docs/operator.md): an operator
signed in with a development operator login sees the report a person filed from the chat page,
with its copied messages; Delete replaces the message by "Message deleted" on the reporter's
page, Ban closes the reported person's connection (its page is no longer online), Close takes
the report off the open list. A plain user's token on the page is told not_operator."""
from __future__ import annotations

import httpx
import pytest
from playwright.sync_api import expect

from tests.browser.pages import ChatPage, unique
from tests.browser.support import BrowserErrors, NewContext

pytestmark = pytest.mark.e2e


def test_the_operator_page_deletes_bans_and_closes(new_context: NewContext, base_url: str,
                                                    browser_errors: BrowserErrors) -> None:
    alice_name, bob_name = unique("alice"), unique("bob")
    alice = ChatPage(new_context().new_page()).sign_in(alice_name)
    bob = ChatPage(new_context().new_page()).sign_in(bob_name)
    alice.start_chat(bob_name).send("pay me outside the site")
    bob.open_conversation(f"user:{alice_name}")
    expect(bob.peer("pay me outside the site")).to_have_count(1)
    bob.page.click("#conversation-menu-toggle")
    bob.page.click("#report-open")
    bob.page.select_option("#report-reason", "scam")
    bob.page.click("#report-send")
    expect(bob.page.locator("#notice")).to_contain_text("Reported", timeout=20_000)

    page = new_context().new_page()
    page.goto("/operator.html")
    page.fill("#op-dev-name", unique("ops"))
    page.click("#op-sign-in button[type=submit]")
    row = page.locator("#op-reports li.op-report").filter(has_text=f"by user:{bob_name}")
    expect(row).to_have_count(1, timeout=20_000)
    expect(row.locator(".op-reason")).to_have_text("scam")
    row.locator("button.op-open").click()
    expect(row.locator("li.op-message").filter(has_text="pay me outside the site")).to_have_count(1)
    line = row.locator("li.op-message[data-seq='1']")

    line.locator("button.op-delete").click()
    expect(line).to_have_attribute("data-deleted", "true")
    gone = bob.page.locator("#messages li.peer.deleted .text")
    expect(gone).to_have_text("Message deleted", timeout=20_000)  # pushed to the reporter's page
    expect(bob.page.locator("#messages")).not_to_contain_text("pay me outside the site")

    row.locator("button.op-ban", has_text=f"user:{alice_name}").click()
    expect(page.locator("#op-notice")).to_contain_text(f"user:{alice_name} banned", timeout=20_000)
    expect(alice.status).not_to_have_attribute("data-state", "online", timeout=20_000)

    row.locator("button.op-close").click()
    expect(row).to_have_count(0)
    expect(page.locator("#op-notice")).to_contain_text("closed")
    # unbanned again, so the shared stack's other tests never meet this identity banned
    row_ban = page.locator("button.op-ban")
    expect(row_ban).to_have_count(0)
    token = httpx.post(f"{base_url}/api/identity/dev-login", json={"name": "ops", "operator": True}).json()["token"]
    httpx.post(f"{base_url}/api/operator/unban", headers={"Authorization": f"Bearer {token}"},
               json={"identity": {"kind": "user", "id": alice_name}}).raise_for_status()


def test_a_plain_user_token_on_the_operator_page_is_refused(new_context: NewContext, base_url: str,
                                                            browser_errors: BrowserErrors) -> None:
    user = httpx.post(f"{base_url}/api/identity/dev-login", json={"name": unique("plain")}).json()["token"]
    page = new_context().new_page()
    page.goto("/operator.html")
    page.fill("#op-token", user)
    page.click("#op-sign-in button[type=submit]")
    expect(page.locator("#op-notice")).to_contain_text("not_operator")
    expect(page.locator("#op-reports li")).to_have_count(0)
    browser_errors.assert_none(console=False)  # (the refused fetch is logged by the browser itself)
