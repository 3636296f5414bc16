"""The conversation list (protocol.md §6.6, §13.4): a page of 1:1 conversations and groups,
newest last message first, with preview, unread count and the peer's cursors.

A page costs one Query of `limit` + 1 index entries (never the whole partition) and one
BatchGetItem per 100 keys (its 1:1 peers' memberships, the caller's and the peers' settings:
one for up to 49 entries); `cursor` continues after its last entry.

Groups are merged into the same pages. Their memberships are not in the `by_last_time` index
(a group send writes nothing per member), so each page also reads the member's group
memberships (one Query; at most GROUPS_PER_IDENTITY_LIMIT) and their heads (one BatchGetItem
per 100 groups, none without groups). The order is last message time, newest first; at equal
times direct conversations (in the index's order) come before groups (by id, descending): so a
cursor on a group at time t has shown every direct conversation at t or later, and the next
page's direct ones are those strictly older (`last_time < t`); a cursor on a direct one
continues the index where it was and shows the groups at t or older not shown yet.
"""
from __future__ import annotations

from typing import Any

from chalicelib.logic.frames import ConversationsRequest, encode_conversations_cursor
from chalicelib.logic.message_frames import ANSWER_BUDGET_BYTES, MessagingParts, group_heads, within_budget
from chalicelib.logic.privacy import may_reveal
from chalicelib.principal import Identity
from chalicelib.storage.groups import GroupHead, is_group_id
from chalicelib.storage.members import Membership

Frame = dict[str, Any]
# one listed conversation: (last message time, id, the peer or None for a group, its entry)
Entry = tuple[int, str, Identity | None, Frame]


class ConversationList:
    def __init__(self, parts: MessagingParts) -> None:
        self._members = parts.members
        self._groups = parts.groups

    def page(self, member: Identity, request: ConversationsRequest) -> Frame:
        """A page of the conversation list: peer, last message preview, unread count, and
        `peer_acked_seq` (how far the peer has received: "delivered" for messages whose live
        receipt this client never saw, after a reload or on another device), and
        `peer_read_seq` (how far the peer has read, "seen"; only when both have read receipts
        on). The costs and the order: the module docstring."""
        found, more = self._direct_page(member, request.limit, request.after)
        listed, more = _merge(found, self._group_entries(member, request.after), more, request.limit)
        taken = len(within_budget([entry for *_, entry in listed], ANSWER_BUDGET_BYTES))
        if taken < len(listed):
            listed, more = listed[:taken], True
        self._add_peer_cursors(member, listed)
        cursor = None
        if more and listed:
            last_time, last_id, _, _ = listed[-1]
            cursor = encode_conversations_cursor(last_time, last_id)
        # `hide_blocked` (§15): left out after the page and its cursor are made, so the pages
        # stay the same positions in the index (a page may then be short, even empty, with more)
        hidden = {m.conversation_id for m in found if m.blocked} if request.hide_blocked else set()
        entries = [entry for _, conversation_id, _, entry in listed if conversation_id not in hidden]
        return {"type": "conversations", "conversations": entries, "more": cursor is not None, "cursor": cursor}

    def _direct_page(self, member: Identity, limit: int, after: tuple[int, str] | None
                     ) -> tuple[list[Membership], bool]:
        """Up to `limit` 1:1 memberships after the cursor, and whether more may follow: after a
        direct one, where the index was; after a group at time t, those strictly older."""
        on_group = after is not None and is_group_id(after[1])
        found, more = self._members.page(member, limit + 1, None if on_group else after,
                                         before_time=after[0] if after is not None and on_group else None)
        if len(found) > limit:
            found, more = found[:limit], True
        return found, more

    def _group_entries(self, member: Identity, after: tuple[int, str] | None) -> list[Entry]:
        """The member's groups not listed before `after`, newest first, with preview and
        unread count derived from each group's head and the member's own cursors."""
        memberships = self._members.groups_of(member)
        heads = group_heads(self._groups, [m.conversation_id for m in memberships])
        entries = [_group_entry(m, head) for m in memberships
                   if (head := heads.get(m.conversation_id)) is not None
                   and (after is None or _group_after(head.last_time, m.conversation_id, after))]
        entries.sort(key=lambda e: (e[0], e[1]), reverse=True)
        return entries

    def _add_peer_cursors(self, member: Identity, listed: list[Entry]) -> None:
        """Each 1:1 entry's `peer_acked_seq` and (both with read receipts on) `peer_read_seq`:
        the peers' cursors and the settings (the caller's, the peers'), one read per 100 keys,
        none when the page has no 1:1."""
        peers = [(peer, conversation_id) for _, conversation_id, peer, _ in listed if peer is not None]
        if not peers:
            return
        cursors, receipts = self._members.cursors(peers, [member, *(p for p, _ in peers)])
        for _, conversation_id, peer, entry in listed:
            if peer is None:
                continue
            theirs = cursors.get((peer, conversation_id))
            # the peer's cursors are signals about it: the one privacy rule (logic/privacy.py)
            shown = theirs if theirs is not None and may_reveal(peer, theirs) else None
            acked = shown.acked_seq if shown else 0
            entry["peer_acked_seq"] = acked
            if receipts.get(member) and receipts.get(peer):  # only when both have read receipts on
                # never past what the peer has received: its read mark also moves to its own
                # sends (it has read up to its own message), past ours it may not have yet
                entry["peer_read_seq"] = min(shown.read_seq if shown else 0, acked)


def _merge(found: list[Membership], groups: list[Entry], more: bool, limit: int) -> tuple[list[Entry], bool]:
    """Direct conversations (newest first, as the index gave them) and groups merged, at most
    `limit`; whether more may follow."""
    listed: list[Entry] = []
    direct = 0
    while len(listed) < limit:
        d = found[direct] if direct < len(found) else None
        if d is None and (more or not groups):
            break  # nothing left, or direct ones not read yet may come before the next group
        if d is not None and (not groups or d.last_time >= groups[0][0]):
            listed.append(_direct_entry(d))
            direct += 1
        else:
            listed.append(groups.pop(0))
    return listed, more or direct < len(found) or bool(groups)


def _last_message(seq: int, time_ms: int, preview: str, sender: Identity | None) -> Frame | None:
    if not seq:
        return None
    return {"seq": seq, "time": time_ms, "text": preview, "from": sender.to_json() if sender else None}


def _direct_entry(m: Membership) -> Entry:
    assert m.peer is not None, "the by_last_time index holds 1:1 memberships only"
    last = _last_message(m.last_seq, m.last_time, m.preview, m.last_sender)
    if last is not None and m.last_event:
        last["event"] = m.last_event  # a delete's tombstone: the list says "Message deleted"
    elif last is not None and m.preview_image:
        last["image"] = True  # a photo; `text` is its caption
    linked = m.shown_link  # only where the visitor wrote, or the user it became did
    return m.last_time, m.conversation_id, m.peer, {
        "conversation_id": m.conversation_id,
        "peer": m.peer.to_json(),
        "last_message": last,
        "unread": max(m.last_seq - m.read_seq, 0),
        "acked_seq": m.acked_seq,
        "read_seq": m.read_seq,
        **({"peer_linked_user": linked.to_json()} if linked else {}),
        **({"blocked": True} if m.blocked else {}),  # the caller blocked this peer (§15)
    }


def _group_entry(m: Membership, head: GroupHead) -> Entry:
    last = _last_message(head.last_seq, head.last_time, head.preview, head.last_sender)
    if last is not None and head.last_event:
        last["event"] = head.last_event
    elif last is not None and head.preview_image:
        last["image"] = True  # a photo (an event after it leaves the flag on the head: the event wins)
    return head.last_time, m.conversation_id, None, {
        "conversation_id": m.conversation_id,
        "group": {"title": head.title, "members_count": head.members_count, "role": m.role or "member"},
        "last_message": last,
        "unread": max(head.last_seq - m.read_seq, 0),
        "acked_seq": m.acked_seq,
        "read_seq": m.read_seq,
        "joined_seq": m.joined_seq,
    }


def _group_after(time_ms: int, conversation_id: str, after: tuple[int, str]) -> bool:
    """Whether a group at (time, id) comes after the cursor `after` in the list's order (at
    equal times: every direct conversation, then groups by id descending)."""
    at, at_id = after
    if time_ms != at:
        return time_ms < at
    return not is_group_id(at_id) or conversation_id < at_id
