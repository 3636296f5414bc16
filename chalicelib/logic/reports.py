"""Report (protocol.md §17): a member reports a message, or a whole conversation, with a reason.

The report keeps what an operator needs to judge, copied at the time of the report: the
reported message (text, sender, time, seq, photo key) and a bounded context (up to
CONTEXT_EACH_SIDE messages before and after it, or the last 2 x CONTEXT_EACH_SIDE of the
conversation, together at most CONTEXT_BUDGET_BYTES), so it stays whatever the sender later
deletes or changes. Only a member may report, and only what it can read itself (in a group,
nothing from before it joined); nobody reports its own message.

Cost: one consistent GetItem of the reporter's membership (and in a group one of the head),
one GetItem of the message and two Queries of the context (one Query without `seq`), one
TransactWriteItems of the report, its list entry and the reporter's report-rate counter
(storage/reports.py); a reported photo adds a CopyObject before and a PutObjectTagging after.
The report's id is derived from the reporter and the frame's `id`, so a frame sent again
stores nothing and gets the first answer (taking from the same rate window, so replaying is
never cheaper than reporting).
"""
from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Callable
from typing import Any

from chalicelib import observability
from chalicelib.errors import AckBeyondLastError, InvalidFieldError, MessageNotFoundError, NotMemberError
from chalicelib.logic.frames import ReportRequest
from chalicelib.logic.limits import Limits
from chalicelib.logic.media import REPORT_PREFIX, Media
from chalicelib.principal import Identity
from chalicelib.storage.groups import is_group_id
from chalicelib.storage.members import MembersTable
from chalicelib.storage.messages import Message, MessagesTable
from chalicelib.storage.rate_limits import LimitExceeded
from chalicelib.storage.reports import OPEN, DuplicateReport, Report, ReportsTable

Frame = dict[str, Any]
CONTEXT_EACH_SIDE = 10
# the context's text and photo keys together (the report item stays far below DynamoDB's 400 KB)
CONTEXT_BUDGET_BYTES = 32 * 1024
_MESSAGE_OVERHEAD_BYTES = 200  # sender, time, seq, client id: roughly, per copied message


def report_id(reporter: Identity, client_id: str) -> str:
    """`r_` + 22 url-safe characters, from the reporter and the frame's id (JSON keeps the pair
    unambiguous whatever characters either holds)."""
    digest = hashlib.sha256(json.dumps([reporter.key, client_id]).encode()).digest()
    return "r_" + base64.urlsafe_b64encode(digest[:16]).decode().rstrip("=")


class Reports:
    def __init__(self, store: ReportsTable, messages: MessagesTable, members: MembersTable,
                 limits: Limits | None = None, clock: Callable[[], float] = time.time,
                 media: Media | None = None) -> None:
        self._store = store
        self._messages = messages
        self._members = members
        self._limits = limits
        self._clock = clock
        self._media = media  # photos: a reported one is copied (None: the stage has no photos)

    def report(self, reporter: Identity, request: ReportRequest) -> Frame:
        """Store a report of `request.seq` (or of the conversation) and answer `reported`."""
        new_id = report_id(reporter, request.client_id)
        try:
            message, context = self._copies(reporter, request)
        except (NotMemberError, AckBeyondLastError, MessageNotFoundError):
            # the frame sent again after the state moved on (the message deleted, the reporter
            # removed): the report it made stands. One GetItem, on refusals only.
            existing = self._store.get(new_id)
            if existing is None or existing.reporter != reporter:
                raise
            return self._replayed(reporter, existing)
        report = Report(new_id, reporter, request.conversation_id, request.seq, request.reason, request.note,
                        int(self._clock() * 1000), OPEN, message, tuple(context), self._keep_photo(new_id, message))
        limits = self._limits
        try:
            self._store.put(report, limits.report_window(reporter) if limits is not None else None)
        except DuplicateReport as duplicate:
            return self._replayed(reporter, duplicate.existing)
        except LimitExceeded as exceeded:
            assert limits is not None
            raise limits.refusal(exceeded) from None
        observability.event("report_filed", report_id=new_id, conversation_id=report.conversation_id,
                            seq=report.seq, reason=report.reason, reporter=reporter.key)
        return self._answer(report)

    def _replayed(self, reporter: Identity, report: Report) -> Frame:
        """The answer to a frame whose report exists: taken from the same rate window as a new
        one (replaying is never cheaper than reporting)."""
        if self._limits is not None:
            self._limits.report_replay(reporter)
        return self._answer(report)

    def _answer(self, report: Report) -> Frame:
        if report.photo_key is not None and self._media is not None:
            self._media.kept(report.photo_key)  # stored: the lifecycle keeps the copy now (idempotent)
        answer: Frame = {"type": "reported", "report_id": report.report_id, "conversation_id": report.conversation_id}
        if report.seq is not None:
            answer["seq"] = report.seq
        return answer

    def _keep_photo(self, new_id: str, message: Message | None) -> str | None:
        """A copy of the reported photo (one server-side CopyObject), so it outlives the sender's
        delete (§16) and the retention (which expire m/): born pending, so the copy of a report
        refused by its own transaction (rate_limited) expires in a day like an unused upload;
        tagged attached once the report is stored. None: no photo, or already gone."""
        if message is None or message.image is None or self._media is None:
            return None
        key = f"{REPORT_PREFIX}{new_id}/{message.seq}"
        return key if self._media.keep_copy(message.image, key) else None

    def _copies(self, reporter: Identity, request: ReportRequest) -> tuple[Message | None, list[Message]]:
        """The reported message and its context, as the reporter may read them (a group member:
        nothing from before it joined), or not_member / seq_out_of_range / message_not_found (deleted
        for everyone, §16) / invalid_field (its own)."""
        conversation_id, seq = request.conversation_id, request.seq
        membership = self._members.get(reporter, conversation_id)
        if membership is None:
            raise NotMemberError("not a member of this conversation")
        if is_group_id(conversation_id):
            first, last = membership.joined_seq, self._messages.last_seq(conversation_id)
        else:
            first, last = 1, membership.last_seq
        if seq is None:
            return None, _bounded(self._messages.before(conversation_id, None, 2 * CONTEXT_EACH_SIDE, first=first),
                                  centre=last + 1)
        message = self._messages.get(conversation_id, seq) if first <= seq <= last else None
        if message is None:
            raise AckBeyondLastError(f"no message {seq} you can read in this conversation")
        if message.deleted:  # its copy would hold nothing: report the conversation
            raise MessageNotFoundError(f"message {seq} was deleted")
        if message.sender == reporter:
            raise InvalidFieldError("you cannot report your own message")
        return message, self._around(conversation_id, seq, first)

    def _around(self, conversation_id: str, seq: int, first: int) -> list[Message]:
        before = self._messages.before(conversation_id, seq, CONTEXT_EACH_SIDE, first=first)
        after = self._messages.after(conversation_id, seq, CONTEXT_EACH_SIDE)
        return _bounded(before + after, centre=seq)


def _size(message: Message) -> int:
    """Roughly what the copy adds to the report item: text, photo key and preview, a group
    event (a `created` names up to 21 members)."""
    return len(message.text.encode("utf-8")) + _MESSAGE_OVERHEAD_BYTES + (
        len(message.image.key) + len(message.image.preview or "") if message.image is not None else 0) + (
        len(json.dumps(message.event, ensure_ascii=False).encode("utf-8")) if message.event is not None else 0)


def _bounded(messages: list[Message], centre: int) -> list[Message]:
    """The messages nearest `centre` that fit in CONTEXT_BUDGET_BYTES, oldest first."""
    kept: list[Message] = []
    used = 0
    for message in sorted(messages, key=lambda m: (abs(m.seq - centre), m.seq)):
        used += _size(message)
        if used > CONTEXT_BUDGET_BYTES:
            break
        kept.append(message)
    return sorted(kept, key=lambda m: m.seq)
