"""Messaging: the six packets (1:1), group sends, `read` and the read-receipts setting.
The pull (pull.py), the conversation list (conversations.py) and the ack-timeout check
(ack_check.py) are their own services, built from the same `MessagingParts`.

    sender --msg:R--> server --msg:N--> receiver      (the message, seq assigned)
    sender <--msg:A-- server                          (accepted: conversation, seq, time)
    receiver --ack:R--> server --ack:N--> sender      (delivered up to seq, cumulative)
    receiver <--ack:A-- server

Order of work for a send: store (one transaction), push msg:N, schedule the ack-timeout
check, answer msg:A. A crash anywhere leaves either nothing stored (the client's retry stores
it) or the message stored (the retry is recognised by its client id, answered with the
original msg:A, and msg:N and the check are redone; the receiver drops duplicates by seq).
Once the message is stored, a failing push is logged and msg:A is answered anyway: the sender
must never be told "failed" about a stored message. A check (or a group's fan-out) that cannot
be queued is answered `internal_error`, "outcome unknown", whose retry redoes it (§9a).
"""
from __future__ import annotations

import base64
import contextlib
import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from chalicelib import observability
from chalicelib.errors import (
    AckBeyondLastError,
    BlockedError,
    DeliveryNotStarted,
    InvalidFieldError,
    InvalidRecipientError,
    NotMemberError,
    RecipientUnavailableError,
    UploadNotFoundError,
)
from chalicelib.logic.ack_check import ACK_CHECK, AckCheck, AckCheckNotScheduled
from chalicelib.logic.conversations import ConversationList
from chalicelib.logic.deletion import Deletion
from chalicelib.logic.delivery import queue_or_refuse
from chalicelib.logic.frames import BlockRequest, CursorRequest, SendRequest, SettingsRequest
from chalicelib.logic.message_frames import MessagingParts, message_frame
from chalicelib.logic.privacy import may_reveal
from chalicelib.logic.pull import Pull
from chalicelib.principal import Identity
from chalicelib.storage.groups import is_group_id
from chalicelib.storage.media import StoredImage
from chalicelib.storage.members import Cursor, Membership, NotDirect
from chalicelib.storage.messages import (
    DuplicateSend,
    Message,
    NotGroupMember,
    ReceiverBlocked,
    SenderBlocked,
    SeqConflict,
)
from chalicelib.storage.rate_limits import LimitExceeded, Window

__all__ = ["ACK_CHECK", "Messaging", "MessagingParts", "direct_conversation_id"]

Frame = dict[str, Any]
MAX_SEQ_RETRIES = 100
# a repeated group send younger than this is fanned out again (a retry: the first fan-out may
# never have started); an older one is a replay, answered and not pushed (protocol.md §9a)
REFANOUT_SECONDS = 120


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
    """The six packets of a 1:1 conversation and group sends; the pull (`pull`), the
    conversation list (`conversation_list`) and the ack check (`ack_check`) are their own
    services, built from the same parts."""

    def __init__(self, parts: MessagingParts, ack_timeout_seconds: int, clock: Callable[[], float] = time.time,
                 delete_window_seconds: int = 48 * 3600) -> None:
        self._media = parts.media
        self._limits = parts.limits
        self._fanout = parts.fanout
        self._messages = parts.messages
        self._members = parts.members
        self._router = parts.router
        self._clock = clock
        self._last_seq = _LastSeqCache()
        self.ack_check = AckCheck(parts, ack_timeout_seconds, clock)
        self.pull = Pull(parts)
        self.conversation_list = ConversationList(parts)
        # delete for everyone (§16): its tombstone is delivered as a send's message
        self.deletion = Deletion(parts, delete_window_seconds, self._deliver_tombstone, self._last_seq, clock)

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
            self._redeliver(message, receivers, connection_id)
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
            except SenderBlocked:
                raise BlockedError("you blocked this conversation: unblock it to write") from None
            except ReceiverBlocked:
                # the same answer whatever the reason, so it proves no block (protocol.md §15)
                raise RecipientUnavailableError("the recipient does not accept this message") from None
            except SeqConflict as conflict:
                expected = conflict.actual
            except DuplicateSend as duplicate:
                if self._limits is not None:
                    self._limits.replay(sender)  # counted as a send: a replay is never cheaper
                original = self._messages.get(duplicate.conversation_id, duplicate.seq)
                assert original is not None, "an idempotency record always has its message"
                return original, self._receivers_of(original, sender, receivers), True
        raise RuntimeError("could not take a seq after many attempts")

    def _attach(self, sender: Identity, request: SendRequest) -> StoredImage | None:
        """A photo's upload checked and copied to the message's own key, before the store
        (protocol.md §14.1); tagged attached after it. (A retried send finds the copy.)"""
        if request.image is None:
            return None
        if self._media is None:
            raise InvalidFieldError("photos are not enabled on this server")
        try:
            return self._media.attach(sender, request.image)
        except UploadNotFoundError:
            # a retry of a photo message deleted since (§16: its object is gone): the store
            # recognises the client id and answers the original `sent`; anything else is refused
            if self._messages.stored_as(sender, request.client_id) is None:
                raise
            return None

    def _frame(self, message: Message) -> Frame:
        return message_frame(message, self._media)

    def _deliver(self, message: Message, receivers: list[Identity], connection_id: str | None) -> None:
        """After the store (or a recognised retry): a group message goes to the fan-out, a 1:1
        one is pushed and gets its ack check. (A client id reused across conversations is
        answered with the original, delivered as its own conversation's kind.)"""
        if is_group_id(message.conversation_id):
            if self._fanout is not None:
                self._fanout.start(message.conversation_id, message.seq, self._frame(message), connection_id)
        elif receivers:
            self._notify(message, receivers)

    def _deliver_tombstone(self, message: Message, receivers: list[Identity], connection_id: str | None) -> None:
        """A delete's tombstone, as a message, best effort: a delete's repeat is answered without
        delivering again, so a member whose delivery did not start learns it by its next pull."""
        with contextlib.suppress(DeliveryNotStarted):  # logged where it failed
            self._deliver(message, receivers, connection_id)

    def _redeliver(self, message: Message, receivers: list[Identity], connection_id: str | None) -> None:
        """A send whose client id was stored before: its own retry (the first answer was lost,
        or the server died, or could not queue the fan-out or the ack check) or a replay. A
        group's message is fanned out again while it is fresh (`REFANOUT_SECONDS`: a retry comes
        within seconds, or at a reconnect): nothing else would tell its members of the last of a
        burst; they drop the copies they have by seq, and the repeat is counted as a send. An
        older repeat is a replay: answered, not pushed. A 1:1 receiver gets the push and the
        ack check again only while it has not acked the message (one half-price read decides),
        so replays cannot push to it without end."""
        if is_group_id(message.conversation_id):
            if self._clock() * 1000 - message.time_ms <= REFANOUT_SECONDS * 1000:
                self._deliver(message, [], connection_id)
            return
        if not receivers:
            return
        theirs = self._members.get(receivers[0], message.conversation_id, consistent=False)
        if theirs is not None and theirs.acked_seq >= message.seq:
            # received; the ack's `delivered` may have failed with no check queued to tell it
            # again (the first try's AckCheckNotScheduled): tell it now, unless told already
            self.ack_check.tell_or_check_later(receivers[0], theirs)
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
        return request.conversation_id, membership.peers

    def _receivers_of(self, original: Message, sender: Identity, receivers: list[Identity]) -> list[Identity]:
        if is_group_id(original.conversation_id):
            return []  # a group's receivers are its roster, read by the fan-out
        if receivers and original.conversation_id == direct_conversation_id(sender, receivers[0]):
            return receivers
        membership = self._members.get(sender, original.conversation_id)
        return membership.peers if membership and membership.peer is not None else receivers

    def _notify(self, message: Message, receivers: list[Identity]) -> None:
        """After the store: the push is best effort (a lost one is recovered by the ack check),
        the check is not. Were the check not queued and the push lost, a live receiver would
        not see the message until a later one showed the gap, or its next connect, and the
        sender's `delivered` would wait as long (the chaos run lost a conversation's last
        message so). So the check is queued as logic/delivery.py says (tried twice, then
        AckCheckNotScheduled: the sender's frame is answered `internal_error`, and its retry, a
        repeat, pushes and queues the check again: `_redeliver`)."""
        frame = self._frame(message)
        for receiver in receivers:
            try:
                if not self._router.push_to(receiver, frame):
                    observability.receiver_offline(receiver.key, "send")
            except Exception:  # the ack check retransmits it
                observability.failed("push_failed", receiver=receiver.key)
        queue_or_refuse(
            lambda: self.ack_check.schedule(message.conversation_id, message.seq, receivers[0], attempt=1,
                                            sent_ms=message.time_ms),
            AckCheckNotScheduled("stored, but its delivery is not assured: send the same frame again"),
            "ack_check_not_scheduled", receiver=receivers[0].key)

    # -- ack:R -> ack:A, ack:N --------------------------------------------------------------
    def ack(self, member: Identity, request: CursorRequest) -> Frame:
        """Cumulative: the member has every message of the conversation up to `seq`. In a
        group only the member's cursor moves: no `delivered`, no ack check (protocol.md §13.1)."""
        if is_group_id(request.conversation_id):
            membership = self._advance_group(member, request, Cursor.ACKED)
            return {"type": "acked", "conversation_id": request.conversation_id, "seq": membership.acked_seq}
        membership, _ = self._advance(member, request, Cursor.ACKED)
        # Whether or not this ack moved the cursor: an earlier one may have moved it and died
        # (or its write ran twice, the retry failing its own condition) before `delivered` went
        # out; `told_seq` says whether the sender still has to be told.
        self.ack_check.tell_or_check_later(member, membership)
        return {"type": "acked", "conversation_id": request.conversation_id, "seq": membership.acked_seq}

    def read(self, member: Identity, request: CursorRequest) -> Frame:
        """The read mark. A 1:1 mark that moved is pushed to the peer as `seen` when both have
        read receipts on (protocol.md §14.3); groups have `receipts` instead (§13.6)."""
        if is_group_id(request.conversation_id):
            membership = self._advance_group(member, request, Cursor.READ)
        else:
            membership, moved = self._advance(member, request, Cursor.READ)
            if moved and membership.peer is not None and may_reveal(member, membership):  # logic/privacy.py
                self._seen(member, membership.peer, request)
        return {"type": "read", "conversation_id": request.conversation_id, "seq": membership.read_seq}

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
        settings = self._members.settings(member, read_receipts=request.read_receipts)
        return {"type": "settings", "read_receipts": settings.read_receipts}

    def block(self, member: Identity, request: BlockRequest, on: bool) -> Frame:
        """Block (`on`) or unblock the peer of one of the member's 1:1 conversations (§15):
        marks on both sides, which the send's conditions and logic/privacy.py read. Idempotent."""
        conversation_id = request.conversation_id
        not_direct = InvalidFieldError("'conversation_id' must be a 1:1 conversation (a group cannot be blocked)")
        if is_group_id(conversation_id):
            raise not_direct
        try:
            membership = self._members.block(member, conversation_id, on)
        except NotDirect:
            raise not_direct from None
        if membership is None:
            raise NotMemberError("not a member of this conversation")
        assert membership.peer is not None
        return {"type": "blocked" if on else "unblocked", "conversation_id": conversation_id,
                "peer": membership.peer.to_json()}

    def _advance(self, member: Identity, request: CursorRequest, cursor: Cursor) -> tuple[Membership, bool]:
        result = self._members.advance(member, request.conversation_id, cursor, request.seq)
        if result is None:
            raise NotMemberError("not a member of this conversation")
        membership, moved = result
        if not moved and request.seq > membership.last_seq:
            raise AckBeyondLastError(f"the conversation's last seq is {membership.last_seq}")
        return membership, moved

    def _advance_group(self, member: Identity, request: CursorRequest, cursor: Cursor) -> Membership:
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
