"""Report in real Chromium against the local stack (protocol.md §17): the conversation's menu
opens a small form (reason, note); sending it shows "Reported" once the server answered
`reported` (the frame on the wire says so); Cancel sends nothing."""
from __future__ import annotations

import json
from typing import Any

import pytest
from playwright.sync_api import WebSocket, expect

from tests.browser.pages import ChatPage, unique
from tests.browser.support import BrowserErrors, NewContext

pytestmark = pytest.mark.e2e


def test_report_a_conversation_from_the_menu(new_context: NewContext, browser_errors: BrowserErrors) -> None:
    alice_name, bob_name = unique("alice"), unique("bob")
    alice = ChatPage(new_context().new_page()).sign_in(alice_name)
    bob_page = new_context().new_page()
    frames: list[dict[str, Any]] = []

    def watch(socket: WebSocket) -> None:
        for event in ("framesent", "framereceived"):
            socket.on(event, lambda payload: frames.append(json.loads(payload)) if "report" in str(payload) else None)

    bob_page.on("websocket", watch)
    bob = ChatPage(bob_page).sign_in(bob_name)
    alice.start_chat(bob_name).send("pay me outside the site, it is cheaper")
    bob.open_conversation(f"user:{alice_name}")
    expect(bob.peer("pay me outside the site, it is cheaper")).to_have_count(1)

    form = bob.page.locator("#report-form")
    bob.page.click("#conversation-menu-toggle")
    bob.page.click("#report-open")
    expect(form).to_be_visible()
    bob.page.click("#report-cancel")
    expect(form).to_be_hidden()

    bob.page.click("#conversation-menu-toggle")
    bob.page.click("#report-open")
    bob.page.select_option("#report-reason", "scam")
    bob.page.fill("#report-note", "asks me to pay outside the site")
    bob.page.click("#report-send")
    expect(form).to_be_hidden()
    expect(bob.page.locator("#notice")).to_contain_text("Reported", timeout=20_000)
    sent = [f for f in frames if f.get("action") == "report"]
    assert [(f["reason"], f["note"], "seq" in f) for f in sent] == [("scam", "asks me to pay outside the site", False)]
    answers = [f for f in frames if f.get("type") == "reported"]
    assert len(answers) == 1 and answers[0]["report_id"].startswith("r_") and answers[0]["ref"] == sent[0]["id"]
    # the reported person sees nothing of it
    expect(alice.page.locator("#notice")).not_to_contain_text("Report")


def test_a_group_member_reports_the_group_which_has_no_block(
        new_context: NewContext, base_url: str, browser_errors: BrowserErrors) -> None:
    from tests.browser.consent import introduce
    from tests.browser.pages import GroupPage, signed_in

    olga_name, pete_name = unique("olga"), unique("pete")
    introduce(base_url, olga_name, pete_name)
    olga = GroupPage(signed_in(new_context, base_url, olga_name).new_page())
    pete = GroupPage(signed_in(new_context, base_url, pete_name).new_page())
    olga.open()
    pete.open()
    group = olga.create_group("Deals", [pete_name])
    olga.send("wire me the money first")
    pete.open_conversation(group)
    expect(pete.peer("wire me the money first")).to_have_count(1)
    pete.page.click("#conversation-menu-toggle")
    expect(pete.page.locator("#block-toggle")).to_be_hidden()  # a group is left, not blocked
    pete.page.click("#report-open")
    pete.page.select_option("#report-reason", "scam")
    pete.page.click("#report-send")
    expect(pete.page.locator("#notice")).to_contain_text("Reported", timeout=20_000)
    expect(pete.page.locator("#report-form")).to_be_hidden()
