"""Typing (docs/protocol.md §14.2), no I/O: who is shown typing where, and our own `typing`
frames throttled.

- Ours: at most one `typing` frame per conversation per `send_every_ms` (3 s) while the user
  types a non-empty draft (the server drops the extra ones anyway; this saves the frames).
- Theirs: a person is shown typing in a conversation for `show_ms` (6 s) after their last
  `typing`, or until a message from that person arrives in that conversation.

The mirror of frontend/lib/typing.js: tests/client_scenarios/ runs on both.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from webim_client.inbox import Frame, Timers

SEND_EVERY_MS = 3000
SHOW_MS = 6000


def _key(identity: Frame) -> str:
    return f"{identity.get('kind')}:{identity.get('id')}"


class Typing:
    def __init__(self, transmit: Callable[[Frame], bool], timers: Timers, me: Frame | None = None,
                 on_change: Callable[[str, list[Frame]], None] = lambda conversation_id, people: None,
                 send_every_ms: float = SEND_EVERY_MS, show_ms: float = SHOW_MS) -> None:
        """transmit(frame) -> bool hands a frame to the connection (False: not connected);
        on_change(conversation_id, people) hears who is typing there after every change."""
        self.transmit = transmit
        self.timers = timers
        self.me = me
        self.on_change = on_change
        self.send_every_ms = send_every_ms
        self.show_ms = show_ms
        self._cooling: dict[str, Any] = {}  # conversation -> timer: a frame went less than 3 s ago
        self._shown: dict[str, dict[str, tuple[Frame, Any]]] = {}  # conversation -> person -> (who, timer)

    def typed(self, conversation_id: str) -> bool:
        """The user typed into a non-empty draft: send `typing` unless one went within the
        interval. Returns whether a frame was sent."""
        if conversation_id in self._cooling:
            return False
        if not self.transmit({"action": "typing", "conversation_id": conversation_id}):
            return False  # offline: the next keystroke after reconnecting sends it

        def cooled() -> None:
            self._cooling.pop(conversation_id, None)

        self._cooling[conversation_id] = self.timers.set_timeout(cooled, self.send_every_ms)
        return True

    def received(self, frame: Frame) -> None:
        """A `typing` frame: show its sender for `show_ms` from now (never ourselves)."""
        who, conversation_id = frame.get("from") or {}, str(frame.get("conversation_id"))
        if self.me is not None and _key(who) == _key(self.me):
            return
        shown = self._shown.setdefault(conversation_id, {})
        key = _key(who)
        if key in shown:
            self.timers.clear_timeout(shown[key][1])
        shown[key] = (who, self.timers.set_timeout(lambda: self._hide(conversation_id, key), self.show_ms))
        self.on_change(conversation_id, self.who(conversation_id))

    def message(self, message: Frame) -> None:
        """A message arrived (pushed or pulled): its sender has stopped typing there."""
        conversation_id = str(message.get("conversation_id"))
        key = _key(message.get("from") or {})
        shown = self._shown.get(conversation_id, {})
        if key in shown:
            self.timers.clear_timeout(shown[key][1])
            self._hide(conversation_id, key)

    def who(self, conversation_id: str) -> list[Frame]:
        """The people shown typing in a conversation, in the order they started."""
        return [who for who, _ in self._shown.get(conversation_id, {}).values()]

    def _hide(self, conversation_id: str, key: str) -> None:
        shown = self._shown.get(conversation_id, {})
        if shown.pop(key, None) is not None:
            if not shown:
                self._shown.pop(conversation_id, None)
            self.on_change(conversation_id, self.who(conversation_id))
