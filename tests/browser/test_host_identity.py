"""The widget embedded on another site, for that site's own users: on the shop's page (its own
origin), the widget loads from WebIM's origin, gets a token from the shop's token endpoint (with
the shop's cookies), and chats as that user instead of as a visitor."""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from playwright.sync_api import expect

from tests.browser.pages import ChatPage, Widget, signed_in, unique
from tests.browser.support import BrowserErrors, NewContext, separate_stack
from tests.conftest import LocalStackProcess, free_port

pytestmark = pytest.mark.e2e

ISSUER = "https://shop.example"
SECRET = "the-shop-and-webim-share-this-32-byte-secret"


class Shop:
    """The host site, on an origin (and site) of its own: `localhost:<port>`, while WebIM is
    `127.0.0.1:<port>`. A listing page embedding the widget, and the endpoint that turns the
    shop's session cookie into a token for its user."""

    def __init__(self, widget_from: str, seller: str, user: str) -> None:
        self.token_requests: list[str | None] = []
        shop = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                if self.path == "/listing.html":
                    body = (f'<!doctype html><title>Shop</title><link rel="icon" href="data:,"><h1>A listing</h1>'
                            f'<script src="{widget_from}/widget.js" data-seller="{seller}" data-seller-name="Seller" '
                            f'data-token-url="/chat-token" async></script>').encode()
                    self._answer(200, "text/html", body)
                elif self.path == "/chat-token":
                    shop.token_requests.append(self.headers.get("Cookie"))
                    now = int(time.time())
                    token = jwt.encode({"iss": ISSUER, "aud": "webim", "sub": user, "iat": now, "exp": now + 600},
                                       SECRET, algorithm="HS256")
                    self._answer(200, "application/json", json.dumps({"token": token}).encode())
                else:
                    self._answer(404, "text/plain", b"not found")

            def _answer(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://localhost:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def stack_trusting_the_shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStackProcess]:
    local = tmp_path_factory.mktemp("shop")
    (local / "host-auth.json").write_text(json.dumps({"issuers": [
        {"issuer": ISSUER, "audience": "webim", "algorithm": "HS256", "secret": SECRET}]}))
    yield from separate_stack(local)


def test_a_signed_in_shop_user_chats_from_the_widget_as_that_user(
        new_context: NewContext, stack_trusting_the_shop: LocalStackProcess, browser_errors: BrowserErrors) -> None:
    base = stack_trusting_the_shop.base_url
    seller_name, buyer_name = unique("seller"), unique("jane")

    shop = Shop(widget_from=base, seller=seller_name, user=buyer_name)
    buyer = new_context(base_url=base)
    buyer.add_cookies([{"name": "shop_session", "value": "jane-logged-in", "url": shop.url}])
    page = buyer.new_page()
    page.goto(f"{shop.url}/listing.html")
    widget = Widget(page).open()
    widget.send("Hello from a shop account")

    seller = ChatPage(signed_in(new_context, base, seller_name).new_page()).open()
    row = seller.row(f"user:{buyer_name}")  # a user, not a visitor
    expect(row.locator(".preview")).to_have_text("Hello from a shop account")
    seller.open_conversation(f"user:{buyer_name}").send("Hi Jane")
    expect(widget.peer("Hi Jane")).to_have_count(1)
    assert shop.token_requests == ["shop_session=jane-logged-in"], "asked once, with the shop's cookie"
    saved = json.loads(page.evaluate("localStorage.getItem('webim.session')"))
    assert saved["mode"] == "host" and saved["identity"] == {"kind": "user", "id": buyer_name}
    shop.stop()
    browser_errors.assert_none()
