"""Typing: an ephemeral signal, never stored as a message (protocol.md §14.2).

    sender --typing--> server --typing {from}--> the peer(s) (1:1) / the online members (group)

One conditional UpdateItem on the sender's own membership (`typing_at`) proves membership and
limits the rate in one write: a frame within `interval` of the last pushed one is dropped
silently (no answer, no push), so a burst of keystrokes costs one push per interval. A 1:1
signal is pushed to the peer's open connections (as a message, with a shown linked user); a
group's goes through the group fan-out as one job (no seq: every current online member, except
the sending connection). Nothing is retried: a lost `typing` is simply not shown.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from chalicelib import observability
from chalicelib.errors import NotMemberError
from chalicelib.logic.fanout import GroupFanout
from chalicelib.logic.frames import TypingRequest
from chalicelib.logic.privacy import may_reveal
from chalicelib.principal import Identity
from chalicelib.routing.router import Router
from chalicelib.storage.groups import is_group_id
from chalicelib.storage.members import MembersTable, TypingTooSoon

Frame = dict[str, Any]


class TypingSignals:
    def __init__(self, members: MembersTable, router: Router, fanout: GroupFanout | None,
                 interval_seconds: int, clock: Callable[[], float] = time.time) -> None:
        self._members = members
        self._router = router
        self._fanout = fanout
        self._interval_ms = interval_seconds * 1000
        self._clock = clock

    def typing(self, sender: Identity, request: TypingRequest, connection_id: str | None) -> list[Frame]:
        """No answer unless refused (`not_member`: nothing is pushed)."""
        conversation_id = request.conversation_id
        try:
            membership = self._members.touch_typing(sender, conversation_id, int(self._clock() * 1000),
                                                    self._interval_ms)
        except TypingTooSoon:
            return []  # one push per interval: the peers still show the last one
        if membership is None:
            raise NotMemberError("not a member of this conversation")
        if not may_reveal(sender, membership):
            return []  # the one privacy rule (logic/privacy.py): a visitor that never wrote here
        frame = {"type": "typing", "conversation_id": conversation_id, "from": sender.to_json()}
        if is_group_id(conversation_id):
            if self._fanout is not None:
                self._fanout.start_ephemeral(conversation_id, frame, connection_id)
            return []
        for receiver in membership.peers:
            try:
                self._router.push_to(receiver, frame)
            except Exception:  # best effort: a lost typing is not shown, nothing else depends on it
                observability.failed("typing_push_failed", receiver=receiver.key)
        return []
