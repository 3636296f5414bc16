"""Operator tools (issue 26 point 4; docs/operator.md): what the host site's operators do over
`/operator/...`: read and close reports, ban and unban an identity, delete any message.

Who is an operator is decided by the access layer (app.py, `Authenticator.authenticate_operator`:
a verified host-site token with the operator claim); everything here trusts its `operator`.

A ban is one item (storage/bans.py). Its effect, without a read per frame:
- tokens: every REST route reads the ban once when it verifies the caller's token (`admit`),
  and a connection's open (WebSocket `$connect`, `lp/open`) reads it after its record is
  written (logic/session.py, logic/longpoll.py);
- open connections: the ban, after storing the item, lists the identity's connections (one
  consistent Query) and closes each at once: a `banned` error frame pushed (it wakes a held
  long-poll wait through the doorbell), then the close (DELETE @connections, or the long poll's
  record and mailbox; its doorbell queue is left to the sweeper, so the wait gets that ring and
  the client's next poll answers `banned`). A connection opening meanwhile either was written before that Query
  (listed, closed) or reads the ban after its record (refused and undone): no gap.
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from chalicelib import observability
from chalicelib.errors import (
    BannedError,
    InvalidFieldError,
    MessageNotFoundError,
    NotDeletableError,
    ReportNotFoundError,
)
from chalicelib.logic.fanout import FanoutNotStarted
from chalicelib.logic.frames import DeleteRequest
from chalicelib.logic.longpoll import LongPollSessions
from chalicelib.logic.message_frames import MessagingParts, message_frame
from chalicelib.logic.session import WebSocketSessions
from chalicelib.principal import Identity
from chalicelib.storage.bans import Ban, BansTable
from chalicelib.storage.groups import is_group_id
from chalicelib.storage.messages import AlreadyDeleted, Message, MessageMissing, SeqConflict
from chalicelib.storage.reports import Report, ReportEntry, ReportsTable

Frame = dict[str, Any]
STATUSES = ("open", "closed")
MAX_PAGE = 100
MAX_RETRIES = 100
OPERATOR = {"kind": "operator"}  # a tombstone's `by` (the operator's own id is not shown to members)


class Operator:
    def __init__(self, bans: BansTable, reports: ReportsTable, parts: MessagingParts, sessions: WebSocketSessions,
                 long_poll: LongPollSessions, clock: Callable[[], float] = time.time) -> None:
        self._bans = bans
        self._reports = reports
        self._messages = parts.messages
        self._members = parts.members
        self._router = parts.router
        self._sessions = sessions
        self._long_poll = long_poll
        self._fanout = parts.fanout
        self._media = parts.media
        self._clock = clock

    # -- the gate every token passes -----------------------------------------------------------
    def admit(self, identity: Identity) -> None:
        """Refuse a banned identity (`banned`, 403): one eventually consistent GetItem (a ban is
        seen within a second; its connections are closed by the ban itself)."""
        if self._bans.banned(identity, consistent=False):
            raise BannedError("this identity is banned")

    # -- reports ----------------------------------------------------------------------------------
    def reports(self, status: str | None, limit: object, before: str | None) -> Frame:
        """A page of the list of `status` (default open), newest first; `next` continues it."""
        status = status or "open"
        if status not in STATUSES:
            raise InvalidFieldError(f"'status' must be one of {', '.join(STATUSES)}")
        size = _page_size(limit)
        if before is not None and (not before or len(before) > 64 or not before.isprintable()):
            raise InvalidFieldError("'before' must be a cursor from a previous page")
        entries, cursor = self._reports.entries(status, size, before)
        return {"reports": [_entry_json(e) for e in entries], "next": cursor}

    def report(self, report_id: str) -> Frame:
        found = self._reports.get(report_id) if _report_id_ok(report_id) else None
        if found is None:
            raise ReportNotFoundError("no such report")
        return self._report_json(found)

    def set_report_status(self, operator: Identity, report_id: str, status: object) -> Frame:
        if status not in STATUSES:
            raise InvalidFieldError(f"'status' must be one of {', '.join(STATUSES)}")
        assert isinstance(status, str)
        moved = self._reports.set_status(report_id, status) if _report_id_ok(report_id) else None
        if moved is None:
            raise ReportNotFoundError("no such report")
        image = moved.message.image if moved.message is not None else None
        if (moved.photo_key is not None and image is not None and self._media is not None
                and (moved.expires_at is not None or moved.status == "open")):
            # The photo copy follows the report: tagged for the retention's rule (its clock
            # restarted) when the report carries expires_at, kept again when reopened. After the
            # transaction, and on a repeat too (the same status): a crash between them is mended
            # by doing it again.
            self._media.report_closed(moved.photo_key, moved.expires_at is not None, image.content_type)
        observability.event("report_status", report_id=report_id, status=status, operator=operator.key)
        return {"report_id": moved.report_id, "status": moved.status}

    # -- bans ---------------------------------------------------------------------------------------
    def ban(self, operator: Identity, identity: Identity, reason: str) -> Frame:
        """Store the ban, then close every open connection of the identity (module docstring)."""
        self._bans.put(Ban(identity, operator, reason, int(self._clock() * 1000)))
        closed = 0
        for record in self._router.connections_of(identity):
            try:  # why, before the close; a failed push (not a 410: push handles those) still closes
                self._router.push(record, BannedError("this identity is banned").to_frame())
            except Exception as error:
                observability.event("ban_push_failed", to_connection=record.connection_id,
                                    error=type(error).__name__)
            if record.transport == "lp":
                try:
                    self._long_poll.close(identity, record.connection_id, keep_doorbell=True)
                except Exception as error:  # closed meanwhile (410 / gone): fine
                    observability.event("ban_close_skipped", to_connection=record.connection_id,
                                        error=type(error).__name__)
                    continue
            else:
                if not self._router.close(record):
                    continue  # logged; the ban stays: its next open is refused
                self._sessions.close(record.connection_id)  # what $disconnect would do (it finds nothing after)
            closed += 1
        observability.event("identity_banned", identity=identity.key, operator=operator.key, closed=closed)
        return {"identity": identity.to_json(), "banned": True, "closed_connections": closed}

    def unban(self, operator: Identity, identity: Identity) -> Frame:
        was = self._bans.delete(identity)
        observability.event("identity_unbanned", identity=identity.key, operator=operator.key, was_banned=was)
        return {"identity": identity.to_json(), "banned": False, "was_banned": was}

    def ban_of(self, identity: Identity) -> Frame:
        ban = self._bans.get(identity)
        if ban is None:
            return {"identity": identity.to_json(), "banned": False}
        return {"identity": identity.to_json(), "banned": True, "by": ban.by.to_json(), "reason": ban.reason,
                "time": ban.time_ms}

    # -- delete any message -------------------------------------------------------------------------
    def delete(self, operator: Identity, body: Frame) -> Frame:
        """Delete message `seq` of any conversation for everyone (protocol.md §16's tombstone,
        its event's `by` {"kind": "operator"}); a repeat is answered as the first."""
        request = DeleteRequest.parse(body)
        conversation_id, seq = request.conversation_id, request.seq
        original = self._messages.get(conversation_id, seq)
        if original is None:
            raise MessageNotFoundError("no message with this seq")
        if original.event is not None:
            raise NotDeletableError("an event message is not deleted")
        if original.deleted:
            return self._answer(original)
        members, pushed_to = self._members_of(original)
        expected = self._messages.last_seq(conversation_id)
        for _ in range(MAX_RETRIES):
            tombstone = Message(conversation_id, expected + 1, original.sender, "", int(self._clock() * 1000),
                                f"deleted:{seq}", event={"type": "deleted", "seq": seq, "by": OPERATOR})
            try:
                self._messages.operator_delete(original, tombstone, expected, members)
            except SeqConflict as conflict:
                expected = conflict.actual
                continue
            except AlreadyDeleted as earlier:
                return self._answer(earlier.original)
            except MessageMissing:
                raise MessageNotFoundError("no message with this seq") from None
            observability.event("operator_deleted", conversation_id=conversation_id, seq=seq,
                                tombstone_seq=tombstone.seq, operator=operator.key)
            self.push_tombstone(tombstone, pushed_to)
            if original.image is not None and self._media is not None:
                self._media.discard(original.image.key)
            return {"type": "deleted", "conversation_id": conversation_id, "seq": seq,
                    "tombstone_seq": tombstone.seq, "time": tombstone.time_ms}
        raise RuntimeError("could not store the tombstone after many attempts")

    def _members_of(self, original: Message) -> tuple[list[Identity], list[Identity]]:
        """A 1:1's two members (whose copies of the last message move) and whom to push to
        (with a visitor peer's linked user); none for a group (its fan-out reads the roster)."""
        if is_group_id(original.conversation_id):
            return [], []
        membership = self._members.get(original.sender, original.conversation_id)
        if membership is None or membership.peer is None:
            raise MessageNotFoundError("no message with this seq")
        return [original.sender, membership.peer], [original.sender, *membership.peers]

    def push_tombstone(self, tombstone: Message, pushed_to: list[Identity]) -> None:
        """Push a stored tombstone (an operator's delete, an erasure's batch), best effort: a
        group's through its fan-out, a 1:1's to `pushed_to`. Members that miss it pull it
        (the seq moved), as do those that see it leave a gap (an erasure pushes a batch's last)."""
        frame = message_frame(tombstone, self._media)
        if is_group_id(tombstone.conversation_id):
            if self._fanout is not None:
                with contextlib.suppress(FanoutNotStarted):  # logged; members pull it
                    self._fanout.start(tombstone.conversation_id, tombstone.seq, frame, None)
            return
        for member in pushed_to:
            try:
                self._router.push_to(member, frame)
            except Exception:
                observability.failed("push_failed", receiver=member.key)

    def _answer(self, deleted: Message) -> Frame:
        if deleted.purge_key is not None and self._media is not None:
            self._media.discard(deleted.purge_key)
        return {"type": "deleted", "conversation_id": deleted.conversation_id, "seq": deleted.seq,
                "tombstone_seq": deleted.tombstone_seq, "time": deleted.deleted_time_ms}

    def _report_json(self, report: Report) -> Frame:
        shown: Frame = {
            "report_id": report.report_id, "status": report.status, "time": report.created_ms,
            "reporter": report.reporter.to_json(), "conversation_id": report.conversation_id,
            "reason": report.reason, "note": report.note,
            "context": [message_frame(m, self._media) for m in report.context],
        }
        if report.seq is not None:
            shown["seq"] = report.seq
        if report.expires_at is not None:  # closed under ReportRetentionDays: when it goes (ms)
            shown["expires"] = report.expires_at * 1000
        if report.message is not None:
            message = report.message
            if message.image is not None and report.photo_key is not None:
                # the report's own copy of the photo (r/...): it outlives the message's (deleted, expired)
                message = replace(message, image=replace(message.image, key=report.photo_key))
            shown["message"] = message_frame(message, self._media)
        return shown


def _page_size(limit: object) -> int:
    if limit is None or limit == "":
        return 50
    try:
        size = int(str(limit))
    except ValueError:
        raise InvalidFieldError(f"'limit' must be a number from 1 to {MAX_PAGE}") from None
    if not 1 <= size <= MAX_PAGE:
        raise InvalidFieldError(f"'limit' must be a number from 1 to {MAX_PAGE}")
    return size


def _report_id_ok(report_id: str) -> bool:
    return report_id.startswith("r_") and 3 <= len(report_id) <= 64 and report_id.isprintable()


def _entry_json(entry: ReportEntry) -> Frame:
    shown: Frame = {"report_id": entry.report_id, "status": entry.status, "time": entry.created_ms,
                    "reporter": entry.reporter.to_json(), "conversation_id": entry.conversation_id,
                    "reason": entry.reason}
    if entry.seq is not None:
        shown["seq"] = entry.seq
    return shown
