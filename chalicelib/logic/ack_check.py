"""The ack-timeout check (an SQS job) and `delivered`, told once.

A 1:1 send schedules a check of the receiver's `acked_seq`; when it runs: acked and told -> done;
acked but the sender never told (a failure after the ack's write) -> push `delivered` now; else,
if the receiver is connected, schedule the next check (backoff x3, `max_attempts`), then push
the unacked messages again. Offline receivers get them from their pull on reconnect.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from chalicelib import observability
from chalicelib.errors import DeliveryNotStarted
from chalicelib.logic.message_frames import MessagingParts, message_frame
from chalicelib.logic.privacy import may_reveal
from chalicelib.principal import Identity
from chalicelib.storage.members import Membership

ACK_CHECK = "ack_check"
MAX_DELAY_SECONDS = 900  # SQS's most DelaySeconds
RETRANSMIT_PAGE = 50  # unacked messages pushed again per check


class AckCheckNotScheduled(DeliveryNotStarted):
    """A stored 1:1 message whose first ack check could not be queued: nothing would push it
    again, nor tell its sender `delivered`, were its push lost too (the last of a burst)."""


class AckCheck:
    def __init__(self, parts: MessagingParts, ack_timeout_seconds: int, clock: Callable[[], float] = time.time
                 ) -> None:
        self._messages = parts.messages
        self._members = parts.members
        self._router = parts.router
        self._jobs = parts.jobs
        self._media = parts.media
        self._ack_timeout = ack_timeout_seconds
        self._clock = clock

    def schedule(self, conversation_id: str, seq: int, receiver: Identity, attempt: int,
                 sent_ms: int | None) -> None:
        # Check k is due timeout x (1 + 3 + ... + 3^(k-1)) after the send (10, 40, 130 s), counted
        # from the send, not from when the previous check ran: a check run late (a busy queue)
        # does not push the later ones back. (Jobs queued without `sent_ms`: from now.)
        if sent_ms is None:
            delay = self._ack_timeout * 3 ** (attempt - 1)
        else:
            due = sent_ms / 1000 + self._ack_timeout * (3 ** attempt - 1) // 2
            delay = max(0, math.ceil(due - self._clock()))
        self._jobs.enqueue(ACK_CHECK, delay_seconds=min(delay, MAX_DELAY_SECONDS), conversation_id=conversation_id,
                           seq=seq, receiver=receiver.key, attempt=attempt, sent_ms=sent_ms)

    def tell_delivered(self, receiver: Identity, membership: Membership) -> bool:
        """Push `delivered` up to the receiver's acked cursor to its peer, once: unless the
        peer was told that far already, or the privacy rule hides the receiver's signals there
        (logic/privacy.py: a visitor that never wrote, a user in a conversation carried over
        from a visitor that never wrote). Then note it told, and answer True. A push that
        raises, or that none of the peer's connections took (a 410 from one still in its
        handshake, which stays listed), is not noted (False): the ack check or the next ack
        tells again. A sender with no connection is noted told: it reads `peer_acked_seq`
        from its list when it comes back."""
        acked = membership.acked_seq
        if acked <= membership.told_seq or not may_reveal(receiver, membership) or membership.peer is None:
            return True
        delivered = {"type": "delivered", "conversation_id": membership.conversation_id,
                     "seq": acked, "by": receiver.to_json()}
        connections = self._router.connections_of(membership.peer)
        if connections and not self._router.push_all(connections, delivered):
            return False
        self._members.mark_told(receiver, membership.conversation_id, acked)
        return True

    def tell_or_check_later(self, receiver: Identity, membership: Membership) -> None:
        """`tell_delivered`, and when it fails (raises, or no connection took it) a check queued
        to tell again: the send's own checks may all have run already (a receiver that acks
        after the last one, at its reconnect say), and nothing else would tell a connected
        sender. Raises what the tell raised (the ack is answered `internal_error`)."""
        try:
            told = self.tell_delivered(receiver, membership)
        except Exception:
            self._check_later(receiver, membership)
            raise
        if not told:
            self._check_later(receiver, membership)

    def _check_later(self, receiver: Identity, membership: Membership) -> None:
        try:
            self.schedule(membership.conversation_id, membership.acked_seq, receiver, attempt=1, sent_ms=None)
        except Exception:  # the sender reads `peer_acked_seq` at its next connect
            observability.failed("ack_check_not_scheduled", receiver=receiver.key)

    def run(self, job: dict[str, Any], max_attempts: int) -> None:
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
        membership = self._unsettled(receiver, conversation_id, seq)
        if membership is None:
            return
        acked = membership.acked_seq
        if acked >= seq:  # received, but the sender was never told
            if not self.tell_delivered(receiver, membership) and attempt < max_attempts:
                self.schedule(conversation_id, seq, receiver, attempt + 1, job.get("sent_ms"))  # tell again later
            return
        connections = self._router.connections_of(receiver)
        if not connections:  # offline: the message waits for the pull on reconnect
            observability.receiver_offline(receiver.key, "ack_check", attempt=attempt)
            return
        if attempt < max_attempts:
            self.schedule(conversation_id, seq, receiver, attempt + 1, job.get("sent_ms"))
        else:
            observability.retries_exhausted(receiver.key, attempt)
        unacked = self._messages.after(conversation_id, acked, limit=min(seq - acked, RETRANSMIT_PAGE))
        for message in unacked:
            self._router.push_all(connections, message_frame(message, self._media))
        observability.retransmit(receiver.key, attempt, len(unacked), len(connections))

    def _unsettled(self, receiver: Identity, conversation_id: str, seq: int) -> Membership | None:
        """The receiver's membership, strongly read, if the check for `seq` has work left.
        Half-price read first: acked_seq and told_seq only grow, so an older state that says
        "acked and told" is the truth (almost every check ends here); otherwise read again."""
        membership = self._members.get(receiver, conversation_id, consistent=False)
        if membership is not None and _settled(receiver, membership, seq):
            return None
        membership = self._members.get(receiver, conversation_id)
        if membership is None or _settled(receiver, membership, seq):
            return None
        return membership


def _settled(receiver: Identity, membership: Membership, seq: int) -> bool:
    """Whether an ack check for `seq` has nothing left to do: the receiver acked it and the
    sender was told (or may not be told: the privacy rule)."""
    if membership.acked_seq < seq:
        return False
    return membership.told_seq >= seq or not may_reveal(receiver, membership)
