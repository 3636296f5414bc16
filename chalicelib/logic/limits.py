"""Abuse limits: how much one client (source IP) or one identity may do, and the refusal.

| what | per | how it is counted | cost |
|---|---|---|---|
| minting visitors | source IP | a fixed-window counter | one UpdateItem per mint |
| sends | identity | the same counter, as one more item of the send's transaction | no extra call |
| presence pulls | identity | a fixed-window counter | one UpdateItem per pull |
| photo upload slots | identity | a fixed-window counter | one UpdateItem per slot |
| open connections | identity | its live connections (one Query of its routing partition) | one Query per open |

A refusal is `rate_limited` (429) with `retry_after` seconds: the end of the window, or when
the earliest live connection stops counting unless renewed. A refused attempt changes nothing
(a refused send stores nothing). Fixed windows let a burst at a window's edge reach twice a
limit, which is enough against abuse and costs one small item per window; the connection
count is checked before the new one is registered, so opens racing each other can overshoot
by how many race (nothing is locked for it). A limit of 0 is off.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from chalicelib.errors import RateLimitedError
from chalicelib.principal import Identity
from chalicelib.routing.router import Router
from chalicelib.storage.rate_limits import LimitExceeded, RateLimitTable, Window

MINT, SEND, PRESENCE, UPLOAD = "mint", "send", "presence", "upload"
MESSAGES = {
    MINT: "too many new visitors from this address; retry later",
    SEND: "too many messages; retry later",
    PRESENCE: "too many presence requests; retry later",
    UPLOAD: "too many uploads; retry later",
}


@dataclass(frozen=True)
class Rate:
    limit: int  # 0: no limit
    seconds: int


class Limits:
    def __init__(
        self,
        counters: RateLimitTable,
        router: Router,
        mint: Rate,
        send: Rate,
        presence_pull: Rate,
        max_connections: int,
        clock: Callable[[], float] = time.time,
        upload: Rate | None = None,
    ) -> None:
        self._counters = counters
        self._router = router
        self._rates = {MINT: mint, SEND: send, PRESENCE: presence_pull, UPLOAD: upload or Rate(0, 60)}
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

    def send_window(self, identity: Identity) -> Window | None:
        """The counter a send by `identity` takes inside its own transaction (None: no limit);
        the store raises LimitExceeded, which `refusal` turns into the answer."""
        return self._window(SEND, identity.key)

    def admit_connection(self, identity: Identity) -> None:
        """Before a connection of `identity` is registered: refuse it when the identity
        already has `max_connections` live ones (WebSocket and long poll together)."""
        if self._max_connections <= 0:
            return
        now = self._clock()
        live = [c.live_until for c in self._router.connections_of(identity) if c.live_until > now]
        if len(live) >= self._max_connections:
            raise RateLimitedError(f"at most {self._max_connections} connections per identity; close one",
                                   retry_after=math.ceil(min(live) - now))
