"""Delete for everyone (protocol.md §16): a message becomes a tombstone in the conversation's seq.

    C->S delete {conversation_id, seq: N}
         read the caller's membership and message N (two strongly consistent GetItems)
         authorize: the sender within `delete_window_seconds`; a group's owner/admins any message
         one transaction (storage/messages.py `delete`): the `deleted` event as seq n+1 (the
             head's gap-free condition), message N blanked under attribute_not_exists(deleted),
             the members' cursors (1:1) or the deleter's role (group), the send-rate window
         deliver the event as a send's message (1:1: push + ack check; group: the fan-out job)
         the photo's object deleted (one DeleteObject)
    S->C deleted {conversation_id, seq: N, tombstone_seq: n+1, time}

A repeat (the answer was lost, two admins at once, a retry racing the first) finds message N
already deleted, by its read or by the transaction's condition, and is answered as the first
time with nothing stored. Every later read of message N (history, sync, the ack check's
retransmission) sees the blanked item: the old text is never sent again once the transaction
committed, and a client that got an older copy (a retransmission read just before it) drops it
on the tombstone event, which it gets pushed or pulled like any message.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from chalicelib import observability
from chalicelib.errors import (
    BlockedError,
    DeleteWindowPassedError,
    MessageNotFoundError,
    NotDeletableError,
    NotMemberError,
    NotYourMessageError,
    RecipientUnavailableError,
)
from chalicelib.logic.frames import DeleteRequest
from chalicelib.logic.message_frames import MessagingParts
from chalicelib.principal import Identity
from chalicelib.storage.groups import is_group_id
from chalicelib.storage.members import Membership
from chalicelib.storage.messages import (
    AlreadyDeleted,
    DeleterChanged,
    Message,
    MessageMissing,
    ReceiverBlocked,
    SenderBlocked,
    SeqConflict,
)
from chalicelib.storage.rate_limits import LimitExceeded, Window

Frame = dict[str, Any]
MANAGERS = ("owner", "admin")  # as logic/groups.py: who may delete any message of the group
MAX_RETRIES = 100
# deliver(message, receivers, connection_id): a stored message pushed as a send's (messaging.py)
Deliver = Callable[[Message, list[Identity], "str | None"], None]


class SeqGuess(Protocol):
    def get(self, conversation_id: str) -> int: ...

    def put(self, conversation_id: str, seq: int) -> None: ...


class Deletion:
    def __init__(self, parts: MessagingParts, window_seconds: int, deliver: Deliver, last_seq: SeqGuess,
                 clock: Callable[[], float] = time.time) -> None:
        self._messages = parts.messages
        self._members = parts.members
        self._limits = parts.limits
        self._media = parts.media
        self._window_ms = window_seconds * 1000
        self._deliver = deliver
        self._last_seq = last_seq
        self._clock = clock

    def delete(self, actor: Identity, request: DeleteRequest, connection_id: str | None = None) -> Frame:
        """Delete message `request.seq` for everyone; the order of work: the module docstring."""
        conversation_id, seq = request.conversation_id, request.seq
        observability.bind(conversation_id=conversation_id, seq=seq)
        counter = self._limits.send_window(actor) if self._limits else None
        for _ in range(MAX_RETRIES):
            membership = self._members.get(actor, conversation_id)
            if membership is None:
                raise NotMemberError("not a member of this conversation")
            original = self._original(membership, seq)
            roles = self._authorize(actor, membership, original)
            if original.deleted:
                return self._answer(original)
            answer = self._commit(actor, membership, original, roles, counter, connection_id)
            if answer is not None:
                return answer
        raise RuntimeError("could not store the tombstone after many attempts")

    def _commit(self, actor: Identity, membership: Membership, original: Message, roles: tuple[str, ...] | None,
                counter: Window | None, connection_id: str | None) -> Frame | None:
        """Store the tombstone at the next seq (a taken seq: the next); the answer, or None when
        the deleter's membership changed since it was read (read again, decide again)."""
        conversation_id, seq = original.conversation_id, original.seq
        group = is_group_id(conversation_id)
        receivers = [] if group else membership.peers
        expected = self._guess(conversation_id) if group else membership.last_seq
        for _ in range(MAX_RETRIES):
            tombstone = Message(conversation_id, expected + 1, actor, "", int(self._clock() * 1000),
                                f"deleted:{seq}", event={"type": "deleted", "seq": seq, "by": actor.to_json()})
            try:
                self._messages.delete(original, tombstone, expected, receivers, roles, counter)
            except SeqConflict as conflict:
                expected = conflict.actual
                continue
            except AlreadyDeleted as earlier:  # a racing delete won: its answer
                return self._answer(earlier.original)
            except MessageMissing:
                raise MessageNotFoundError("no message with this seq") from None
            except LimitExceeded as exceeded:
                assert self._limits is not None
                raise self._limits.refusal(exceeded) from None
            except SenderBlocked:
                raise BlockedError("you blocked this conversation: unblock it to delete") from None
            except ReceiverBlocked:
                raise RecipientUnavailableError("the recipient does not accept this message") from None
            except DeleterChanged:
                return None
            return self._stored(original, tombstone, receivers, connection_id)
        raise RuntimeError("could not store the tombstone after many attempts")

    def _original(self, membership: Membership, seq: int) -> Message:
        """Message `seq` as the member may see it (a group member: not from before it joined)."""
        if membership.group and seq < membership.joined_seq:
            raise MessageNotFoundError("no message with this seq")  # never reveals older ones
        original = self._messages.get(membership.conversation_id, seq)
        if original is None:
            raise MessageNotFoundError("no message with this seq")
        return original

    def _authorize(self, actor: Identity, membership: Membership, original: Message) -> tuple[str, ...] | None:
        """Who may delete: a group's owner and admins any message (the transaction checks the
        role again: returned); its sender within the window (None: only membership checked).
        A repeat of a delete is authorized as the first was, and answered past the window."""
        if original.event is not None:
            raise NotDeletableError("an event message is not deleted")
        if membership.group and membership.role in MANAGERS:
            return MANAGERS
        if original.sender != actor:
            raise NotYourMessageError("only the sender (or a group's owner and admins) deletes a message")
        if not original.deleted and int(self._clock() * 1000) - original.time_ms > self._window_ms:
            raise DeleteWindowPassedError(f"a message is deleted within {self._window_ms // 1000} s of its send")
        return None

    def _guess(self, conversation_id: str) -> int:
        """A group's last seq: this container's guess, else a half-price read of the head (only
        a guess either way: the head's condition decides, a wrong one costs a retry)."""
        return self._last_seq.get(conversation_id) or self._messages.last_seq(conversation_id, consistent=False)

    def _stored(self, original: Message, tombstone: Message, receivers: list[Identity],
                connection_id: str | None) -> Frame:
        """After the transaction: the event delivered as a send's message, then the photo's
        object deleted. A DeleteObject that fails is raised (internal_error): the client's
        retry is answered as a repeat, which deletes the object again (`purge_key`)."""
        self._last_seq.put(tombstone.conversation_id, tombstone.seq)
        observability.message_stored(tombstone.conversation_id, tombstone.seq, tombstone.client_id,
                                     tombstone.sender.key, False)
        self._deliver(tombstone, receivers, connection_id)
        if original.image is not None and self._media is not None:
            self._media.discard(original.image.key)
        return {"type": "deleted", "conversation_id": tombstone.conversation_id, "seq": original.seq,
                "tombstone_seq": tombstone.seq, "time": tombstone.time_ms}

    def _answer(self, deleted: Message) -> Frame:
        """A repeat's answer, the same as the first's; its photo's object deleted again (idempotent)."""
        if deleted.purge_key is not None and self._media is not None:
            self._media.discard(deleted.purge_key)
        return {"type": "deleted", "conversation_id": deleted.conversation_id, "seq": deleted.seq,
                "tombstone_seq": deleted.tombstone_seq, "time": deleted.deleted_time_ms}
