"""Long polling: the second transport of the same protocol core, as a held "message connection".

A long-poll connection is a connection like a WebSocket one (routing, presence) until its
deadline, `window` seconds after `open` or its last `poll`. Frames pushed to it are numbered
in its mailbox (storage/mailbox.py, the one record of what is pending) and rung on its doorbell,
an SQS queue of its own (storage/doorbells.py) that carries a copy of each frame.

The wait (protocol version 4) runs no function: the client waits at `wait_url`, an API
Gateway route whose integration is SQS ReceiveMessage on the connection's queue, chosen by the
wait API's authorizer (`wait_queue`) from a token signed here (`wait_token`), never by the
client. What a function still does: `open` (record, mailbox, queue), `poll` (at once: releases
what the client has, moves the deadline and presence, returns what is pending: the client
polls on a gap, after a failed wait, to release, and as its heartbeat), `send` (client frames,
releasing on the way), `close`, and the sweeper of queues whose client vanished.
"""
from __future__ import annotations

import contextlib
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from chalicelib.errors import BannedError, ForbiddenError, LongPollGoneError
from chalicelib.logic.frames import Release
from chalicelib.logic.limits import Limits
from chalicelib.logic.presence import PresenceService
from chalicelib.logic.protocol import Caller, ProtocolCore
from chalicelib.observability import bind, module_logger
from chalicelib.principal import Identity
from chalicelib.routing.router import Router
from chalicelib.storage.bans import BansTable
from chalicelib.storage.connections import ConnectionRecord
from chalicelib.storage.doorbells import DoorbellQueues
from chalicelib.storage.mailbox import MailboxGone, MailboxTable, Pending

log = module_logger(__name__)  # JSON, with the invocation's keys
Frame = dict[str, Any]
SWEEP_BATCH = 100  # connection records checked per BatchGetItem
TAKE_ROUNDS = 5  # looks and releases again when another release of the same client moved the base


class WaitTickets(Protocol):
    """Who signs and reads wait tokens (logic/identity.py's Authenticator)."""

    def wait_token(self, connection_id: str) -> str: ...

    def waiting_connection(self, token: str | None) -> str | None: ...


@dataclass(frozen=True)
class LongPollTiming:
    """How long a long-poll connection lives without a poll, how often clients are told to
    poll anyway (under the window, with room for a slow or lost poll), and the clock."""

    window_seconds: int = 1200
    heartbeat_seconds: int = 540
    clock: Callable[[], float] = time.time


@dataclass(frozen=True)
class WaitLine:
    """Where a long-poll client waits: its connection's queue (the doorbells), the wait API's
    URL (None: clients only poll, e.g. a test without the API), and who signs wait tokens."""

    doorbells: DoorbellQueues
    tickets: WaitTickets
    url: str | None = None


class LongPollSessions:
    def __init__(self, core: ProtocolCore, router: Router, mailboxes: MailboxTable, presence: PresenceService,
                 timing: LongPollTiming, limits: Limits | None = None, waits: WaitLine | None = None) -> None:
        self._bans: BansTable | None = None
        self._core = core
        self._router = router
        self._mailboxes = mailboxes
        self._presence = presence
        self._timing = timing
        self._limits = limits
        self._doorbells = waits.doorbells if waits is not None else None
        self._waits = waits if waits is not None and waits.url is not None else None

    def add_bans(self, bans: BansTable) -> None:
        """Refuse a banned identity's open (docs/operator.md)."""
        self._bans = bans

    def open(self, identity: Identity) -> Frame:
        """A new long-poll connection. As with a WebSocket handshake, a refused or failed open
        leaves nothing behind: the client never learns the id, so nobody would close it."""
        connection_id = "lp-" + secrets.token_urlsafe(12)
        bind(connection_id=connection_id)
        if self._limits is not None:
            self._limits.admit_connection(identity, connection_id)  # rate_limited: refused, nothing written
        try:
            record = self._router.register(connection_id, identity, "mailbox", transport="lp",
                                           ttl_seconds=self._timing.window_seconds)
        except BaseException:
            self._release_slot(identity, connection_id)
            raise
        try:
            # the queue after the record: the sweeper never sees a queue whose record is not yet written
            if self._doorbells is not None:
                self._doorbells.create(connection_id)
            self._mailboxes.create(connection_id, identity, record.expires_at)
            self._presence.live(record)
            # banned (docs/operator.md): after the record, as a WebSocket's open (session.py)
            if self._bans is not None and self._bans.banned(identity):
                raise BannedError("this identity is banned")
        except Exception:
            self._undo_open(identity, record)
            raise
        opened: Frame = {"type": "opened", "connection_id": connection_id, "base": 1,
                         "window": self._timing.window_seconds, "heartbeat": self._timing.heartbeat_seconds}
        if self._waits is not None:
            opened.update(wait_url=self._waits.url, wait_token=self._waits.tickets.wait_token(connection_id))
        return opened

    def _undo_open(self, identity: Identity, record: ConnectionRecord) -> None:
        connection_id = record.connection_id
        with contextlib.suppress(Exception):  # it expires with the connection anyway
            self._mailboxes.delete(connection_id)
        if self._doorbells is not None:
            with contextlib.suppress(Exception):  # or the sweeper deletes it
                self._doorbells.delete(connection_id)
        self._presence.forget_unopened(record)
        self._release_slot(identity, connection_id)

    def _release_slot(self, identity: Identity, connection_id: str) -> None:
        """Give the connection's slot back (best effort on a failed open: a slot left behind
        is reclaimed when it would refuse an open, its connection having no record)."""
        if self._limits is not None:
            try:
                self._limits.release_connection(identity, connection_id)
            except Exception as error:
                log.warning("connection slot of %s not released: %s", connection_id, error)

    def _own(self, identity: Identity, connection_id: str) -> ConnectionRecord:
        bind(connection_id=connection_id)
        record = self._router.lookup(connection_id)
        if record is None or record.transport != "lp":
            raise LongPollGoneError("no such long-poll connection; open a new one and sync")
        if record.identity != identity:
            raise ForbiddenError("not your connection")
        return record

    def send(self, identity: Identity, connection_id: str, text: str, release: Release | None = None) -> list[Frame]:
        """Upstream: one client frame over a POST; the answers are the response body. A send
        may carry the client's cursor: what it has is released on the way (no poll for it)."""
        record = self._own(identity, connection_id)
        if release is not None:
            self._take(identity, connection_id, release, record.expires_at)
        return self._core.handle_text(Caller(record), text)

    def poll(self, identity: Identity, connection_id: str, release: Release) -> Frame:
        """Release what the client has (mailbox numbers <= cursor), move the connection's
        deadline and presence, and answer at once with everything still pending and a fresh
        wait token."""
        record = self._router.refresh(self._own(identity, connection_id), self._timing.window_seconds)
        if record is None:  # closed (or lapsed) since it was looked up
            raise LongPollGoneError("no such long-poll connection; open a new one and sync")
        self._presence.live(record)  # a poll is the long-poll connection's heartbeat
        pending = self._take(identity, connection_id, release, record.expires_at)
        frames = [json.loads(text) for text in pending.frames]
        answer: Frame = {"type": "poll", "base": pending.base, "cursor": pending.last, "frames": frames}
        if self._waits is not None:
            answer["wait_token"] = self._waits.tickets.wait_token(connection_id)
        return answer

    def wait_queue(self, token: str | None) -> str | None:
        """The wait API's authorizer: the queue a wait token may read, or None (refused). No
        read: a closed connection's queue is deleted, so its token waits on nothing."""
        if self._waits is None:
            return None
        connection_id = self._waits.tickets.waiting_connection(token)
        if connection_id is None or not connection_id.startswith("lp-"):
            return None
        return self._waits.doorbells.url(connection_id)

    def _take(self, identity: Identity, connection_id: str, release: Release, expires_at: int) -> Pending:
        # a cursor past the last frame ever delivered releases what is there (clamped, no
        # error); the mailbox never builds more than it can hold, whatever the number
        count = max(0, release.cursor - release.base + 1)
        try:
            return self._mailboxes.take(connection_id, identity, release.base, count, expires_at)
        except MailboxGone:
            pass
        # the client's view of the base is old (a response was lost): look, then release again.
        # Refused again: another release of the same client (a send and a poll both carrying the
        # cursor) moved the base between the look and the release; the connection is still there,
        # so look again (each refusal means another release went through: a few rounds settle it)
        for _ in range(TAKE_ROUNDS):
            peeked = self._mailboxes.peek(connection_id)
            if peeked is None or peeked.owner != identity:
                raise LongPollGoneError("no such long-poll connection; open a new one and sync") from None
            actual = peeked.pending
            count = min(max(0, release.cursor - actual.base + 1), len(actual.frames))
            try:
                return self._mailboxes.take(connection_id, identity, actual.base, count, expires_at)
            except MailboxGone:
                continue
        raise LongPollGoneError("the long-poll connection changed under the poll; poll again")

    def close(self, identity: Identity, connection_id: str, keep_doorbell: bool = False) -> None:
        """`keep_doorbell`: a ban's close (logic/operator.py) leaves the queue to the sweeper, so
        a held wait still gets the ring of the `banned` frame pushed just before."""
        record = self._own(identity, connection_id)
        self._router.unregister(record)
        self._release_slot(identity, connection_id)
        self._mailboxes.delete(connection_id)
        if self._doorbells is not None and not keep_doorbell:
            try:
                self._doorbells.delete(connection_id)
            except Exception as error:  # the sweeper deletes it: its record is gone
                log.warning("doorbell of closed long-poll connection %s not deleted: %s", connection_id, error)
        self._presence.gone(identity)

    def sweep(self) -> int:
        """Delete the queues of long-poll connections that ended without `close` (a client
        that vanished: its record expired or was dropped). Returns how many were deleted.
        The record is written before the queue is made, so a live connection's queue always
        has one. The whole listing comes first: deleting between its pages could skip queues."""
        if self._doorbells is None:
            return 0
        listed = list(self._doorbells.connection_ids())
        return sum(self._sweep(listed[i:i + SWEEP_BATCH]) for i in range(0, len(listed), SWEEP_BATCH))

    def _sweep(self, connection_ids: list[str]) -> int:
        assert self._doorbells is not None
        live = self._router.stored_ids(connection_ids)
        abandoned = [c for c in connection_ids if c not in live]
        for connection_id in abandoned:
            self._doorbells.delete(connection_id)
        return len(abandoned)
