"""Chaos on the long poll in a real browser (issue 23 point 7): two pages whose WebSocket is
blocked (so both chat over long poll, protocol version 4) and whose long-poll HTTP traffic (the
waits at `wait_url`, `lp/open`, `lp/poll`, `lp/send`) goes through a faulty network made with
Playwright's `context.route()`: about 20 % of answers are lost after the server handled the
request (the rings a lost wait answer held are not handed out again: the page must poll for
them), some wait answers come with their rings duplicated and reordered (an SQS standard queue
does both), and a few requests are cut before the server sees them. Each message must be shown
exactly once, in order, and each own message must end `delivered`.

It runs on a stack of its own: its deliberate losses may leave warnings in the log (a
retransmission whose every copy was lost: `retries_exhausted`), which the session stack's log
check (test_local_stack_e2e) must not see."""
from __future__ import annotations

import contextlib
import json
import random
import re
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Route, expect

from devstack.wait_api import PREFIX as WAIT_PREFIX
from tests.browser.pages import ChatPage, unique
from tests.browser.support import BrowserErrors, NewContext, separate_stack
from tests.conftest import LocalStackProcess

pytestmark = pytest.mark.e2e

WS = re.compile(r"/ws(\?|$)")
LONG_POLL = re.compile(rf"({re.escape(WAIT_PREFIX)}/|/api/lp/(open|poll|send|close)(\?|$))")
MESSAGES = 30  # each way
LOSE, SHUFFLE, CUT = 0.20, 0.30, 0.03
# A chaotic exchange is slow on a busy machine (lost answers wait for retries and retransmission):
# generous, only so that a stuck page fails instead of hanging.
SETTLE_MS = 120_000


class FaultyNetwork:
    """The long poll's HTTP under one browser profile, with seeded faults. Handlers run in
    Playwright's route greenlets (a held wait does not block the others); the counts say what
    was injected, so the test can check the chaos really happened."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.injected: Counter[str] = Counter()
        self.on = False  # off while the page signs in (its first connect has no retries to wait for)
        self.closed: set[str] = set()  # connections the page closed (lp/close: never faulty)
        self.gone: list[tuple[str, str, str]] = []  # (kind, connection, message) of every 410 answer

    def _chance(self, p: float) -> bool:
        with self._lock:
            return self._rng.random() < p

    def handle(self, route: Route) -> None:
        with contextlib.suppress(PlaywrightError):  # the page went away meanwhile (its context closes)
            self._handle(route)

    def _handle(self, route: Route) -> None:
        url = route.request.url
        kind = "wait" if WAIT_PREFIX in url else url.split("/api/lp/")[1].split("?")[0]
        if kind == "close":
            self.closed.add(str((route.request.post_data_json or {}).get("connection_id")))
        if not self.on or kind == "close":
            route.fallback()
            return
        if kind != "open" and self._chance(CUT):
            self.injected[f"{kind} cut"] += 1
            route.abort("connectionreset")  # lost on the way: the server never sees it
            return
        response = route.fetch(timeout=60_000)  # a wait is held up to 20 s
        if response.status == 410:
            self.gone.append((kind, connection_of(route), response.text()))
        if kind != "open" and self._chance(LOSE):
            self.injected[f"{kind} answer lost"] += 1
            route.abort("connectionreset")  # the server acted; the page never hears
            return
        if kind == "wait" and response.status == 200 and self._chance(SHUFFLE):
            body = shuffled(response.json(), self._rng, self._lock)
            if body is not None:
                self.injected["wait rings shuffled"] += 1
                route.fulfill(response=response, body=body)
                return
        route.fulfill(response=response)


def connection_of(route: Route) -> str:
    """The connection a poll (in its body) or a send (in its query) is for."""
    if route.request.method == "POST" and "/lp/poll" in route.request.url:
        return str((route.request.post_data_json or {}).get("connection_id"))
    return parse_qs(urlsplit(route.request.url).query).get("connection_id", [""])[0]


def shuffled(answer: Any, rng: random.Random, lock: threading.Lock) -> str | None:
    """The wait answer with its rings duplicated and reordered (None when it held none)."""
    try:
        result = answer["ReceiveMessageResponse"]["ReceiveMessageResult"]
        messages = list(result["messages"] or [])
    except (KeyError, TypeError):
        return None
    if not messages:
        return None
    with lock:
        messages += [rng.choice(messages) for _ in range(rng.randint(1, len(messages)))]
        rng.shuffle(messages)
    result["messages"] = messages
    return json.dumps(answer)


@pytest.fixture(scope="module")
def chaos_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStackProcess]:
    yield from separate_stack(tmp_path_factory.mktemp("lp-chaos"))


def on_long_poll(new_context: NewContext, name: str, network: FaultyNetwork, base_url: str) -> ChatPage:
    context = new_context(base_url=base_url)
    # A proxy that breaks every WebSocket (as test_chat's long-poll test): the page falls back.
    context.route_web_socket(WS, lambda route: route.close(code=1011, reason="blocked"))
    context.route(LONG_POLL, network.handle)
    page = ChatPage(context.new_page()).sign_in(name)
    expect(page.status).to_have_attribute("data-transport", "longpoll")
    return page


def thread(page: ChatPage) -> list[tuple[str, str]]:
    """The open conversation as (own|peer, text), in the order shown."""
    rows: list[list[str]] = page.page.locator("#messages li").evaluate_all(
        """items => items.map(li => [li.classList.contains("own") ? "own" : "peer",
                                     li.querySelector(".text").textContent])""")
    return [(who, text) for who, text in rows]


def test_two_people_chat_over_long_poll_through_lost_answers_shuffled_rings_and_cuts(
        new_context: NewContext, browser_errors: BrowserErrors, chaos_stack: LocalStackProcess) -> None:
    ann_name, ben_name = unique("ann"), unique("ben")
    ann_net, ben_net = FaultyNetwork(seed=2301), FaultyNetwork(seed=2302)
    ann = on_long_poll(new_context, ann_name, ann_net, chaos_stack.base_url)
    ben = on_long_poll(new_context, ben_name, ben_net, chaos_stack.base_url)
    ann_net.on = ben_net.on = True
    # The first message each way goes alone: until its `sent` the page knows no conversation id,
    # and a message typed meanwhile queues apart from those typed after (the outbox's lines are
    # keyed by `to` and by conversation id): a lost answer then lets later ones overtake it.
    ann.start_chat(ben_name).send("ann:0")
    expect(ann.own("ann:0").locator(".tick")).to_have_attribute("aria-label", "delivered", timeout=SETTLE_MS)
    ben.open_conversation(f"user:{ann_name}")
    ben.send("ben:0")
    expect(ben.own("ben:0").locator(".tick")).to_have_attribute("aria-label", "delivered", timeout=SETTLE_MS)
    for i in range(1, MESSAGES):  # both ways, interleaved
        ann.send(f"ann:{i}")
        ben.send(f"ben:{i}")

    for me, theirs in ((ann, "ben"), (ben, "ann")):
        last_peer = me.peer(f"{theirs}:{MESSAGES - 1}")
        expect(last_peer).to_have_count(1, timeout=SETTLE_MS)
        ticks = me.page.locator("#messages li.own .tick")
        expect(ticks).to_have_count(MESSAGES, timeout=SETTLE_MS)
        for index in range(MESSAGES):
            expect(ticks.nth(index)).to_have_attribute("aria-label", "delivered", timeout=SETTLE_MS)
    for me, mine, theirs in ((ann, "ann", "ben"), (ben, "ben", "ann")):
        shown = thread(me)
        assert [text for who, text in shown if who == "peer"] == [f"{theirs}:{i}" for i in range(MESSAGES)], \
            "the peer's messages each once, in order"
        assert [text for who, text in shown if who == "own"] == [f"{mine}:{i}" for i in range(MESSAGES)], \
            "own messages each once, in order"
    assert thread(ann) == [("own" if who == "peer" else "peer", text) for who, text in thread(ben)], \
        "both pages show one conversation in one order"

    injected = ann_net.injected + ben_net.injected
    assert injected["wait answer lost"] > 0 and injected["wait rings shuffled"] > 0, injected
    assert injected["send answer lost"] > 0 and injected["poll answer lost"] + injected["poll cut"] > 0, injected
    # What the faults make Chromium report is expected, nothing else: a request aborted, and 410
    # for a request still in flight on a connection the page had closed (a lost ping answer makes
    # it replace the line; the old connection's close can overtake its last send or poll).
    for network in (ann_net, ben_net):
        assert all(connection in network.closed for _, connection, _ in network.gone), (network.gone, network.closed)
    page_errors, console_errors = browser_errors.take()
    assert page_errors == []
    unexpected = [line for line in console_errors if not expected_error(line)]
    assert unexpected == [], unexpected


def expected_error(line: str) -> bool:
    if "net::ERR_CONNECTION_RESET" in line:
        return True
    return "/api/lp/" in line and "status of 410 (Gone)" in line
