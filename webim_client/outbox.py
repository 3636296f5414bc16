"""The sending half of reliable delivery (docs/protocol.md §9a, §9b): the ack queue, no I/O.

Every send waits here until msg:A (`sent`); without it within the ack timeout it goes again with
the same id (the server stores it once), and after the last attempt it is "failed" until resent.
Messages of one conversation leave one at a time, so they keep the order they were typed in.
The clocks run only while connected: waiting offline never turns a message into "failed".
The mirror of frontend/lib/outbox.js: tests/client_scenarios/ runs on both.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from webim_client.inbox import Frame, Timers

SENDING, SENT, DELIVERED, SEEN, FAILED = "sending", "sent", "delivered", "seen", "failed"
KEEP_SETTLED = 2000  # sent messages remembered for their delivered receipt


def _line_of(frame: Frame) -> str:
    if frame.get("conversation_id"):
        return str(frame["conversation_id"])
    return f"to:{frame['to']['kind']}:{frame['to']['id']}"


@dataclass
class _Item:
    frame: Frame
    line: str
    state: str = SENDING
    attempts: int = 0
    timer: Any = None
    in_flight: bool = False
    conversation_id: str | None = None
    seq: int | None = None
    time: int | None = None
    error: str | None = None


class Outbox:
    def __init__(self, transmit: Callable[[Frame], bool], timers: Timers, ack_timeout_ms: float = 3000,
                 max_attempts: int = 4, on_change: Callable[[Frame], None] = lambda view: None) -> None:
        """transmit(frame) -> bool hands a frame to the connection (False: not connected);
        on_change(view) hears every state change of a message."""
        self.transmit = transmit
        self.timers = timers
        self.ack_timeout_ms = ack_timeout_ms
        self.max_attempts = max_attempts
        self.on_change = on_change
        self._items: dict[str, _Item] = {}  # id -> item, in the order they were added
        self._lines: dict[str, list[str]] = {}  # line -> ids still sending (the head is in flight)
        self._delivered_upto: dict[str, int] = {}  # may overtake `sent`
        self._seen_upto: dict[str, int] = {}  # so may `seen` (§14.3)
        self._online = False

    def add(self, frame: Frame) -> Frame:
        """A new message (a `send` frame with its id); adding an id again returns the first one."""
        known = self._items.get(frame["id"])
        if known is not None:
            return self.view(known)
        item = _Item(frame, _line_of(frame), conversation_id=frame.get("conversation_id"))
        self._items[frame["id"]] = item
        self._enqueue(item)
        self.on_change(self.view(item))
        self._pump(item.line)
        return self.view(item)

    def accepted(self, sent: Frame) -> Frame | None:
        """msg:A: the server stored the message. None for a repeated `sent`. A late `sent` (or a
        pulled copy) for a message shown failed moves it to sent: it was stored."""
        item = self._items.get(sent.get("ref", ""))
        if item is None or item.state not in (SENDING, FAILED):
            return None
        self._settle(item)
        item.state, item.conversation_id, item.seq, item.time = SENT, sent["conversation_id"], sent["seq"], sent["time"]
        if sent["seq"] <= self._seen_upto.get(sent["conversation_id"], 0):
            item.state = SEEN
        elif sent["seq"] <= self._delivered_upto.get(sent["conversation_id"], 0):
            item.state = DELIVERED  # the receipt overtook msg:A (they travel separately)
        self._forget_old()
        self.on_change(self.view(item))
        self._pump(item.line)
        return self.view(item)

    def rejected(self, ref: str, error: Frame) -> Frame | None:
        """An `error` answering a send is final (§8): failed, no automatic retry. But
        `internal_error` means "outcome unknown": the ack timeout sends the same frame again
        within its attempts, as for a lost answer; never "failed" for that alone. `rate_limited`
        did nothing: the same frame again after `retry_after` seconds, not counted.
        `connection_gone` did nothing either (the server no longer knows this connection): the
        client reconnects, and the reconnect sends the same frame again (§8)."""
        item = self._items.get(ref)
        if item is None or item.state != SENDING or error.get("code") in ("internal_error", "connection_gone"):
            return None
        if error.get("code") == "rate_limited":
            self._stop_clock(item)
            item.attempts = max(0, item.attempts - 1)

            def again() -> None:
                item.timer = None
                if item.state == SENDING and self._online:
                    self._transmit_now(item)

            item.timer = self.timers.set_timeout(again, float(error.get("retry_after") or 1) * 1000)
            return None
        self._fail(item, str(error.get("code") or "error"))
        return self.view(item)

    def has(self, message_id: str) -> bool:
        return message_id in self._items

    def in_flight(self, conversation_id: str) -> int:
        """How many of our sends may still get a seq in this conversation: sent at least once,
        no `sent` yet (a send with `to` may land in any conversation until its `sent`)."""
        return sum(1 for i in self._items.values() if i.state == SENDING and i.attempts > 0
                   and (i.conversation_id or conversation_id) == conversation_id)

    def delivered(self, conversation_id: str, seq: int) -> list[Frame]:
        """ack:N: the peer has everything up to seq in this conversation."""
        self._delivered_upto[conversation_id] = max(seq, self._delivered_upto.get(conversation_id, 0))
        changed = []
        for item in self._items.values():
            if item.state == SENT and item.conversation_id == conversation_id and (item.seq or 0) <= seq:
                item.state = DELIVERED
                changed.append(self.view(item))
                self.on_change(self.view(item))
        return changed

    def seen(self, conversation_id: str, seq: int) -> list[Frame]:
        """`seen` (§14.3): the peer has read everything up to seq here (so it has received it)."""
        self._seen_upto[conversation_id] = max(seq, self._seen_upto.get(conversation_id, 0))
        changed = []
        for item in self._items.values():
            if item.state in (SENT, DELIVERED) and item.conversation_id == conversation_id and (item.seq or 0) <= seq:
                item.state = SEEN
                changed.append(self.view(item))
                self.on_change(self.view(item))
        return changed

    def resend(self, message_id: str) -> Frame | None:
        """The resend button of a failed message: the same frame and id, so never stored twice."""
        item = self._items.get(message_id)
        if item is None or item.state != FAILED:
            return None
        item.state, item.error, item.attempts = SENDING, None, 0
        self._enqueue(item)
        self.on_change(self.view(item))
        self._pump(item.line)
        return self.view(item)

    def set_online(self, online: bool) -> None:
        """Connected: send every line's head now (after a reconnect, the same frames again).
        Disconnected: stop the clocks, so waiting offline never turns a message into "failed"."""
        self._online = online
        for item in self._items.values():
            self._stop_clock(item)
        if online:
            for line in list(self._lines):
                self._pump(line, again=True)

    def view(self, item: _Item) -> Frame:
        return {"id": item.frame["id"], "text": item.frame["text"], "to": item.frame.get("to"),
                "conversation_id": item.conversation_id, "seq": item.seq, "time": item.time,
                "state": item.state, "error": item.error, "attempts": item.attempts}

    def _enqueue(self, item: _Item) -> None:
        self._lines.setdefault(item.line, []).append(item.frame["id"])

    def _pump(self, line: str, again: bool = False) -> None:
        queue = self._lines.get(line)
        head = self._items.get(queue[0]) if queue else None
        if head is None or not self._online or (head.in_flight and not again):
            return
        self._transmit_now(head)

    def _transmit_now(self, item: _Item) -> None:
        self._stop_clock(item)
        if not self.transmit(item.frame):
            return  # not connected: set_online(True) sends it
        item.in_flight = True
        item.attempts += 1
        item.timer = self.timers.set_timeout(lambda: self._timed_out(item), self.ack_timeout_ms)

    def _timed_out(self, item: _Item) -> None:
        item.timer = None
        if item.state != SENDING or not self._online:
            return
        if item.attempts < self.max_attempts:
            self._transmit_now(item)
        else:
            self._fail(item, "timeout")

    def _fail(self, item: _Item, code: str) -> None:
        self._settle(item)
        item.state, item.error = FAILED, code
        self.on_change(self.view(item))
        self._pump(item.line)  # the next message of the line goes on

    def _settle(self, item: _Item) -> None:
        self._stop_clock(item)
        item.in_flight = False
        queue = self._lines.get(item.line)
        if queue is None:
            return
        if item.frame["id"] in queue:
            queue.remove(item.frame["id"])
        if not queue:
            del self._lines[item.line]

    def _stop_clock(self, item: _Item) -> None:
        if item.timer is not None:
            self.timers.clear_timeout(item.timer)
        item.timer = None

    def _forget_old(self) -> None:
        settled = [i for i in self._items.values() if i.state in (SENT, DELIVERED, SEEN)]
        for item in settled[:max(0, len(settled) - KEEP_SETTLED)]:
            del self._items[item.frame["id"]]
