"""Abuse limits: how much one client (source IP) or one identity may do, and the refusal.

| what | per | how it is counted | cost |
|---|---|---|---|
| minting visitors | source IP | a fixed-window counter | one UpdateItem per mint |
| sends | identity | the same counter, as one more item of the send's transaction | no extra call |
| presence pulls | identity | a fixed-window counter | one UpdateItem per pull |
| photo upload slots | identity | a fixed-window counter | one UpdateItem per slot |
| reports | identity | the same counter, as one more item of the report's transaction | no extra call |
| open connections | identity | a slot per connection (`slots`, presence item) | one UpdateItem per open and close |

A refusal is `rate_limited` (429) with `retry_after` seconds: the end of the window, or when
the earliest live connection stops counting unless renewed. A refused attempt changes nothing
(a refused send stores nothing). Fixed windows let a burst at a window's edge reach twice a
limit, which is enough against abuse and costs one small item per window. A limit of 0 is off.

The connection cap is exact, whatever races: each open takes a slot (storage/presence.py)
before its connection is registered, with one conditional write on one item
(`size(slots) < cap`), so of opens racing each other exactly as many as
there are free slots get one. A close gives its slot back, and an open that fails after taking
one gives it back too. A slot whose connection ended without a close (a lost `$disconnect`, a
long poll that stopped polling, a container that died mid-open) is reclaimed when it would
refuse an open: the refused open reads the identity's partition (presence item and routing
items, one Query) and drops, in one conditional write that also takes its slot, every slot
whose connection has no routing item (after OPENING_GRACE_SECONDS: an open between its slot
and its registration has none yet) or whose routing item is past its heartbeat deadline
(`live_until`, as presence judges it) or its expiry; then it tries once more (a refusal
costs that Query and UpdateItem on top). Racing opens and closes may send an open round
again (each round lost means another took, freed or reclaimed a slot); after MAX_ROUNDS it
answers `rate_limited` with `retry_after` 1, so under a storm an open may be refused while a
slot is free for a moment, never accepted past the cap. So a dead
connection never keeps anyone out, and a live one (heartbeats or polls coming) always counts.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from chalicelib.errors import RateLimitedError
from chalicelib.principal import Identity
from chalicelib.storage.presence import PresenceTable
from chalicelib.storage.rate_limits import LimitExceeded, RateLimitTable, Window

MINT, SEND, PRESENCE, UPLOAD, REPORT = "mint", "send", "presence", "upload", "report"
# A slot without a routing item is an open between its slot and its registration (seconds; API
# Gateway gives `$connect` 29 s at most), or one that died there: reclaimed after this.
OPENING_GRACE_SECONDS = 60
MAX_ROUNDS = 5  # take / read / reclaim rounds of one open before it gives up (retry_after 1)
MESSAGES = {
    MINT: "too many new visitors from this address; retry later",
    SEND: "too many messages; retry later",
    PRESENCE: "too many presence requests; retry later",
    UPLOAD: "too many uploads; retry later",
    REPORT: "too many reports; retry later",
}


@dataclass(frozen=True)
class Rate:
    limit: int  # 0: no limit
    seconds: int


OFF = Rate(0, 60)


@dataclass(frozen=True)
class Rates:
    """The fixed-window limits, each per its subject (the table above); absent: off."""

    mint: Rate = OFF  # visitors minted per source IP
    send: Rate = OFF  # sends per identity
    presence_pull: Rate = OFF  # `POST /presence` per identity
    upload: Rate = OFF  # photo upload slots per identity
    report: Rate = OFF  # reports per identity (protocol.md §17)


class Limits:
    def __init__(self, counters: RateLimitTable, rates: Rates, max_connections: int = 0,
                 clock: Callable[[], float] = time.time, slots: PresenceTable | None = None) -> None:
        if max_connections > 0 and slots is None:
            raise ValueError("a connection cap needs the presence table, where the slots are")
        self._counters = counters
        self._slots = slots
        self._rates = {MINT: rates.mint, SEND: rates.send, PRESENCE: rates.presence_pull, UPLOAD: rates.upload,
                       REPORT: rates.report}
        self._max_connections = max_connections
        self._clock = clock

    def _window(self, scope: str, subject: str) -> Window | None:
        rate = self._rates[scope]
        if rate.limit <= 0:
            return None
        start = int(self._clock()) // rate.seconds * rate.seconds
        return Window(scope, subject, start, rate.seconds, rate.limit)

    def _take(self, scope: str, subject: str) -> None:
        window = self._window(scope, subject)
        if window is None:
            return
        try:
            self._counters.take(window)
        except LimitExceeded as exceeded:
            raise self.refusal(exceeded) from None

    def refusal(self, exceeded: LimitExceeded) -> RateLimitedError:
        """The protocol error for a full window: retry when it ends."""
        window = exceeded.window
        return RateLimitedError(MESSAGES.get(window.scope, "rate limited"),
                                retry_after=math.ceil(window.end - self._clock()))

    def mint(self, source_ip: str | None) -> None:
        """One more visitor minted for this address, or `rate_limited`."""
        self._take(MINT, source_ip or "unknown")

    def presence_pull(self, identity: Identity) -> None:
        """One more `POST /presence` by this identity, or `rate_limited`."""
        self._take(PRESENCE, identity.key)

    def upload(self, identity: Identity) -> None:
        """One more photo upload slot for this identity, or `rate_limited`."""
        self._take(UPLOAD, identity.key)

    def replay(self, identity: Identity) -> None:
        """A send whose client id was stored before (a retry, or a replay): it takes from the
        same window as a fresh send, so replaying is never cheaper than sending (the store
        refused it, so the transaction's counter did not move), or `rate_limited`."""
        self._take(SEND, identity.key)

    def report_window(self, identity: Identity) -> Window | None:
        """The counter a report by `identity` takes inside the report's own transaction (None:
        no limit), so a refused or repeated report counts nothing there."""
        return self._window(REPORT, identity.key)

    def report_replay(self, identity: Identity) -> None:
        """A report frame sent again (its report exists): it takes from the same window, so
        replaying is never cheaper than reporting, or `rate_limited`."""
        self._take(REPORT, identity.key)

    def send_window(self, identity: Identity) -> Window | None:
        """The counter a send by `identity` takes inside its own transaction (None: no limit);
        the store raises LimitExceeded, which `refusal` turns into the answer."""
        return self._window(SEND, identity.key)

    def admit_connection(self, identity: Identity, connection_id: str) -> None:
        """Before connection `connection_id` of `identity` is registered: take one of the
        identity's `max_connections` slots (WebSocket and long poll together), or refuse it.
        Whoever admitted a connection calls `release_connection` when it closes (or fails to
        open)."""
        slots, cap = self._slots, self._max_connections
        if cap <= 0 or slots is None:
            return
        # Each failed round means another open or close changed the slots meanwhile (it took,
        # freed or reclaimed one): a few rounds settle any race; only a read that finds every
        # slot live refuses.
        for _ in range(MAX_ROUNDS):
            now = int(self._clock())
            if slots.take_slot(identity, connection_id, now, cap) is None:
                return
            presence, routes = slots.read(identity)
            held = presence.slots if presence is not None else {}
            ends = {r.connection_id: r.ends_at for r in routes}
            dead = {c: t for c, t in held.items()
                    if (c in ends and ends[c] <= now) or (c not in ends and t + OPENING_GRACE_SECONDS <= now)}
            if not dead and len(held) < cap:
                continue  # freed meanwhile: take again
            if not dead:
                # the earliest a slot can free itself: a connection's deadline, or an opening's grace
                frees = [ends.get(c, t + OPENING_GRACE_SECONDS) for c, t in held.items()] or [now + 1]
                raise RateLimitedError(f"at most {cap} connections per identity; close one",
                                       retry_after=max(1, math.ceil(min(frees) - self._clock())))
            if slots.drop_slots(identity, dead, connection_id, now, cap):
                return
        raise RateLimitedError(f"at most {cap} connections per identity; close one", retry_after=1)

    def release_connection(self, identity: Identity, connection_id: str) -> None:
        """The connection closed (or failed to open): its slot is free again. Closing twice, or
        a connection that was never admitted, changes nothing."""
        if self._max_connections > 0 and self._slots is not None:
            self._slots.release_slot(identity, connection_id)
