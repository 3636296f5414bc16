"""Photos in real Chromium against the local stack (protocol.md §14.1): a PNG chosen through the
real file input goes straight to the local stack's S3 front with a presigned POST, the other
person sees the thumbnail and the full image; an upload that fails shows Retry, which sends it
once; the widget sends one too."""
from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from playwright.sync_api import Locator, Page, Route, expect

from tests.browser.images import write_png
from tests.browser.pages import ChatPage, Widget, unique
from tests.browser.support import PHONE, BrowserErrors, NewContext

pytestmark = pytest.mark.e2e

S3 = re.compile(r"/s3/")
LOADED = "img => img.complete && img.naturalWidth > 0 ? img.naturalWidth : 0"
LOAD_SECONDS = 30.0


def photos(page: Page, side: str) -> Locator:
    return page.locator(f"#messages li.{side} button.photo img")


FULL = ("img => img.complete && img.naturalWidth > 0 && img.closest('button').dataset.source === 'full'"
        " ? img.naturalWidth : 0")


def loaded_width(img: Locator) -> int:
    """The natural width of the <img> once it has loaded from the signed URL. The locator is
    resolved again at every look: a bubble drawn anew (a state change) has a new <img>, which
    must load in its turn (waiting on one element, then reading the locator, raced that)."""
    return _until_loaded(img, FULL)


def _until_loaded(img: Locator, script: str) -> int:
    deadline = time.monotonic() + LOAD_SECONDS
    while True:
        width: int = img.evaluate(script)
        if width:
            return width
        assert time.monotonic() < deadline, f"the picture did not load in {LOAD_SECONDS} s"
        img.page.wait_for_timeout(100)  # the next look, not a proof of anything


def test_two_people_exchange_a_photo_and_see_the_thumbnail_and_the_full_image(
        new_context: NewContext, tmp_path: Path, browser_errors: BrowserErrors) -> None:
    alice_name, bob_name = unique("alice"), unique("bob")
    alice = ChatPage(new_context().new_page()).sign_in(alice_name)
    bob = ChatPage(new_context(viewport=PHONE).new_page()).sign_in(bob_name)
    picture = write_png(tmp_path / "broken-part.png", 300, 200)

    # A new conversation: the first message is a photo (sent with `to`), with a caption.
    alice.start_chat(bob_name)
    alice.page.fill("#input", "the broken part")
    alice.page.set_input_files("#photo-file", str(picture))
    expect(alice.page.locator("#input")).to_have_value("")
    own = alice.page.locator("#messages li.own").filter(has=alice.page.locator("button.photo"))
    expect(own.locator(".tick")).to_have_attribute("aria-label", "delivered")
    expect(own.locator(".text")).to_have_text("the broken part")
    assert loaded_width(photos(alice.page, "own")) == 300, "the sender sees the picture itself"

    row = bob.row(f"user:{alice_name}")
    expect(row.locator(".preview")).to_have_text("Photo: the broken part")
    bob.open_conversation(f"user:{alice_name}")
    thumbnail = photos(bob.page, "peer")
    expect(thumbnail).to_have_count(1)
    assert loaded_width(thumbnail) == 300, "the full picture from its signed URL, not the 64 px preview"
    assert "/s3/" in (thumbnail.get_attribute("src") or "")
    box = thumbnail.bounding_box()
    assert box is not None and box["width"] <= 240 and box["height"] <= 240, box

    # Full size in an overlay; Esc closes it, and so does a click.
    thumbnail.click()
    overlay = bob.page.locator(".overlay")
    expect(overlay).to_be_visible()
    assert loaded_width_of(overlay.locator("img")) == 300
    bob.page.keyboard.press("Escape")
    expect(overlay).to_be_hidden()
    thumbnail.click()
    expect(overlay).to_be_visible()
    overlay.click()
    expect(overlay).to_be_hidden()

    # Bob answers with a photo (no caption): Alice's list says "Photo".
    bob.page.set_input_files("#photo-file", str(write_png(tmp_path / "answer.png", 120, 90)))
    expect(alice.page.locator("#messages li.peer button.photo")).to_have_count(1)
    assert loaded_width(photos(alice.page, "peer")) == 120
    expect(alice.row(f"user:{bob_name}").locator(".preview")).to_have_text("Photo")
    expect(bob.row(f"user:{alice_name}").locator(".preview")).to_have_text("You: Photo")

    # After a reload the photos come from history with fresh signed URLs.
    bob.page.reload()
    bob.open_conversation(f"user:{alice_name}")
    assert loaded_width(photos(bob.page, "peer")) == 300
    assert loaded_width(photos(bob.page, "own")) == 120
    browser_errors.assert_none()


def loaded_width_of(img: Locator) -> int:
    return _until_loaded(img, LOADED)


def test_a_failed_upload_shows_retry_and_retry_sends_it_once(
        new_context: NewContext, tmp_path: Path, browser_errors: BrowserErrors) -> None:
    alice_name, bob_name = unique("alice"), unique("bob")
    alice = ChatPage(new_context().new_page()).sign_in(alice_name)
    bob = ChatPage(new_context().new_page()).sign_in(bob_name)
    alice.start_chat(bob_name).send("a photo is coming")
    expect(alice.own("a photo is coming").locator(".tick")).to_have_attribute("aria-label", "delivered")

    posts: list[str] = []

    def first_post_aborted(route: Route) -> None:
        if route.request.method == "POST":
            posts.append(route.request.url)
            if len(posts) == 1:
                route.abort("connectionreset")
                return
        route.continue_()

    alice.page.route(S3, first_post_aborted)
    alice.page.set_input_files("#photo-file", str(write_png(tmp_path / "p.png", 200, 150)))
    failed = alice.page.locator("#messages li.own[data-state='failed']")
    expect(failed.locator("button.resend")).to_have_text("Retry")
    expect(failed.locator("button.photo img")).to_have_count(1)  # the picture stays on screen
    bubbles_before = alice.page.locator("#messages li.own").count()

    failed.locator("button.resend").click()
    expect(alice.page.locator("#messages li.own[data-state='failed']")).to_have_count(0)
    photo = alice.page.locator("#messages li.own").filter(has=alice.page.locator("button.photo"))
    expect(photo.locator(".tick")).to_have_attribute("aria-label", "delivered")
    assert alice.page.locator("#messages li.own").count() == bubbles_before, "the same bubble, not a second one"
    assert len(posts) == 2

    bob.open_conversation(f"user:{alice_name}")
    expect(bob.page.locator("#messages li.peer button.photo")).to_have_count(1)
    assert loaded_width(photos(bob.page, "peer")) == 200
    bob.page.reload()  # the server stored it once: history has one photo
    bob.open_conversation(f"user:{alice_name}")
    expect(bob.peer("a photo is coming")).to_have_count(1)
    expect(bob.page.locator("#messages li.peer button.photo")).to_have_count(1)
    browser_errors.assert_none(console=False)  # the aborted POST is logged as a network error


def test_the_widget_sends_a_photo_to_the_seller(new_context: NewContext, tmp_path: Path,
                                                browser_errors: BrowserErrors) -> None:
    buyer_page = new_context().new_page()
    buyer_page.goto("/demo/")
    widget = Widget(buyer_page).open()
    widget.send("is this part still available?")
    buyer_page.set_input_files("#webim-widget input[type=file]", str(write_png(tmp_path / "w.png", 160, 100)))
    own = buyer_page.locator("#webim-widget li.own").filter(has=buyer_page.locator("button.photo"))
    expect(own).to_have_attribute("data-state", re.compile("sent|delivered"))
    assert loaded_width_of(own.locator("img")) == 160
    buyer = ChatPage(buyer_page).me

    seller = ChatPage(new_context().new_page()).sign_in("seller-7")
    expect(seller.row(buyer).locator(".preview")).to_have_text("Photo")
    seller.open_conversation(buyer)
    assert loaded_width(photos(seller.page, "peer")) == 160
    browser_errors.assert_none()
