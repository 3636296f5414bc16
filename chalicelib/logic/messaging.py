"""One-to-one messaging: the six packets, offline pull, history and the conversation list.

    sender --msg:R--> server --msg:N--> receiver      (the message, seq assigned)
    sender <--msg:A-- server                          (accepted: conversation, seq, time)
    receiver --ack:R--> server --ack:N--> sender      (delivered up to seq, cumulative)
    receiver <--ack:A-- server

Order of work for a send: store (one transaction), push msg:N, schedule the ack-timeout
check, answer msg:A. A crash anywhere leaves either nothing stored (the client's retry stores
it) or the message stored (the retry is recognised by its client id, answered with the
original msg:A, and msg:N and the check are redone; the receiver drops duplicates by seq).
Once the message is stored, a failing push or check is logged and msg:A is answered anyway:
the sender must never be told "failed" about a stored message (protocol.md §9a).
"""
from __future__ import annotations

import base64
import hashlib
import json
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from chalicelib import observability
from chalicelib.errors import AckBeyondLastError, InvalidFieldError, InvalidRecipientError, NotMemberError
from chalicelib.logic.fanout import GroupFanout
from chalicelib.logic.frames import (
    ConversationsRequest,
    CursorRequest,
    HistoryRequest,
    SendRequest,
    SettingsRequest,
    SyncRequest,
    encode_conversations_cursor,
)
from chalicelib.logic.limits import Limits
from chalicelib.logic.media import Media
from chalicelib.logic.privacy import may_reveal
from chalicelib.principal import Identity
from chalicelib.routing.router import Router
from chalicelib.storage.groups import GroupHead, GroupsStore, is_group_id
from chalicelib.storage.jobs_queue import JobsQueue
from chalicelib.storage.members import MembersTable, shown_link
from chalicelib.storage.messages import DuplicateSend, Message, MessagesTable, NotGroupMember, SeqConflict
from chalicelib.storage.rate_limits import LimitExceeded, Window

Frame = dict[str, Any]
ACK_CHECK = "ack_check"
MAX_SEQ_RETRIES = 100
# An answer is one WebSocket message (128 KB at most on API Gateway): pages stop at this budget.
ANSWER_BUDGET_BYTES = 96 * 1024


def direct_conversation_id(a: Identity, b: Identity) -> str:
    """The 1:1 conversation of two identities: derived from the pair, the same from both sides."""
    first, second = sorted([a.key, b.key])
    digest = hashlib.sha256(f"{first}\n{second}".encode()).digest()
    return "d_" + base64.urlsafe_b64encode(digest[:18]).decode()


class _LastSeqCache:
    """Per-container guess of each conversation's last seq, so most sends take one write.

    Only a guess: the head's condition decides, and a wrong guess costs one retry.
    """

    def __init__(self, size: int = 10_000) -> None:
        self._seqs: OrderedDict[str, int] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, conversation_id: str) -> int:
        with self._lock:
            return self._seqs.get(conversation_id, 0)

    def put(self, conversation_id: str, seq: int) -> None:
        with self._lock:
            if seq > self._seqs.get(conversation_id, 0):
                self._seqs[conversation_id] = seq
                self._seqs.move_to_end(conversation_id)
                if len(self._seqs) > self._size:
                    self._seqs.popitem(last=False)


class Messaging:
    def __init__(
        self,
        messages: MessagesTable,
        members: MembersTable,
        router: Router,
        checks: JobsQueue,
        ack_timeout_seconds: int,
        clock: Callable[[], float] = time.time,
        limits: Limits | None = None,
        groups: GroupsStore | None = None,
        fanout: GroupFanout | None = None,
        media: Media | None = None,
    ) -> None:
        self._media = media  # photos: checked before the store, signed into every message frame
        self._limits = limits  # the send rate is counted inside the send's transaction
        self._groups = groups  # group heads: last seq, preview, title (read at list/sync time)
        self._fanout = fanout  # group pushes, as jobs after `sent`
        self._messages = messages
        self._members = members
        self._router = router
        self._checks = checks
        self._ack_timeout = ack_timeout_seconds
        self._clock = clock
        self._last_seq = _LastSeqCache()

    # -- msg:R -> msg:N, msg:A ------------------------------------------------------------
    def send(self, sender: Identity, request: SendRequest, connection_id: str | None = None) -> Frame:
        """`connection_id`: the sending connection, which a group's fan-out skips (it has `sent`)."""
        observability.bind(client_id=request.client_id)
        if request.conversation_id is not None and is_group_id(request.conversation_id):
            # a group: the same seq loop, idempotency and `sent` as 1:1, in a transaction whose size
            # does not depend on the group's (membership is proved inside it, so there is no read
            # before it); the pushes are one fan-out job (logic/fanout.py)
            conversation_id = request.conversation_id
            receivers: list[Identity] = []
            observability.bind(conversation_id=conversation_id)
            message, receivers, repeated = self._store(
                sender, request, conversation_id, receivers,
                lambda m, expected, counter: self._messages.append_group(m, expected, counter=counter))
        else:
            conversation_id, receivers = self._resolve(sender, request)
            observability.bind(conversation_id=conversation_id)
            message, receivers, repeated = self._store(
                sender, request, conversation_id, receivers,
                lambda m, expected, counter: self._messages.append(m, receivers, expected, counter=counter))
        if message.image is not None and self._media is not None:
            self._media.confirm(message.image)  # before `sent`: a failure is retried by the client
        self._last_seq.put(message.conversation_id, message.seq)
        observability.message_stored(message.conversation_id, message.seq, request.client_id, sender.key, repeated)
        if repeated:
            self._redeliver(message, receivers)
        else:
            self._deliver(message, receivers, connection_id)
        return {"type": "sent", "ref": request.client_id, "conversation_id": message.conversation_id,
                "seq": message.seq, "time": message.time_ms}

    def _store(self, sender: Identity, request: SendRequest, conversation_id: str, receivers: list[Identity],
               append: Callable[[Message, int, Window | None], None]) -> tuple[Message, list[Identity], bool]:
        """Store the message as the next seq (`append` raises SeqConflict when another took it:
        try the next), or recognise a client id stored before. Returns the stored message, who
        receives it and whether it was a repeat. A refusal stores nothing."""
        image = self._attach(sender, request)
        expected = max(request.seq_hint, self._last_seq.get(conversation_id))
        counter = self._limits.send_window(sender) if self._limits else None
        for _ in range(MAX_SEQ_RETRIES):
            message = Message(conversation_id, expected + 1, sender, request.text,
                              int(self._clock() * 1000), request.client_id, image=image)
            try:
                append(message, expected, counter)
                return message, receivers, False
            except LimitExceeded as exceeded:
                assert self._limits is not None  # only a counted send can exceed
                raise self._limits.refusal(exceeded) from None  # nothing was stored
            except NotGroupMember:
                raise NotMemberError("not a member of this group") from None  # nothing was stored
            except SeqConflict as conflict:
                expected = conflict.actual
            except DuplicateSend as duplicate:
                if self._limits is not None:
                    self._limits.replay(sender)  # counted as a send: a replay is never cheaper
                original = self._messages.get(duplicate.conversation_id, duplicate.seq)
                assert original is not None, "an idempotency record always has its message"
                return original, self._receivers_of(original, sender, receivers), True
        raise RuntimeError("could not take a seq after many attempts")

    def _attach(self, sender: Identity, request: SendRequest) -> dict[str, Any] | None:
        """A photo's upload checked and copied to the message's own key, before the store
        (protocol.md §14.1); tagged attached after it. (A retried send finds the copy.)"""
        if request.image is None:
            return None
        if self._media is None:
            raise InvalidFieldError("photos are not enabled on this server")
        return self._media.attach(sender, request.image)

    def _frame(self, message: Message) -> Frame:
        """A message as every frame carries it: a photo's `image` with a freshly signed URL."""
        frame = message.to_frame()
        if message.image is not None and self._media is not None:
            frame["image"] = self._media.image_frame(message.image)
        return frame

    def _deliver(self, message: Message, receivers: list[Identity], connection_id: str | None) -> None:
        """After the store (or a recognised retry): a group message goes to the fan-out, a 1:1
        one is pushed and gets its ack check. (A client id reused across conversations is
        answered with the original, delivered as its own conversation's kind.)"""
        if is_group_id(message.conversation_id):
            if self._fanout is not None:
                self._fanout.start(message.conversation_id, message.seq, self._frame(message), connection_id)
        elif receivers:
            self._notify(message, receivers)

    def _redeliver(self, message: Message, receivers: list[Identity]) -> None:
        """A send whose client id was stored before: its own retry (the first answer was lost,
        or the server died before pushing) or a replay. Never fanned out again: a group's
        members that missed the message find it by their pull (protocol.md §13.1, the missed
        tail). A 1:1 receiver gets the push and the ack check again only while it has not
        acked the message (one half-price read decides), so replays cannot push to it
        without end."""
        if is_group_id(message.conversation_id) or not receivers:
            return
        theirs = self._members.get(receivers[0], message.conversation_id, consistent=False)
        if theirs is not None and int(theirs.get("acked_seq", 0)) >= message.seq:
            return
        self._notify(message, receivers)

    def _resolve(self, sender: Identity, request: SendRequest) -> tuple[str, list[Identity]]:
        """The conversation and who receives in it; the sender must be a member."""
        if request.to is not None:
            if request.to == sender:
                raise InvalidRecipientError("sending to oneself")
            return direct_conversation_id(sender, request.to), [request.to]
        assert request.conversation_id is not None
        membership = self._members.get(sender, request.conversation_id)
        if membership is None:
            raise NotMemberError("not a member of this conversation")
        return request.conversation_id, _peers(membership)

    def _receivers_of(self, original: Message, sender: Identity, receivers: list[Identity]) -> list[Identity]:
        if is_group_id(original.conversation_id):
            return []  # a group's receivers are its roster, read by the fan-out
        if receivers and original.conversation_id == direct_conversation_id(sender, receivers[0]):
            return receivers
        membership = self._members.get(sender, original.conversation_id)
        return _peers(membership) if membership and "peer" in membership else receivers

    def _notify(self, message: Message, receivers: list[Identity]) -> None:
        """Best effort, after the store. A lost push is recovered by the ack check (and the
        receiver's pull); a check that could not be scheduled means no retransmission for this
        message: a live receiver then gets it from its pull when a later message shows the gap,
        or on its next (re)connect; the sender's `delivered` waits until then."""
        frame = self._frame(message)
        for receiver in receivers:
            try:
                if not self._router.push_to(receiver, frame):
                    observability.receiver_offline(receiver.key, "send")
            except Exception:  # the ack check retransmits it
                observability.failed("push_failed", receiver=receiver.key)
        try:
            self._schedule_check(message.conversation_id, message.seq, receivers[0], attempt=1,
                                 sent_ms=message.time_ms)
        except Exception:  # the receiver's pull recovers the message
            observability.failed("ack_check_not_scheduled", receiver=receivers[0].key)

    def _schedule_check(self, conversation_id: str, seq: int, receiver: Identity, attempt: int,
                        sent_ms: int | None) -> None:
        # Check k is due timeout x (1 + 3 + ... + 3^(k-1)) after the send (10, 40, 130 s), counted
        # from the send, not from when the previous check ran: a check run late (a busy queue)
        # does not push the later ones back. (Jobs queued without `sent_ms`: from now.)
        if sent_ms is None:
            delay = self._ack_timeout * 3 ** (attempt - 1)
        else:
            due = sent_ms / 1000 + self._ack_timeout * (3 ** attempt - 1) // 2
            delay = max(0, math.ceil(due - self._clock()))
        self._checks.enqueue(ACK_CHECK, delay_seconds=min(delay, 900), conversation_id=conversation_id, seq=seq,
                             receiver=receiver.key, attempt=attempt, sent_ms=sent_ms)

    # -- ack:R -> ack:A, ack:N --------------------------------------------------------------
    def ack(self, member: Identity, request: CursorRequest) -> Frame:
        """Cumulative: the member has every message of the conversation up to `seq`. In a
        group only the member's cursor moves: no `delivered`, no ack check (protocol.md §13.1)."""
        if is_group_id(request.conversation_id):
            membership = self._advance_group(member, request, "acked_seq")
            return {"type": "acked", "conversation_id": request.conversation_id,
                    "seq": int(membership["acked_seq"])}
        membership, _ = self._advance(member, request, "acked_seq")
        # Whether or not this ack moved the cursor: an earlier one may have moved it and died
        # (or its write ran twice, the retry failing its own condition) before `delivered` went
        # out; `told_seq` says whether the sender still has to be told.
        self._tell_delivered(member, membership)
        return {"type": "acked", "conversation_id": request.conversation_id, "seq": int(membership["acked_seq"])}

    def _tell_delivered(self, receiver: Identity, membership: dict[str, Any]) -> None:
        """Push `delivered` up to the receiver's acked cursor to its peer, once: unless the
        peer was told that far already, or the privacy rule hides the receiver's signals there
        (logic/privacy.py: a visitor that never wrote, a user in a conversation carried over
        from a visitor that never wrote). Then note it told. A push that raises is not noted,
        so the ack check or the next ack tells again; a sender that is offline reads
        `peer_acked_seq` from its list."""
        acked = int(membership.get("acked_seq", 0))
        if acked <= int(membership.get("told_seq", 0)) or not may_reveal(receiver, membership):
            return
        delivered = {"type": "delivered", "conversation_id": membership["conversation_id"],
                     "seq": acked, "by": receiver.to_json()}
        self._router.push_to(Identity.from_key(membership["peer"]), delivered)
        self._members.mark_told(receiver, membership["conversation_id"], acked)

    def read(self, member: Identity, request: CursorRequest) -> Frame:
        """The read mark. A 1:1 mark that moved is pushed to the peer as `seen` when both have
        read receipts on (protocol.md §14.3); groups have `receipts` instead (§13.6)."""
        if is_group_id(request.conversation_id):
            membership = self._advance_group(member, request, "read_seq")
        else:
            membership, moved = self._advance(member, request, "read_seq")
            if moved and may_reveal(member, membership):  # the one privacy rule (logic/privacy.py)
                self._seen(member, Identity.from_key(membership["peer"]), request)
        return {"type": "read", "conversation_id": request.conversation_id, "seq": int(membership["read_seq"])}

    def _seen(self, reader: Identity, peer: Identity, request: CursorRequest) -> None:
        """Best effort after the mark is stored (one BatchGetItem of both settings, then the
        push): a lost `seen` is recovered from the list's `peer_read_seq`."""
        try:
            if all(self._members.read_receipts([reader, peer]).values()):
                self._router.push_to(peer, {"type": "seen", "conversation_id": request.conversation_id,
                                            "seq": request.seq, "by": reader.to_json()})
        except Exception:
            observability.failed("seen_push_failed", receiver=peer.key)

    def settings(self, member: Identity, request: SettingsRequest) -> Frame:
        """The caller's settings, after changing the ones the frame gives (§14.3)."""
        return {"type": "settings", **self._members.settings(member, read_receipts=request.read_receipts)}

    def _advance(self, member: Identity, request: CursorRequest, cursor: str) -> tuple[dict[str, Any], bool]:
        result = self._members.advance(member, request.conversation_id, cursor, request.seq)
        if result is None:
            raise NotMemberError("not a member of this conversation")
        membership, moved = result
        if not moved and request.seq > int(membership.get("last_seq", 0)):
            raise AckBeyondLastError(f"the conversation's last seq is {membership.get('last_seq', 0)}")
        return membership, moved

    def _advance_group(self, member: Identity, request: CursorRequest, cursor: str) -> dict[str, Any]:
        """A group membership keeps no last seq (nothing per member is written on send): the
        bound is the group's head, read eventually consistent first (last_seq only grows, so
        an old head that already reaches `seq` is proof), strongly only when it says less."""
        conversation_id, seq = request.conversation_id, request.seq
        if (self._messages.last_seq(conversation_id, consistent=False) < seq
                and (last := self._messages.last_seq(conversation_id)) < seq):
            if self._members.get(member, conversation_id) is None:
                raise NotMemberError("not a member of this conversation")  # a non-member learns nothing
            raise AckBeyondLastError(f"the conversation's last seq is {last}")
        result = self._members.advance(member, conversation_id, cursor, seq, bounded=False)
        if result is None:
            raise NotMemberError("not a member of this conversation")
        return result[0]

    # -- the ack-timeout check (an SQS job) ------------------------------------------------
    def check_ack(self, job: dict[str, Any], max_attempts: int) -> None:
        """Retransmit msg:N if the receiver has not acked `seq` and is connected; tell the
        sender `delivered` if the receiver acked but that push never went out (a crash or an
        error after the ack's write).

        Idempotent: run twice, it pushes twice (the client drops the duplicate by seq).
        Unacked messages stay stored either way, for the next pull. The next check is queued
        before this one pushes, so a check that dies or fails while retransmitting does not
        stretch the schedule (its own redelivery is extra, not the next step).
        """
        receiver = Identity.from_key(job["receiver"])
        conversation_id, seq, attempt = job["conversation_id"], int(job["seq"]), int(job["attempt"])
        observability.bind(conversation_id=conversation_id, seq=seq)
        # Half-price read first: acked_seq and told_seq only grow, so an older state that says
        # "acked and told" is the truth (almost every check ends here); otherwise read again.
        membership = self._members.get(receiver, conversation_id, consistent=False)
        if membership is not None and _settled(receiver, membership, seq):
            return
        membership = self._members.get(receiver, conversation_id)
        if membership is None or _settled(receiver, membership, seq):
            return
        acked = int(membership.get("acked_seq", 0))
        if acked >= seq:  # received, but the sender was never told
            self._tell_delivered(receiver, membership)
            return
        connections = self._router.connections_of(receiver)
        if not connections:  # offline: the message waits for the pull on reconnect
            observability.receiver_offline(receiver.key, "ack_check", attempt=attempt)
            return
        if attempt < max_attempts:
            self._schedule_check(conversation_id, seq, receiver, attempt + 1, job.get("sent_ms"))
        else:
            observability.retries_exhausted(receiver.key, attempt)
        unacked = self._messages.after(conversation_id, acked, limit=min(seq - acked, 50))
        for message in unacked:
            self._router.push_all(connections, self._frame(message))
        observability.retransmit(receiver.key, attempt, len(unacked), len(connections))

    # -- pull -------------------------------------------------------------------------------
    def sync(self, member: Identity, request: SyncRequest) -> Frame:
        """Offline pull: every conversation's messages after the acked cursor (or `since`).
        A group's last seq comes from its head (one BatchGetItem per 100 groups), and a group
        member never gets a message from before it joined."""
        messages: list[Frame] = []
        more = False
        budget, used = ANSWER_BUDGET_BYTES, 0
        memberships = self._members.conversations(member)
        heads = self._heads([m["conversation_id"] for m in memberships if is_group_id(m["conversation_id"])])
        for membership in memberships:
            conversation_id = membership["conversation_id"]
            after = request.since.get(conversation_id, int(membership.get("acked_seq", 0)))
            last_seq = int(membership.get("last_seq", 0))
            if is_group_id(conversation_id):
                head = heads.get(conversation_id)
                last_seq = head.last_seq if head else 0
                after = max(after, int(membership.get("joined_seq", 1)) - 1)
            if last_seq <= after:
                continue
            room = request.limit - len(messages)
            if room <= 0:
                more = True
                break
            page = self._messages.after(conversation_id, after, limit=room)
            taken = _within_budget([self._frame(m) for m in page], budget - used)
            messages.extend(taken)
            used += sum(_size(f) for f in taken)
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
        heads = self._heads([m["conversation_id"] for m in memberships])
        return {group_id: head.last_seq for group_id, head in heads.items()}

    def history(self, member: Identity, request: HistoryRequest) -> Frame:
        membership = self._members.get(member, request.conversation_id)
        if membership is None:
            raise NotMemberError("not a member of this conversation")
        if is_group_id(request.conversation_id):
            # never before the member joined; the newest without reading the head
            first = int(membership.get("joined_seq", 1))
            page = self._messages.before(request.conversation_id, request.before, request.limit, first=first)
            frames = _within_budget([self._frame(m) for m in reversed(page)], ANSWER_BUDGET_BYTES)[::-1]
            return {"type": "history", "conversation_id": request.conversation_id,
                    "messages": frames, "more": bool(frames) and frames[0]["seq"] > first}
        before = request.before or int(membership.get("last_seq", 0)) + 1
        page = self._messages.before(request.conversation_id, before, request.limit)
        frames = _within_budget([self._frame(m) for m in reversed(page)], ANSWER_BUDGET_BYTES)[::-1]
        return {"type": "history", "conversation_id": request.conversation_id,
                "messages": frames, "more": bool(frames) and frames[0]["seq"] > 1}

    def conversations(self, member: Identity, request: ConversationsRequest) -> Frame:
        """A page of the conversation list, newest last message first: peer, last message
        preview, unread count, and `peer_acked_seq` (how far the peer has received: "delivered"
        for messages whose live receipt this client never saw, after a reload or on another
        device), and `peer_read_seq` (how far the peer has read, "seen"; only when both have read
        receipts on). A page costs one Query of `limit` + 1 index entries (never the whole
        partition) and one BatchGetItem per 100 keys (its 1:1 peers' memberships, the caller's and
        the peers' settings: one for up to 49 entries); `cursor` continues after its last entry.

        Groups are merged into the same pages (protocol.md §13.4). Their memberships are not in
        the index (a group send writes nothing per member), so each page also reads the
        member's group memberships (one Query; at most GROUPS_PER_IDENTITY_LIMIT) and their
        heads (one BatchGetItem per 100 groups, none without groups). The order is last
        message time, newest first; at equal times direct conversations (in the index's
        order) come before groups (by id, descending): so a cursor on a group at time t has
        shown every direct conversation at t or later, and the next page's direct ones are
        those strictly older (`last_time < t`); a cursor on a direct one continues the index
        where it was and shows the groups at t or older not shown yet."""
        after = request.after
        on_group = after is not None and is_group_id(after[1])
        found, more = self._members.page(member, request.limit + 1, None if on_group else after,
                                         before_time=after[0] if after is not None and on_group else None)
        if len(found) > request.limit:
            found, more = found[:request.limit], True
        groups = self._group_entries(member, after)
        # the merge: (time, id, peer or None for a group, entry)
        listed: list[tuple[int, str, Identity | None, Frame]] = []
        direct = 0
        while len(listed) < request.limit:
            d = found[direct] if direct < len(found) else None
            if d is None and (more or not groups):
                break  # nothing left, or direct ones not read yet may come before the next group
            if d is not None and (not groups or int(d["last_time"]) >= groups[0][0]):
                listed.append(self._direct_entry(d))
                direct += 1
            else:
                listed.append(groups.pop(0))
        more = more or direct < len(found) or bool(groups)
        taken = len(_within_budget([entry for *_, entry in listed], ANSWER_BUDGET_BYTES))
        if taken < len(listed):
            listed, more = listed[:taken], True
        peers = [(peer, c["conversation_id"]) for _, _, peer, c in listed if peer is not None]
        # the peers' cursors and the read-receipts settings (the caller's, the peers'): one read
        # per 100 keys, none when the page has no 1:1
        cursors, receipts = self._members.cursors(peers, [member, *(p for p, _ in peers)]) if peers else ({}, {})
        for _, _, peer, conversation in listed:
            if peer is not None:
                theirs = cursors.get((peer, conversation["conversation_id"]))
                # the peer's cursors are signals about it: the one privacy rule (logic/privacy.py)
                shown = theirs if theirs is not None and may_reveal(peer, theirs) else {}
                acked, read = int(shown.get("acked_seq", 0)), int(shown.get("read_seq", 0))
                conversation["peer_acked_seq"] = acked
                if receipts.get(member) and receipts.get(peer):  # only when both have read receipts on
                    # never past what the peer has received: its read mark also moves to its own
                    # sends (it has read up to its own message), past ours it may not have yet
                    conversation["peer_read_seq"] = min(read, acked)
        cursor = None
        if more and listed:
            last_time, last_id, _, _ = listed[-1]
            cursor = encode_conversations_cursor(last_time, last_id)
        return {"type": "conversations", "conversations": [c for *_, c in listed], "more": cursor is not None,
                "cursor": cursor}

    @staticmethod
    def _direct_entry(m: dict[str, Any]) -> tuple[int, str, Identity | None, Frame]:
        last_seq = int(m.get("last_seq", 0))
        peer = Identity.from_key(m["peer"])
        linked = shown_link(m)  # only where the visitor wrote, or the user it became did
        return int(m["last_time"]), m["conversation_id"], peer, {
            "conversation_id": m["conversation_id"],
            "peer": peer.to_json(),
            "last_message": None if not last_seq else {
                "seq": last_seq, "time": int(m.get("last_time", 0)), "text": m.get("preview", ""),
                "from": Identity.from_key(m["last_sender"]).to_json() if m.get("last_sender") else None,
                **({"image": True} if m.get("preview_image") else {}),  # a photo; `text` is its caption
            },
            "unread": max(last_seq - int(m.get("read_seq", 0)), 0),
            "acked_seq": int(m.get("acked_seq", 0)),
            "read_seq": int(m.get("read_seq", 0)),
            **({"peer_linked_user": Identity.from_key(linked).to_json()} if linked else {}),
        }

    def _group_entries(self, member: Identity, after: tuple[int, str] | None
                       ) -> list[tuple[int, str, Identity | None, Frame]]:
        """The member's groups not listed before `after`, newest first, with preview and
        unread count derived from each group's head and the member's own cursors."""
        memberships = self._members.groups_of(member)
        heads = self._heads([m["conversation_id"] for m in memberships])
        entries: list[tuple[int, str, Identity | None, Frame]] = []
        for m in memberships:
            conversation_id, head = m["conversation_id"], heads.get(m["conversation_id"])
            if head is None:
                continue
            time_ms, last_seq = head.last_time, head.last_seq
            if after is not None and not _group_after(time_ms, conversation_id, after):
                continue
            read_seq = int(m.get("read_seq", 0))
            entries.append((time_ms, conversation_id, None, {
                "conversation_id": conversation_id,
                "group": {"title": head.title, "members_count": head.members_count,
                          "role": m.get("role", "member")},
                "last_message": None if not last_seq else {
                    "seq": last_seq, "time": time_ms, "text": head.preview,
                    "from": head.last_sender.to_json() if head.last_sender else None,
                    **({"event": head.last_event} if head.last_event else {}),
                    # a photo (an event after it leaves the flag on the head: the event wins)
                    **({"image": True} if head.preview_image and not head.last_event else {}),
                },
                "unread": max(last_seq - read_seq, 0),
                "acked_seq": int(m.get("acked_seq", 0)),
                "read_seq": read_seq,
                "joined_seq": int(m.get("joined_seq", 1)),
            }))
        entries.sort(key=lambda e: (e[0], e[1]), reverse=True)
        return entries

    def _heads(self, group_ids: list[str]) -> dict[str, GroupHead]:
        """Group heads by id, one BatchGetItem per 100 (none for no groups)."""
        if not group_ids or self._groups is None:
            return {}
        heads: dict[str, GroupHead] = {}
        for start in range(0, len(group_ids), 100):
            heads.update(self._groups.heads(group_ids[start:start + 100]))
        return heads


def _group_after(time_ms: int, conversation_id: str, after: tuple[int, str]) -> bool:
    """Whether a group at (time, id) comes after the cursor `after` in the list's order (at
    equal times: every direct conversation, then groups by id descending)."""
    at, at_id = after
    if time_ms != at:
        return time_ms < at
    return not is_group_id(at_id) or conversation_id < at_id


def _size(frame: Frame) -> int:
    return len(json.dumps(frame, ensure_ascii=False).encode("utf-8"))


def _within_budget(frames: list[Frame], budget: int) -> list[Frame]:
    """The longest prefix of `frames` that fits in `budget` bytes (at least one frame)."""
    taken: list[Frame] = []
    for frame in frames:
        budget -= _size(frame)
        if taken and budget < 0:
            break
        taken.append(frame)
    return taken


def _settled(receiver: Identity, membership: dict[str, Any], seq: int) -> bool:
    """Whether an ack check for `seq` has nothing left to do: the receiver acked it and the
    sender was told (or may not be told: the privacy rule)."""
    if int(membership.get("acked_seq", 0)) < seq:
        return False
    return int(membership.get("told_seq", 0)) >= seq or not may_reveal(receiver, membership)


def _peers(membership: dict[str, Any]) -> list[Identity]:
    """Who receives in a conversation: the peer, and the user a visitor peer has become where
    that is shown on this side (the visitor wrote here before linking, or the user wrote here)."""
    peers = [Identity.from_key(membership["peer"])]
    linked = shown_link(membership)
    if linked:
        peers.append(Identity.from_key(linked))
    return peers


def peers_of(membership: dict[str, Any]) -> list[Identity]:
    """Who gets a 1:1 conversation's pushes from this side (a `message`, a `typing`)."""
    return _peers(membership)
