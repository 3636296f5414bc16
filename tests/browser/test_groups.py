"""Group chat in the page (protocol.md §13), in real headless Chromium against the local stack:
three people in one group, one of them on long poll, exchange messages across reloads and
every thread ends the same, each message once, in seq order, with the system lines; a removed
member's group is marked and is gone after a reload."""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import BrowserContext, expect

from tests.browser.consent import introduce
from tests.browser.pages import GroupPage, signed_in, unique
from tests.browser.support import PHONE, BrowserErrors, NewContext

pytestmark = pytest.mark.e2e

WS = re.compile(r"/ws(\?|$)")


def online_page(context: BrowserContext) -> GroupPage:
    """A signed-in person's chat page, online."""
    page = GroupPage(context.new_page())
    page.open()
    return page


def long_poll_only(context: BrowserContext) -> BrowserContext:
    """A proxy that breaks every WebSocket: the page falls back to long poll."""
    context.route_web_socket(WS, lambda route: route.close(code=1011, reason="blocked"))
    return context


def test_three_people_one_on_long_poll_chat_in_a_group_across_reloads_each_message_once_in_order(
        new_context: NewContext, base_url: str, browser_errors: BrowserErrors) -> None:
    alice_name, bob_name, carol_name = unique("alice"), unique("bob"), unique("carol")
    introduce(base_url, alice_name, bob_name, carol_name)  # whoever is added wrote to the adder (§13.2)
    alice = online_page(signed_in(new_context, base_url, alice_name))
    bob = online_page(long_poll_only(signed_in(new_context, base_url, bob_name)))
    carol = online_page(signed_in(new_context, base_url, carol_name))
    carol.page.set_viewport_size({"width": PHONE["width"], "height": PHONE["height"]})  # list and thread apart
    expect(bob.status).to_have_attribute("data-transport", "longpoll")

    group = alice.create_group("Bike parts", [bob_name, carol_name])
    expect(alice.page.locator("#messages li.system")).to_have_text(["You created the group “Bike parts”"])

    # Bob and Carol learn of the group by its push: listed with its title, one unread (the event).
    for person in (bob, carol):
        row = person.row(group)
        expect(row.locator(".name")).to_have_text("Bike parts")
        expect(row.locator(".unread")).to_have_text("1")
        expect(row.locator(".preview")).to_have_text(f"{alice_name} created the group “Bike parts”")
        person.open_conversation(group)
        expect(person.page.locator("#peer-presence")).to_have_text("3 members")
        expect(row.locator(".unread")).to_be_hidden()

    # The member list, with presence pulled (Bob's long poll counts as online).
    alice.open_members()
    for name, role in ((alice_name, "owner"), (bob_name, "member"), (carol_name, "member")):
        expect(alice.member(name)).to_have_attribute("data-role", role)
        expect(alice.member(name)).to_have_attribute("data-online", "true")
    alice.page.fill("#rename-title", "Bike parts & wheels")
    alice.page.click("#rename-submit")
    for person in (alice, bob, carol):
        expect(person.page.locator("#peer-name")).to_have_text("Bike parts & wheels")
    alice.page.click("#members-close")

    people = {alice_name: alice, bob_name: bob, carol_name: carol}
    sent = chat_across_reloads(group, people)
    total = 2 + sum(len(texts) for texts in sent.values())  # created and renamed, then the messages
    for person in people.values():
        expect(person.messages()).to_have_count(total, timeout=20_000)
    assert_one_log(people, sent, total)
    assert bob.system_lines() == carol.system_lines() == [
        f"{alice_name} created the group “Bike parts”", f"{alice_name} renamed the group to “Bike parts & wheels”"]
    assert alice.system_lines() == ["You created the group “Bike parts”",
                                    "You renamed the group to “Bike parts & wheels”"]
    # each sender's name above their bubbles (on the first of a run)
    names = bob.page.locator("#messages li.peer .sender").evaluate_all("els => els.map(e => e.dataset.from)")
    assert set(names) == {f"user:{alice_name}", f"user:{carol_name}"}
    browser_errors.assert_none()


def chat_across_reloads(group: str, people: dict[str, GroupPage]) -> dict[str, list[str]]:
    """Everyone writes at once, without waiting for each other; the third reloads in the middle
    of a burst, then the second (on long poll). Returns what each one sent, in order."""
    (alice_name, alice), (bob_name, bob), (carol_name, carol) = people.items()
    sent: dict[str, list[str]] = {name: [] for name in people}

    def say(person: GroupPage, name: str) -> None:
        text = f"{name.split('-', maxsplit=1)[0]} {len(sent[name]) + 1}"
        sent[name].append(text)
        person.send(text)

    for _ in range(2):
        say(alice, alice_name)
        say(bob, bob_name)
        say(carol, carol_name)

    # Carol reloads in the middle of a burst: what came meanwhile arrives by the pull, once.
    say(alice, alice_name)
    say(bob, bob_name)
    carol.page.reload()
    say(alice, alice_name)
    say(bob, bob_name)
    carol.open_conversation(group)
    say(carol, carol_name)

    # Bob (long poll) reloads too.
    expect(bob.own(sent[bob_name][-1])).to_have_count(1)
    bob.page.reload()
    say(alice, alice_name)
    expect(bob.status).to_have_attribute("data-transport", "longpoll")
    bob.open_conversation(group)
    say(bob, bob_name)
    say(carol, carol_name)
    return sent


def assert_one_log(people: dict[str, GroupPage], sent: dict[str, list[str]], total: int) -> None:
    """Every thread shows seqs 1..total once each, every message once, each sender's in the
    order typed (§9b), and all threads the same log."""
    for name, person in people.items():
        for text in sent[name]:
            expect(person.own(text)).to_have_attribute("data-state", "sent")  # groups have no delivered

    threads = {name: person.thread() for name, person in people.items()}
    for name, thread in threads.items():
        assert [seq for seq, _, _ in thread] == list(range(1, total + 1)), f"{name}: every seq once, in order"
        # every message once; each sender's in the order typed (§9b)
        for sender, texts in sent.items():
            who = "me" if sender == name else sender
            assert [text for _, by, text in thread if by == who] == texts, f"{name} sees {sender}'s messages"
    # (an event's line names its actor "You" for that actor: the lines are compared by the callers)
    logs = [[(seq, "event" if by == "system" else text) for seq, by, text in thread] for thread in threads.values()]
    assert logs[0] == logs[1] == logs[2], "all three see the same log"


def test_adding_removing_and_leaving_show_as_system_lines_and_a_removed_member_loses_the_group(
        new_context: NewContext, base_url: str, browser_errors: BrowserErrors) -> None:
    olga_name, pete_name, rita_name = unique("olga"), unique("pete"), unique("rita")
    introduce(base_url, olga_name, pete_name, rita_name)
    olga = online_page(signed_in(new_context, base_url, olga_name))
    pete = online_page(signed_in(new_context, base_url, pete_name))
    rita = online_page(signed_in(new_context, base_url, rita_name))

    group = olga.create_group("Tandem", [pete_name])
    olga.open_members()
    olga.page.fill("#add-members", rita_name)
    olga.page.click("#add-submit")
    expect(olga.member(rita_name)).to_have_attribute("data-role", "member")
    expect(rita.row(group).locator(".name")).to_have_text("Tandem")
    rita.open_conversation(group)
    expect(rita.page.locator("#messages li.system")).to_have_text([f"{olga_name} added you"])
    rita.send("hello all")
    pete.open_conversation(group)
    expect(pete.peer("hello all")).to_have_count(1)
    expect(pete.page.locator("#members-toggle")).to_be_visible()
    pete.open_members()
    expect(pete.page.locator("#add-form")).to_be_hidden()  # a plain member: no add, no rename, no remove
    expect(pete.page.locator("#member-list button.remove")).to_have_count(0)

    olga.member(rita_name).locator("button.remove").click()
    expect(olga.member(rita_name)).to_have_count(0)
    expect(rita.page.locator("#messages li.system").last).to_have_text(f"{olga_name} removed you")
    expect(rita.page.locator("#composer")).to_be_hidden()
    expect(rita.page.locator("#notice")).to_have_text("You were removed from this group.")
    expect(rita.row(group)).to_have_attribute("data-removed", "removed")

    pete.page.click("#leave-group")
    expect(pete.page.locator("#composer")).to_be_hidden()
    expect(olga.page.locator("#messages li.system")).to_have_text([
        "You created the group “Tandem”", f"You added {rita_name}", f"You removed {rita_name}", f"{pete_name} left",
    ])
    expect(olga.page.locator("#peer-presence")).to_have_text("1 member")
    assert olga.texts() == ["hello all"]

    rita.page.reload()  # out of the group: it leaves her conversation list
    expect(rita.page.locator("#app")).to_have_attribute("data-ready", "true")
    expect(rita.row(group)).to_have_count(0)
    browser_errors.assert_none()
