"""The pull: `sync` (every conversation's messages after the acked cursor), `history` (one
conversation, older pages) and the groups' tails a `ping` carries (protocol.md §7, §13.8).

A group's last seq comes from its head (group sends write nothing per member), and a group
member never gets a message from before it joined. Every answer stays within one WebSocket
message (message_frames.ANSWER_BUDGET_BYTES).
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from chalicelib.errors import NotMemberError
from chalicelib.logic.frames import HistoryRequest, SyncRequest
from chalicelib.logic.message_frames import (
    ANSWER_BUDGET_BYTES,
    MessagingParts,
    frame_size,
    group_heads,
    message_frame,
    within_budget,
)
from chalicelib.principal import Identity
from chalicelib.storage.groups import GroupHead, is_group_id
from chalicelib.storage.members import Membership
from chalicelib.storage.messages import Message

Frame = dict[str, Any]


class Pull:
    def __init__(self, parts: MessagingParts) -> None:
        self._messages = parts.messages
        self._members = parts.members
        self._groups = parts.groups
        self._media = parts.media

    def sync(self, member: Identity, request: SyncRequest) -> Frame:
        """Offline pull: every conversation's messages after the acked cursor (or `since`).
        A group's last seq comes from its head (one BatchGetItem per 100 groups), and a group
        member never gets a message from before it joined."""
        messages: list[Frame] = []
        more = False
        used = 0
        memberships = self._members.conversations(member)
        heads = group_heads(self._groups, [m.conversation_id for m in memberships if is_group_id(m.conversation_id)])
        for membership in memberships:
            after, last_seq = _unread_range(membership, request, heads.get(membership.conversation_id))
            if last_seq <= after:
                continue
            room = request.limit - len(messages)
            if room <= 0:
                more = True
                break
            page = self._messages.after(membership.conversation_id, after, limit=room)
            taken = within_budget(self._frames(page), ANSWER_BUDGET_BYTES - used)
            messages.extend(taken)
            used += sum(frame_size(f) for f in taken)
            if len(taken) < len(page) or (page and page[-1].seq < last_seq):
                more = True
            if len(taken) < len(page):
                break
        return {"type": "sync", "messages": messages, "more": more}

    def group_tails(self, member: Identity) -> dict[str, int]:
        """Each of the member's groups' last seq: one Query of its group memberships (at most
        GROUPS_PER_IDENTITY_LIMIT) and one BatchGetItem of their heads per 100 (none without
        groups). Never what a group holds from before the member joined: a last seq only."""
        memberships = self._members.groups_of(member)
        heads = group_heads(self._groups, [m.conversation_id for m in memberships])
        return {group_id: head.last_seq for group_id, head in heads.items()}

    def history(self, member: Identity, request: HistoryRequest) -> Frame:
        membership = self._members.get(member, request.conversation_id)
        if membership is None:
            raise NotMemberError("not a member of this conversation")
        if is_group_id(request.conversation_id):
            # never before the member joined; the newest without reading the head
            first, before = membership.joined_seq, request.before
        else:
            first, before = 1, request.before or membership.last_seq + 1
        page = self._messages.before(request.conversation_id, before, request.limit, first=first)
        frames = within_budget(self._frames(reversed(page)), ANSWER_BUDGET_BYTES)[::-1]
        return {"type": "history", "conversation_id": request.conversation_id,
                "messages": frames, "more": bool(frames) and frames[0]["seq"] > first}

    def _frames(self, messages: Iterable[Message]) -> list[Frame]:
        return [message_frame(m, self._media) for m in messages]


def _unread_range(membership: Membership, request: SyncRequest, head: GroupHead | None) -> tuple[int, int]:
    """(after, last seq) of what `sync` sends of one conversation: after the acked cursor (or
    the frame's `since`), and in a group never from before the member joined, up to the
    group's head (no head read: nothing)."""
    after = request.since.get(membership.conversation_id, membership.acked_seq)
    if not is_group_id(membership.conversation_id):
        return after, membership.last_seq
    return max(after, membership.joined_seq - 1), head.last_seq if head else 0
