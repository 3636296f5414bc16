"""Doorbells: one SQS queue per long-poll connection, so a held poll can sleep in an SQS long
poll instead of reading its mailbox every 25 ms (docs/performance.md, "Long poll versus
WebSocket").

    queue name: <prefix><connection id>      e.g. webim-dev-lp-lp-3q2x...  (prefix from settings)

The push path rings after appending a frame, with the frame's mailbox number and (when small)
a copy of the frame: a held poll woken by the doorbells of exactly the next frames answers with
them without reading the mailbox; any gap, or a doorbell without its copy, and it reads the
mailbox (storage/mailbox.py), which stays the one record of what is pending. A stale doorbell
(its frame already taken) is recognised by its number and costs nothing; a lost one delays its
frame by at most the poll's safety interval.

A received doorbell stays invisible for as long as SQS keeps any message (a minute, its
shortest retention), so it never wakes anyone twice even if it is never deleted; the poll
deletes it later, off the latency path (see logic/longpoll.py), which keeps moto's queues small
(moto drops no expired message, and its SQS calls slow down as a queue fills). A doorbell
nobody received expires after that minute, so a queue never fills up on AWS.

Queue URLs are built, not looked up (no GetQueueUrl per push): every doorbell queue lives in the
same account and region as `url_base` (the directory of the ack-timeout queue's URL).
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

RETENTION_SECONDS = 60  # SQS's minimum: a doorbell is worthless after that
LIST_PAGE = 1000  # ListQueues' maximum page
# A doorbell whose body would pass this rings without its copy (SQS bills per 64 KB and takes
# at most 256 KB): a ring never fails for its size, the poll then reads the mailbox.
MAX_COPY = 64 * 1024
# what an SQS message body may not contain (it allows #x9 #xA #xD #x20-#xD7FF #xE000-#xFFFD
# #x10000-#x10FFFF); json.dumps already escapes the controls below #x20
_SQS_REFUSES = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


@dataclass(frozen=True)
class Doorbell:
    receipt: str
    number: int  # the mailbox number of the frame it announces (0: unknown)
    frame: str | None  # a copy of that frame, when it was small enough to carry


class DoorbellQueues:
    def __init__(self, client: Any, ring_client: Any, url_base: str, prefix: str) -> None:
        """`ring_client` sends the doorbells: give it short timeouts and no retries, as a ring must
        never slow a push; `client` does the rest (its read timeout above the longest wait)."""
        self._client = client
        self._ring_client = ring_client
        self._url_base = url_base.rstrip("/") + "/"
        self.prefix = prefix

    def url(self, connection_id: str) -> str:
        return self._url_base + self.prefix + connection_id

    def create(self, connection_id: str) -> None:
        self._client.create_queue(QueueName=self.prefix + connection_id, Attributes={
            "MessageRetentionPeriod": str(RETENTION_SECONDS),
            "ReceiveMessageWaitTimeSeconds": "0",  # every receive says how long it waits
        })

    def ring(self, connection_id: str, number: int, frame: str | None) -> bool:
        """Ring; False when the queue is gone (the connection closed after the frame was stored:
        nobody is waiting). Other failures raise."""
        text = json.dumps({"n": number}, separators=(",", ":"))
        if frame is not None and len(frame.encode("utf-8")) < MAX_COPY - 64:
            copy = json.dumps({"n": number, "f": frame}, separators=(",", ":"), ensure_ascii=False)
            if _SQS_REFUSES.search(copy):  # e.g. U+FFFF in a message text: SQS refuses the raw body
                copy = json.dumps({"n": number, "f": frame}, separators=(",", ":"))  # \u-escaped
            if len(copy.encode("utf-8")) <= MAX_COPY:
                text = copy
        try:
            self._ring_client.send_message(QueueUrl=self.url(connection_id), MessageBody=text)
        except ClientError as error:
            if _no_such_queue(error):
                return False
            raise
        return True

    def wait(self, connection_id: str, seconds: int) -> list[Doorbell]:
        """Wait up to `seconds` (1-20) for doorbells; returns those that rang (empty: none in
        time). Raises if the queue is missing or unusable."""
        received = self._client.receive_message(
            QueueUrl=self.url(connection_id), MaxNumberOfMessages=10, WaitTimeSeconds=max(1, min(20, seconds)),
            VisibilityTimeout=RETENTION_SECONDS,  # invisible until expired: received once, deleted or not
        )
        return [_doorbell(message) for message in received.get("Messages", [])]

    def clear(self, connection_id: str, receipts: list[str]) -> None:
        """Delete received doorbells (at most 10: one receive's worth)."""
        if receipts:
            self._client.delete_message_batch(QueueUrl=self.url(connection_id), Entries=[
                {"Id": str(i), "ReceiptHandle": handle} for i, handle in enumerate(receipts[:10])])

    def delete(self, connection_id: str) -> None:
        """Delete the connection's queue; one already gone is not an error."""
        try:
            self._client.delete_queue(QueueUrl=self.url(connection_id))
        except ClientError as error:
            if not _no_such_queue(error):
                raise

    def connection_ids(self) -> Iterator[str]:
        """The connection id of every doorbell queue under the prefix, a page at a time."""
        params: dict[str, Any] = {"QueueNamePrefix": self.prefix, "MaxResults": LIST_PAGE}
        while True:
            page = self._client.list_queues(**params)
            for url in page.get("QueueUrls", []):
                name = url.rsplit("/", 1)[-1]
                if name.startswith(self.prefix):
                    yield name[len(self.prefix):]
            if not page.get("NextToken"):
                return
            params["NextToken"] = page["NextToken"]


def _doorbell(message: dict[str, Any]) -> Doorbell:
    try:
        body = json.loads(message.get("Body", ""))
        number, frame = int(body["n"]), body.get("f")
    except (ValueError, TypeError, KeyError):
        return Doorbell(message["ReceiptHandle"], 0, None)  # tells only "look"
    return Doorbell(message["ReceiptHandle"], number, frame if isinstance(frame, str) else None)


def _no_such_queue(error: ClientError) -> bool:
    code = error.response.get("Error", {}).get("Code", "")
    return code in ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist")
