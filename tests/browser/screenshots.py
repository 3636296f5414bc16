"""Screenshots of the main views for docs/ and the README: `make screenshots`.

Starts its own local stack, plays a short conversation between a buyer and a seller, and one
in a group, in real Chromium and writes PNGs to docs/screenshots/. Not a test: the browser tests
assert; this shows. `python -m tests.browser.screenshots group photo` writes only those
(`chat`, `group`, `photo`).
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from playwright.sync_api import Browser, Page, ViewportSize, expect, sync_playwright

from tests.browser.consent import introduce
from tests.browser.images import write_png
from tests.browser.pages import ChatPage, GroupPage, Widget
from tests.browser.support import CHROMIUM_ARGS, PHONE, chromium_executable
from tests.conftest import LocalStackProcess, free_port

OUT = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
DESKTOP: ViewportSize = {"width": 1100, "height": 680}


def person(browser: Browser, base_url: str, viewport: ViewportSize) -> Page:
    context = browser.new_context(base_url=base_url, viewport=viewport, device_scale_factor=1)
    context.set_default_timeout(15_000)
    return context.new_page()


def shoot(browser: Browser, base_url: str) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    marta = ChatPage(person(browser, base_url, DESKTOP)).sign_in("seller-7")
    buyer_page = person(browser, base_url, DESKTOP)
    buyer_page.goto("/demo/")
    widget = Widget(buyer_page).open()
    widget.send("Hi! Is the road bike still available?")
    row = marta.page.locator("#conversations li.conversation").first
    expect(row.locator(".preview")).to_have_text("Hi! Is the road bike still available?")
    row.click()
    marta.send("Yes, it is 🚲 Would you like to see it this week?")
    expect(widget.peer("see it this week")).to_have_count(1)
    widget.send("Thursday after 6 pm works for me.")
    expect(marta.peer("Thursday")).to_have_count(1)
    marta.send("Perfect, see you Thursday. The address is in the listing.")
    expect(widget.own("Thursday after").locator(".tick")).to_have_attribute("aria-label", "delivered")
    expect(marta.own("Perfect").locator(".tick")).to_have_attribute("aria-label", "delivered")

    for name, text in (("sam", "Do you ship to Lyon?"), ("lea", "Is the price negotiable? 🙂")):
        other = ChatPage(person(browser, base_url, DESKTOP)).sign_in(name)
        other.start_chat("seller-7").send(text)
        expect(other.own(text).locator(".tick")).to_have_attribute("aria-label", "delivered")
    expect(marta.page.locator("#conversations li.conversation")).to_have_count(3)
    for name in ("sam", "lea"):
        expect(marta.row(f"user:{name}")).to_have_attribute("data-online", "true")
    marta.page.screenshot(path=OUT / "chat-desktop.png")
    buyer_page.screenshot(path=OUT / "widget-demo-listing.png")

    phone = ChatPage(person(browser, base_url, {"width": PHONE["width"], "height": PHONE["height"]})).sign_in("sam")
    phone.open_conversation("user:seller-7")
    marta.open_conversation("user:sam").send("Yes, shipping to Lyon is €25.")
    expect(phone.peer("Lyon is")).to_have_count(1)
    phone.send("Great, I'll take it!")
    expect(phone.own("take it").locator(".tick")).to_have_attribute("aria-label", "delivered")
    phone.page.screenshot(path=OUT / "chat-phone-conversation.png")
    phone.page.click("#back")
    phone.page.screenshot(path=OUT / "chat-phone-list.png")


def shoot_group(browser: Browser, base_url: str) -> None:
    """A group thread as a member sees it: names above bubbles, system lines, the member list."""
    OUT.mkdir(parents=True, exist_ok=True)
    # buyers who wrote to the seller (as in `shoot`): only they may be added (protocol.md §13.2)
    introduce(base_url, "seller-7", "sam", "lea", text="Is it still for sale?")
    marta, sam, lea = (GroupPage(person(browser, base_url, DESKTOP)) for _ in range(3))
    for page, name in ((marta, "seller-7"), (sam, "sam"), (lea, "lea")):
        page.sign_in(name)
    group = marta.create_group("Bike pickup", ["sam", "lea"])
    for page in (sam, lea):
        expect(page.row(group)).to_have_count(1)
        page.open_conversation(group)
    lines = ((marta, "Hi both! The road bike and the city bike are ready."), (sam, "Great, can I come Thursday?"),
             (lea, "Thursday works for me too!"), (marta, "Thursday it is, from 6 pm at the shop."))
    for page, text in lines:
        page.send(text)
        expect(lea.page.locator("#messages li .text", has_text=text)).to_have_count(1)
    marta.open_members()
    marta.page.fill("#rename-title", "Bike pickup · Thursday")
    marta.page.click("#rename-submit")
    expect(lea.page.locator("#peer-name")).to_have_text("Bike pickup · Thursday")
    sam.send("See you there!")
    expect(lea.page.locator("#messages li .text", has_text="See you there!")).to_have_count(1)
    lea.open_members()
    expect(lea.member("sam")).to_have_attribute("data-online", "true")
    lea.page.screenshot(path=OUT / "chat-group.png")


def shoot_photo(browser: Browser, base_url: str) -> None:
    """A photo with its caption, "Seen" under it, and the seller typing an answer."""
    OUT.mkdir(parents=True, exist_ok=True)
    buyer = ChatPage(person(browser, base_url, DESKTOP)).sign_in("nina")
    marta = ChatPage(person(browser, base_url, DESKTOP)).sign_in("seller-7")
    buyer.start_chat("seller-7").send("Hi! The rear derailleur on the bike I bought is bent, see:")
    with tempfile.TemporaryDirectory() as folder:
        picture = write_png(Path(folder) / "derailleur.png", 640, 420)
        buyer.page.fill("#input", "taken this morning")
        buyer.page.set_input_files("#photo-file", str(picture))
        own = buyer.page.locator("#messages li.own").filter(has=buyer.page.locator("button.photo"))
        expect(own.locator(".tick")).to_have_attribute("aria-label", "delivered")
    marta.open_conversation("user:nina")
    expect(marta.page.locator("#messages li.peer button.photo[data-source='full']")).to_have_count(1)
    expect(own.locator(".seen")).to_have_text("Seen")
    marta.page.locator("#input").press_sequentially("Sorry about that! I can", delay=30)
    expect(buyer.page.locator("#peer-typing")).to_have_text("typing…")
    buyer.page.wait_for_function(
        "() => [...document.querySelectorAll('#messages button.photo img')]"
        ".every(i => i.complete && i.naturalWidth > 0)")
    buyer.page.screenshot(path=OUT / "chat-photo.png")


def main() -> None:
    shooters = {"chat": shoot, "group": shoot_group, "photo": shoot_photo}
    chosen = sys.argv[1:] or list(shooters)
    with tempfile.TemporaryDirectory() as local_dir:
        stack = LocalStackProcess(free_port(), local_dir=Path(local_dir))
        try:
            stack.wait_ready()
            with sync_playwright() as driver:
                browser = driver.chromium.launch(executable_path=chromium_executable(), args=CHROMIUM_ARGS)
                for name in chosen:
                    shooters[name](browser, stack.base_url)
                browser.close()
        finally:
            stack.stop()
    for path in sorted(OUT.glob("*.png")):
        print(f"wrote {path.relative_to(OUT.parents[1])}")


if __name__ == "__main__":
    main()
