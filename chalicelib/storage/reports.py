"""Reports (protocol.md §17): what a member reported, with a copy of the messages, in the
members table.

Items (neither prefix begins an identity key, `user:`/`visitor:`, nor a group's roster, `G#`):
    pk=P#<report_id>   sk=#                          the report: reporter, conversation, seq,
                                                     reason, note, time, status, and copies of
                                                     the reported message and its context
    pk=PS#<status>     sk=<time ms, 13 digits>#<id>  the operator's list entry: one partition
                                                     per status, sorted by time (a Query, never
                                                     a Scan; newest first with ScanIndexForward
                                                     False), with what a list row shows

Both are written by one TransactWriteItems, with the reporter's report-rate counter (messages
table, storage/rate_limits.py): a report exists with its list entry or not at all, and a full
window stores nothing. The report id is derived from the reporter and the frame's id
(logic/reports.py), and the report's Put is conditioned on `attribute_not_exists(pk)`: a frame
sent again stores nothing and is answered with the original (DuplicateReport). A later change
of status (operator tools) moves the list entry from one status partition to the other in one
transaction with the report.

Retention (architecture.md "Retention"): an open report never expires (it is pending
evidence). With a retention (`retention_seconds` > 0, REPORT_RETENTION_DAYS), the transaction
that closes a report sets `expires_at` (epoch seconds: the close + the retention; the members
table's TTL) on the report and on its `PS#closed` entry; the one that reopens it removes it
from both. A report closed while the retention was 0 keeps no `expires_at` (a later retention
does not reach it). The photo copy's tag (the bucket's lifecycle) is the caller's, after the
transaction (logic/operator.py).

The copies are the messages as they were when reported: the sender's later delete (a
tombstone in the conversation) or an edit does not reach them.

A report crosses this module's boundary as a `Report` (field <- attribute): report_id <- pk
after `P#`, reporter <- reporter (an identity key), conversation_id, seq (absent: the whole
conversation), reason, note, created_ms <- time, status, message <- message (a map, below),
context <- context (a list of maps), photo_key <- photo (the reported photo's own copy in the
media bucket, r/<report id>/<seq>: it outlives the message's). A copied message's map: seq,
sender (an identity key), text, time, client_id, event (a group's event), image
(storage/media.py StoredImage's map), deleted (a tombstone, protocol.md §16, copied as it was).
A list entry crosses as a `ReportEntry`.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from chalicelib.principal import Identity
from chalicelib.storage.dynamo import TransactionRefused, int_numbers, transact
from chalicelib.storage.media import StoredImage
from chalicelib.storage.messages import Message
from chalicelib.storage.rate_limits import LimitExceeded, Window, window_update

_REPORT = "P#"
_STATUS = "PS#"
_SK = "#"
OPEN = "open"
CLOSED = "closed"


@dataclass(frozen=True)
class Report:
    report_id: str
    reporter: Identity
    conversation_id: str
    seq: int | None  # None: the whole conversation
    reason: str
    note: str
    created_ms: int
    status: str
    message: Message | None  # the reported message as it was (None: the whole conversation)
    context: tuple[Message, ...]  # the messages around it (or the last ones), oldest first
    photo_key: str | None = None  # the reported photo's own copy in the media bucket (r/...)
    expires_at: int | None = None  # epoch seconds (TTL): a closed report under a retention


@dataclass(frozen=True)
class ReportEntry:
    """One row of the operator's list: enough to choose, the report itself by its id."""

    report_id: str
    status: str
    created_ms: int
    reporter: Identity
    conversation_id: str
    seq: int | None
    reason: str


class DuplicateReport(Exception):
    """A report with this id exists (the same frame sent again): nothing stored."""

    def __init__(self, existing: Report) -> None:
        super().__init__(f"report {existing.report_id} exists")
        self.existing = existing


class ReportsTable:
    def __init__(self, table: Any, messages_table_name: str, retention_seconds: int = 0,
                 clock: Callable[[], float] = time.time) -> None:
        self._table = table  # the members table (a boto3 Table resource)
        self._messages = messages_table_name  # where the rate counters are
        self._retention = retention_seconds  # a closed report's life (0: kept); module docstring
        self._clock = clock

    def put(self, report: Report, counter: Window | None = None) -> None:
        """Store the report and its list entry (and count `counter`) in one transaction.
        Raises DuplicateReport (the stored one) or LimitExceeded; nothing is stored then."""
        name = self._table.name
        items: list[tuple[str, dict[str, Any]]] = [
            ("report", {"Put": {"TableName": name, "Item": _report_item(report),
                                "ConditionExpression": "attribute_not_exists(pk)",
                                "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}}),
            ("entry", {"Put": {"TableName": name, "Item": _entry_item(report),
                               "ConditionExpression": "attribute_not_exists(pk)"}}),
            *([("counter", window_update(self._messages, counter))] if counter is not None else []),
        ]
        try:
            transact(self._table.meta.client, items)
        except TransactionRefused as refused:
            if refused.failed("report"):
                seen = refused.seen("report")
                raise DuplicateReport(_report(seen) if seen else self._must_get(report.report_id)) from None
            if counter is not None and refused.failed("counter"):
                raise LimitExceeded(counter) from None
            raise

    def get(self, report_id: str) -> Report | None:
        """The report, or None (there is none, or it expired: gone, though TTL deletes it up to
        two days later; so an expired report is not reopened either)."""
        item = self._table.get_item(Key={"pk": _REPORT + report_id, "sk": _SK}, ConsistentRead=True).get("Item")
        return _report(item) if item and self._live(item) else None

    def entries(self, status: str = OPEN, limit: int = 50, before: str | None = None
                ) -> tuple[list[ReportEntry], str | None]:
        """A page of the list of `status`, newest first, and the cursor of the next page (None:
        no more). `before` is a previous page's cursor. One Query of one partition."""
        kwargs: dict[str, Any] = {"KeyConditionExpression": "pk = :p",
                                  "ExpressionAttributeValues": {":p": _STATUS + status},
                                  "ScanIndexForward": False, "Limit": limit}
        if before is not None:
            kwargs["ExclusiveStartKey"] = {"pk": _STATUS + status, "sk": before}
        page = self._table.query(**kwargs)
        last = page.get("LastEvaluatedKey")
        return [_entry(item) for item in page["Items"] if self._live(item)], (str(last["sk"]) if last else None)

    def _live(self, item: dict[str, Any]) -> bool:
        """Not past its `expires_at` (TTL deletes late: reads must not show what expired)."""
        return "expires_at" not in item or int(item["expires_at"]) > self._clock()

    def set_status(self, report_id: str, status: str) -> Report | None:
        """Move a report to `status` (operator tools): one transaction sets the report's status
        (conditioned on the one read) and moves its list entry between the status partitions.
        None if there is no such report; the same status changes nothing. A racing change makes
        the condition fail: read again. Closing under a retention sets `expires_at` on both
        items, any other move removes it (module docstring)."""
        for _ in range(10):
            report = self.get(report_id)
            if report is None or report.status == status:
                return report
            expires = int(self._clock()) + self._retention if status == CLOSED and self._retention > 0 else None
            moved = replace(report, status=status, expires_at=expires)
            name = self._table.name
            old_entry = {"pk": _STATUS + report.status, "sk": f"{report.created_ms:013d}#{report.report_id}"}
            values: dict[str, Any] = {":new": status, ":old": report.status}
            if expires is None:
                update = "SET #st = :new REMOVE expires_at"
            else:
                update, values[":exp"] = "SET #st = :new, expires_at = :exp", expires
            try:
                transact(self._table.meta.client, [
                    ("report", {"Update": {"TableName": name, "Key": {"pk": _REPORT + report_id, "sk": _SK},
                                           "UpdateExpression": update, "ConditionExpression": "#st = :old",
                                           "ExpressionAttributeNames": {"#st": "status"},
                                           "ExpressionAttributeValues": values}}),
                    ("old entry", {"Delete": {"TableName": name, "Key": old_entry}}),
                    ("entry", {"Put": {"TableName": name, "Item": _entry_item(moved)}}),
                ])
            except TransactionRefused as refused:
                if refused.failed("report") or refused.conflict:
                    continue
                raise
            return moved
        raise RuntimeError("the report's status kept changing")

    def _must_get(self, report_id: str) -> Report:
        found = self.get(report_id)
        assert found is not None, "a report whose Put was refused exists"
        return found


def _report_item(report: Report) -> dict[str, Any]:
    item: dict[str, Any] = {
        "pk": _REPORT + report.report_id, "sk": _SK, "reporter": report.reporter.key,
        "conversation_id": report.conversation_id, "reason": report.reason, "note": report.note,
        "time": report.created_ms, "status": report.status,
        "context": [_message_map(m) for m in report.context],
    }
    if report.seq is not None:
        item["seq"] = report.seq
    if report.message is not None:
        item["message"] = _message_map(report.message)
    if report.photo_key is not None:
        item["photo"] = report.photo_key
    return item


def _entry_item(report: Report) -> dict[str, Any]:
    item: dict[str, Any] = {
        "pk": _STATUS + report.status, "sk": f"{report.created_ms:013d}#{report.report_id}",
        "report_id": report.report_id, "reporter": report.reporter.key, "time": report.created_ms,
        "conversation_id": report.conversation_id, "reason": report.reason,
    }
    if report.seq is not None:
        item["seq"] = report.seq
    if report.expires_at is not None:  # the entry goes with its report (TTL)
        item["expires_at"] = report.expires_at
    return item


def _message_map(message: Message) -> dict[str, Any]:
    item: dict[str, Any] = {"seq": message.seq, "sender": message.sender.key, "text": message.text,
                            "time": message.time_ms, "client_id": message.client_id}
    if message.event is not None:
        item["event"] = message.event
    if message.image is not None:
        item["image"] = message.image.to_item()
    if message.deleted:  # a tombstone in the context (protocol.md §16): its text was "" already
        item["deleted"] = True
    return item


def _copied(conversation_id: str, item: dict[str, Any]) -> Message:
    return Message(
        conversation_id=conversation_id, seq=int(item["seq"]), sender=Identity.from_key(item["sender"]),
        text=str(item["text"]), time_ms=int(item["time"]), client_id=str(item["client_id"]),
        event=int_numbers(item["event"]) if "event" in item else None,
        image=StoredImage.from_item(item["image"]) if "image" in item else None,
        deleted=bool(item.get("deleted", False)),
    )


def _report(item: dict[str, Any]) -> Report:
    conversation_id = str(item["conversation_id"])
    return Report(
        report_id=str(item["pk"])[len(_REPORT):], reporter=Identity.from_key(item["reporter"]),
        conversation_id=conversation_id, seq=int(item["seq"]) if "seq" in item else None,
        reason=str(item["reason"]), note=str(item.get("note", "")), created_ms=int(item["time"]),
        status=str(item["status"]),
        message=_copied(conversation_id, item["message"]) if "message" in item else None,
        context=tuple(_copied(conversation_id, m) for m in item.get("context", [])),
        photo_key=str(item["photo"]) if "photo" in item else None,
        expires_at=int(item["expires_at"]) if "expires_at" in item else None,
    )


def _entry(item: dict[str, Any]) -> ReportEntry:
    return ReportEntry(
        report_id=str(item["report_id"]), status=str(item["pk"])[len(_STATUS):], created_ms=int(item["time"]),
        reporter=Identity.from_key(item["reporter"]), conversation_id=str(item["conversation_id"]),
        seq=int(item["seq"]) if "seq" in item else None, reason=str(item["reason"]),
    )

