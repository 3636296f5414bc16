"""The chat page and the widget as a person uses them: sign in, start a chat, send, read."""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

import httpx
from playwright.sync_api import BrowserContext, Locator, Page, expect

from tests.browser.support import NewContext


def unique(name: str) -> str:
    """Tests share one local stack: every person gets a name of their own."""
    return f"{name}-{uuid.uuid4().hex[:6]}"


def signed_in(new_context: NewContext, base_url: str, name: str) -> BrowserContext:
    """A browser profile already signed in as `name` (development login), as after the sign-in
    dialog: its pages connect as that user from the first load, without a visitor first."""
    issued = httpx.post(f"{base_url}/api/identity/dev-login", json={"name": name}).raise_for_status().json()
    saved = {"mode": "dev", "token": issued["token"], "identity": issued["identity"]}
    state = {"cookies": [], "origins": [{"origin": base_url, "localStorage": [
        {"name": "webim.session", "value": json.dumps(saved)}]}]}
    return new_context(storage_state=state, base_url=base_url)


@dataclass
class ChatPage:
    page: Page

    def open(self) -> ChatPage:
        self.page.goto("/")
        expect(self.status).to_have_attribute("data-state", "online")
        return self

    def sign_in(self, name: str) -> ChatPage:
        self.page.goto("/")
        self.page.click("#sign-in")
        self.page.fill("#sign-in-name", name)
        self.page.click("#sign-in-submit")
        expect(self.page.locator("#me-name")).to_have_text(name)
        expect(self.status).to_have_attribute("data-state", "online")
        return self

    @property
    def status(self) -> Locator:
        return self.page.locator("#status")

    @property
    def me(self) -> str:
        """This tab's identity as `kind:id`, from the credential the page keeps."""
        saved = json.loads(self.page.evaluate("localStorage.getItem('webim.session')"))
        return f"{saved['identity']['kind']}:{saved['identity']['id']}"

    def is_leader(self) -> bool:
        return self.page.locator("#app").get_attribute("data-leader") == "true"

    def start_chat(self, peer_id: str) -> ChatPage:
        self.page.fill("#start-peer", peer_id)
        self.page.press("#start-peer", "Enter")
        expect(self.page.locator("#peer-name")).to_have_text(peer_id)
        return self

    def row(self, peer_key: str) -> Locator:
        return self.page.locator(f"#conversations li[data-peer='{peer_key}']")

    def open_conversation(self, peer_key: str) -> ChatPage:
        app = self.page.locator("#app")
        expect(app).to_have_attribute("data-ready", "true")
        if app.get_attribute("data-view") != "thread" or app.get_attribute("data-peer") != peer_key:
            self.row(peer_key).click()  # (after a reload the page reopens the conversation in its URL)
        expect(self.page.locator("#app")).to_have_attribute("data-peer", peer_key)
        return self

    def send(self, text: str) -> ChatPage:
        self.page.fill("#input", text)
        self.page.press("#input", "Enter")
        return self

    def messages(self) -> Locator:
        return self.page.locator("#messages li")

    def own(self, text: str) -> Locator:
        return self.page.locator("#messages li.own").filter(has=self.page.locator(".text", has_text=text))

    def peer(self, text: str) -> Locator:
        return self.page.locator("#messages li.peer").filter(has=self.page.locator(".text", has_text=text))

    def texts(self) -> list[str]:
        return self.page.locator("#messages li .text").all_text_contents()


@dataclass
class Widget:
    """The chat button on a host page (inside its shadow root; Playwright's CSS pierces it)."""

    page: Page

    def open(self) -> Widget:
        self.page.click("#webim-widget .launcher")
        expect(self.page.locator("#webim-widget")).to_have_attribute("data-ready", "true")
        return self

    def send(self, text: str) -> Widget:
        self.page.fill("#webim-widget textarea", text)
        self.page.press("#webim-widget textarea", "Enter")
        return self

    def own(self, text: str) -> Locator:
        return self.page.locator("#webim-widget li.own").filter(has=self.page.locator(".text", has_text=text))

    def peer(self, text: str) -> Locator:
        return self.page.locator("#webim-widget li.peer").filter(has=self.page.locator(".text", has_text=text))


@dataclass
class GroupPage(ChatPage):
    """The chat page with a group open (protocol.md §13)."""

    def create_group(self, title: str, members: list[str]) -> str:
        """Creates a group from the dialog; returns its conversation id (the open thread's key)."""
        self.page.click("#new-group")
        self.page.fill("#group-title", title)
        self.page.fill("#group-members", ", ".join(members))
        self.page.click("#group-create")
        app = self.page.locator("#app")
        expect(app).to_have_attribute("data-kind", "group")
        expect(self.page.locator("#peer-name")).to_have_text(title)
        group_id = app.get_attribute("data-peer")
        assert group_id is not None and group_id.startswith("g_")
        return group_id

    def system_lines(self) -> list[str]:
        return self.page.locator("#messages li.system .line").all_text_contents()

    def thread(self) -> list[tuple[int, str, str]]:
        """The open thread as (seq, who, text): who is the sender's name for others' bubbles,
        "me" for mine, "system" for an event line (its text)."""
        rows: list[tuple[int, str, str]] = self.page.locator("#messages li").evaluate_all("""items => items.map(li => [
            Number(li.dataset.seq),
            li.classList.contains("system") ? "system" : li.classList.contains("own") ? "me"
              : li.querySelector(".sender").textContent,
            li.querySelector(li.classList.contains("system") ? ".line" : ".text").textContent,
        ])""")
        return [tuple(row) for row in rows]  # type: ignore[misc]

    def open_members(self) -> None:
        if self.page.locator("#members-panel").is_hidden():
            self.page.click("#members-toggle")
        expect(self.page.locator("#members-panel")).to_be_visible()

    def member(self, name: str) -> Locator:
        return self.page.locator(f"#member-list li[data-member='user:{name}']")
