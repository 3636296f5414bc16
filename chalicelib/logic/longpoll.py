"""Long polling: the second transport of the same protocol core, as a held "message connection".

A long-poll connection is a connection like a WebSocket one (routing, presence) while its polls
keep coming, and stops being one when no poll arrives within its window. Frames pushed to it
wait in its mailbox; a poll returns them at once if there are any, otherwise holds, looking at
the mailbox every `interval`, and returns the moment something arrives (or empty at the end of
the hold). Client frames come over a POST and get the same answers as on WebSocket.

The wait: each long-poll connection has a doorbell (storage/doorbells.py, an SQS queue made at
`open`, deleted at `close` or by the sweeper), which the push path rings after appending a frame.
A held poll waits in an SQS long poll on it (no Lambda work, no reads while idle) and, woken by
a ring or after `safety_seconds` without one (a lost ring), reads the mailbox consistently: a
frame is found one SQS wake-up after it was stored, or at worst one safety interval later.
Without doorbells (none configured, or the queue unusable) the poll falls back to a consistent
GetItem every `interval`; where one process holds many polls (the local stack), that interval
stretches with their number so the store is not flooded.
"""
from __future__ import annotations

import contextlib
import json
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chalicelib.errors import ForbiddenError, LongPollGoneError
from chalicelib.logic.limits import Limits
from chalicelib.logic.presence import PresenceService
from chalicelib.logic.protocol import Caller, ProtocolCore
from chalicelib.observability import bind, held_poll, module_logger
from chalicelib.principal import Identity
from chalicelib.routing.router import Router
from chalicelib.storage.connections import ConnectionRecord
from chalicelib.storage.doorbells import DoorbellQueues
from chalicelib.storage.mailbox import MailboxGone, MailboxTable, Pending

log = module_logger(__name__)  # JSON, with the invocation's keys
Frame = dict[str, Any]
MAX_WAIT_SECONDS = 25  # under API Gateway's 29 s integration timeout
SWEEP_BATCH = 100  # connection records checked per BatchGetItem


@dataclass(frozen=True)
class LongPollTiming:
    """How long-poll connections wait and live, and the clock they do it by."""

    interval_seconds: float  # between two mailbox reads without a doorbell
    grace_seconds: int  # a connection's life past its poll's hold
    default_wait_seconds: int = 20  # a poll's hold unless it asks for another
    safety_seconds: int = 5  # the longest doorbell wait before a read anyway (a lost ring)
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep


@dataclass
class _Hold:
    """One held poll's state: the number the next frame will have; no doorbell until
    `ring_from` (after a doorbell failed, look every interval until then)."""

    connection_id: str
    deadline: float
    held: int  # polls this process holds (stretches the interval without doorbells)
    expected: int
    ring_from: float = 0.0


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


class _Received:
    """Doorbells this process received and has not deleted yet, by connection. They are
    deleted when the connection's next wait starts here, not before answering the poll that
    they woke (one call less on the latency path); if that wait runs elsewhere (another Lambda
    container), they stay invisible until SQS drops them. Bounded: a forgotten entry costs
    nothing on AWS."""

    def __init__(self, size: int = 10_000) -> None:
        self._by_connection: OrderedDict[str, list[str]] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def add(self, connection_id: str, receipts: list[str]) -> None:
        if not receipts:
            return
        with self._lock:
            held = self._by_connection.pop(connection_id, [])
            self._by_connection[connection_id] = (held + receipts)[-10:]  # one DeleteMessageBatch
            if len(self._by_connection) > self._size:
                self._by_connection.popitem(last=False)

    def pop(self, connection_id: str) -> list[str]:
        with self._lock:
            return self._by_connection.pop(connection_id, [])


class LongPollSessions:
    def __init__(self, core: ProtocolCore, router: Router, mailboxes: MailboxTable, presence: PresenceService,
                 timing: LongPollTiming, limits: Limits | None = None, doorbells: DoorbellQueues | None = None
                 ) -> None:
        self._core = core
        self._doorbells = doorbells
        self._safety = max(1, timing.safety_seconds)
        self._limits = limits
        self._router = router
        self._mailboxes = mailboxes
        self._presence = presence
        self._interval = timing.interval_seconds
        self._grace = timing.grace_seconds
        self.default_wait = timing.default_wait_seconds
        self._clock = timing.clock
        self._sleep = timing.sleep
        self._held = _HeldPolls()
        self._received = _Received()

    def _window(self, wait: float) -> int:
        """How long a long-poll connection lives without a new poll: the hold plus a grace.
        Counted from the poll's start; a later poll with a shorter window never shortens the
        life an earlier one (or `open`) gave, so presence and routing end at the same time."""
        return int(wait) + self._grace

    def open(self, identity: Identity) -> Frame:
        """A new long-poll connection. As with a WebSocket handshake, a refused or failed open
        leaves nothing behind: the client never learns the id, so nobody would close it."""
        connection_id = "lp-" + secrets.token_urlsafe(12)
        bind(connection_id=connection_id)
        if self._limits is not None:
            self._limits.admit_connection(identity, connection_id)  # rate_limited: refused, nothing written
        try:
            record = self._router.register(connection_id, identity, "mailbox", transport="lp",
                                           ttl_seconds=self._window(self.default_wait))
        except BaseException:
            self._release(identity, connection_id)
            raise
        # the doorbell after the record: the sweeper never sees a queue whose record is not yet
        # written. Without one the connection still works, looking every interval.
        if self._doorbells is not None:
            try:
                self._doorbells.create(connection_id)
            except Exception as error:
                log.warning("no doorbell for long-poll connection %s: %s", connection_id, error)
        try:
            self._mailboxes.create(connection_id, identity, record.expires_at)
            self._presence.live(record)
        except Exception:
            with contextlib.suppress(Exception):  # it expires with the connection anyway
                self._mailboxes.delete(connection_id)
            if self._doorbells is not None:
                with contextlib.suppress(Exception):  # or the sweeper deletes it
                    self._doorbells.delete(connection_id)
            self._presence.forget_unopened(record)
            self._release(identity, connection_id)
            raise
        return {"type": "opened", "connection_id": connection_id, "base": 1,
                "window": self._window(self.default_wait)}

    def _release(self, identity: Identity, connection_id: str) -> None:
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
        held_poll()
        with self._held as held:
            # none pending now: the next frame will be number pending.base
            found = self._hold(_Hold(connection_id, self._clock() + wait, held, pending.base))
        return _answer(found or pending)

    def _hold(self, hold: _Hold) -> Pending | None:
        """Wait until frames are pending (returned) or the deadline passes (None)."""
        while (now := self._clock()) < hold.deadline:
            heard = self._listen(hold, now)
            if isinstance(heard, Pending):
                return heard  # exactly the next frames, copies included: no read
            if heard:
                # a gap, a doorbell without its copy, or the safety net: a consistent read (an
                # eventually consistent one could miss the frame whose ring woke us)
                peeked = self._mailboxes.peek(hold.connection_id)
                if peeked is None:
                    raise LongPollGoneError("the long-poll connection was closed")
                if peeked.pending.frames:
                    return peeked.pending
                hold.expected = peeked.pending.base  # nothing: wait again
        return None

    def _listen(self, hold: _Hold, now: float) -> Pending | bool:
        """One wait: on the doorbell (or, without a usable one, one interval's sleep). Returns
        the next frames when the doorbells carried exactly them; else whether to read the
        mailbox (False: only stale doorbells rang, or the doorbell failed: wait again)."""
        if self._doorbells is None or now < hold.ring_from:
            self._sleep(min(self._interval * max(1, hold.held // 4), max(hold.deadline - self._clock(), 0)))
            return True
        self._clear_received(hold.connection_id)
        try:
            rung = self._doorbells.wait(hold.connection_id, min(self._safety, max(1, int(hold.deadline - now))))
        except Exception as error:  # e.g. a queue not yet usable, or never made
            log.info("long-poll doorbell of %s unusable, looking every interval: %s", hold.connection_id, error)
            hold.ring_from = now + self._safety
            return False
        self._received.add(hold.connection_id, [bell.receipt for bell in rung])
        fresh = {bell.number: bell.frame for bell in rung if bell.number >= hold.expected}
        if any(bell.number <= 0 for bell in rung):
            return True  # rang without a number: look
        if rung and not fresh:
            return False  # stale: frames an earlier poll returned
        carried = _run_from(hold.expected, fresh)
        return True if carried is None else Pending(hold.expected, carried)

    def _clear_received(self, connection_id: str) -> None:
        assert self._doorbells is not None
        receipts = self._received.pop(connection_id)
        if receipts:
            try:
                self._doorbells.clear(connection_id, receipts)
            except Exception as error:  # they stay invisible until SQS drops them: harmless
                log.info("long-poll doorbells of %s not deleted: %s", connection_id, error)

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
        if peeked is None or peeked.owner != identity:
            raise LongPollGoneError("no such long-poll connection; open a new one and sync") from None
        actual = peeked.pending
        release = min(max(0, cursor - actual.base + 1), len(actual.frames))
        try:
            return self._mailboxes.take(connection_id, identity, actual.base, release, expires_at)
        except MailboxGone:
            raise LongPollGoneError("the long-poll connection changed under the poll; poll again") from None

    def close(self, identity: Identity, connection_id: str) -> None:
        record = self._own(identity, connection_id)
        self._router.unregister(record)
        self._release(identity, connection_id)
        self._mailboxes.delete(connection_id)
        if self._doorbells is not None:
            self._received.pop(connection_id)
            try:
                self._doorbells.delete(connection_id)
            except Exception as error:  # the sweeper deletes it: its record is gone
                log.warning("doorbell of closed long-poll connection %s not deleted: %s", connection_id, error)
        self._presence.gone(identity)

    def sweep(self) -> int:
        """Delete the doorbells of long-poll connections that ended without `close` (a client
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


def _run_from(first: int, frames: dict[int, str | None]) -> tuple[str, ...] | None:
    """The frames numbered first, first + 1, ... if `frames` holds exactly such a run with
    every copy present; else None (the mailbox must be read)."""
    run = [frames.get(first + i) for i in range(len(frames))]
    if not run or any(frame is None for frame in run):
        return None
    return tuple(frame for frame in run if frame is not None)


def _answer(pending: Pending) -> Frame:
    frames = [json.loads(text) for text in pending.frames]
    return {"type": "poll", "base": pending.base, "cursor": pending.last, "frames": frames}
