"""Long polling: the second transport of the same protocol core, as a held "message connection".

A long-poll connection is a connection like a WebSocket one (routing, presence) while its polls
keep coming, and stops being one when no poll arrives within its window. Frames pushed to it
wait in its mailbox; a poll returns them at once if there are any, otherwise holds, looking at
the mailbox every `interval`, and returns the moment something arrives (or empty at the end of
the hold). Client frames come over a POST and get the same answers as on WebSocket.

The wait is a consistent GetItem of one small item per interval: on AWS each held poll is its
own Lambda container, so the interval is the latency bound (a frame is found at most one
interval after it was stored). Where one process holds many polls (the local stack), the
interval stretches with their number so the store is not flooded.
"""
from __future__ import annotations

import contextlib
import json
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

from chalicelib.errors import ForbiddenError, LongPollGoneError
from chalicelib.logic.limits import Limits
from chalicelib.logic.presence import PresenceService
from chalicelib.logic.protocol import Caller, ProtocolCore
from chalicelib.principal import Identity
from chalicelib.routing.router import Router
from chalicelib.storage.connections import ConnectionRecord
from chalicelib.storage.mailbox import MailboxGone, MailboxTable, Pending

Frame = dict[str, Any]
MAX_WAIT_SECONDS = 25  # under API Gateway's 29 s integration timeout


class _HeldPolls:
    """How many polls this process holds right now (always 1 per Lambda container on AWS)."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def __enter__(self) -> int:
        with self._lock:
            self.count += 1
            return self.count

    def __exit__(self, *_: object) -> None:
        with self._lock:
            self.count -= 1


class LongPollSessions:
    def __init__(
        self,
        core: ProtocolCore,
        router: Router,
        mailboxes: MailboxTable,
        presence: PresenceService,
        interval_seconds: float,
        grace_seconds: int,
        default_wait_seconds: int = 20,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        limits: Limits | None = None,
    ) -> None:
        self._core = core
        self._limits = limits
        self._router = router
        self._mailboxes = mailboxes
        self._presence = presence
        self._interval = interval_seconds
        self._grace = grace_seconds
        self.default_wait = default_wait_seconds
        self._clock = clock
        self._sleep = sleep
        self._held = _HeldPolls()

    def _window(self, wait: float) -> int:
        """How long a long-poll connection lives without a new poll: the hold plus a grace.
        Counted from the poll's start; a later poll with a shorter window never shortens the
        life an earlier one (or `open`) gave, so presence and routing end at the same time."""
        return int(wait) + self._grace

    def open(self, identity: Identity) -> Frame:
        """A new long-poll connection. As with a WebSocket handshake, a refused or failed open
        leaves nothing behind: the client never learns the id, so nobody would close it."""
        if self._limits is not None:
            self._limits.admit_connection(identity)  # rate_limited: refused, nothing written
        connection_id = "lp-" + secrets.token_urlsafe(12)
        record = self._router.register(connection_id, identity, "mailbox", transport="lp",
                                       ttl_seconds=self._window(self.default_wait))
        try:
            self._mailboxes.create(connection_id, identity, record.expires_at)
            self._presence.live(record)
        except Exception:
            with contextlib.suppress(Exception):  # it expires with the connection anyway
                self._mailboxes.delete(connection_id)
            self._presence.forget_unopened(record)
            raise
        return {"type": "opened", "connection_id": connection_id, "base": 1,
                "window": self._window(self.default_wait)}

    def _own(self, identity: Identity, connection_id: str) -> ConnectionRecord:
        record = self._router.lookup(connection_id)
        if record is None or record.transport != "lp":
            raise LongPollGoneError("no such long-poll connection; open a new one and sync")
        if record.identity != identity:
            raise ForbiddenError("not your connection")
        return record

    def send(self, identity: Identity, connection_id: str, text: str) -> list[Frame]:
        """Upstream: one client frame over a POST; the answers are the response body."""
        return self._core.handle_text(Caller(self._own(identity, connection_id)), text)

    def poll(self, identity: Identity, connection_id: str, cursor: int, base: int, wait: float) -> Frame:
        """Release what the client has (mailbox numbers <= cursor), then return what is
        pending at once, or hold up to `wait` seconds for it."""
        wait = max(0.0, min(wait, MAX_WAIT_SECONDS))
        record = self._router.refresh(self._own(identity, connection_id), self._window(wait))
        if record is None:  # closed (or lapsed) since it was looked up
            raise LongPollGoneError("no such long-poll connection; open a new one and sync")
        self._presence.live(record)  # a poll is the long-poll connection's heartbeat
        pending = self._take(identity, connection_id, cursor, base, record.expires_at)
        if pending.frames or wait == 0:
            return _answer(pending)
        deadline = self._clock() + wait
        with self._held as held:
            while self._clock() < deadline:
                self._sleep(min(self._interval * max(1, held // 4), max(deadline - self._clock(), 0)))
                peeked = self._mailboxes.peek(connection_id)
                if peeked is None:
                    raise LongPollGoneError("the long-poll connection was closed")
                if peeked[1].frames:
                    return _answer(peeked[1])
        return _answer(pending)

    def _take(self, identity: Identity, connection_id: str, cursor: int, base: int, expires_at: int) -> Pending:
        # a cursor past the last frame ever delivered releases what is there (clamped, no
        # error); the mailbox never builds more than it can hold, whatever the number
        release = max(0, cursor - base + 1)
        try:
            return self._mailboxes.take(connection_id, identity, base, release, expires_at)
        except MailboxGone:
            pass
        # the client's view of the base is old (a response was lost): look, then release again
        peeked = self._mailboxes.peek(connection_id)
        if peeked is None or peeked[0] != identity:
            raise LongPollGoneError("no such long-poll connection; open a new one and sync") from None
        actual = peeked[1]
        release = min(max(0, cursor - actual.base + 1), len(actual.frames))
        try:
            return self._mailboxes.take(connection_id, identity, actual.base, release, expires_at)
        except MailboxGone:
            raise LongPollGoneError("the long-poll connection changed under the poll; poll again") from None

    def close(self, identity: Identity, connection_id: str) -> None:
        record = self._own(identity, connection_id)
        self._router.unregister(record)
        self._mailboxes.delete(connection_id)
        self._presence.gone(identity)


def _answer(pending: Pending) -> Frame:
    frames = [json.loads(text) for text in pending.frames]
    return {"type": "poll", "base": pending.base, "cursor": pending.last, "frames": frames}
