"""Doorbells: one SQS queue per long-poll connection, where the wait API holds its client's
wait (protocol.md §2b, docs/architecture.md).

    queue name: <prefix><connection id>      e.g. webim-dev-lp-lp-3q2x...  (prefix from settings)

The push path rings after appending a frame to the mailbox, with the frame's mailbox number and
(when small) a copy of the frame: a waiting client gets exactly that ring from the wait API's
ReceiveMessage; a ring without its copy, or a gap in the numbers, and it polls the mailbox
(storage/mailbox.py), which stays the one record of what is pending. A stale ring (its frame
already taken) is recognised by its number and costs nothing; a lost one is found at the
client's next gap or heartbeat poll.

A ring handed out to a wait stays invisible for as long as SQS keeps any message (a minute, its
shortest retention, the wait API's VisibilityTimeout), so it wakes one wait only and nobody
deletes it; a ring nobody received expires after that minute, so a queue never fills up on AWS.

Queue URLs are built, not looked up (no GetQueueUrl per push): every doorbell queue lives in the
same account and region as `url_base` (the directory of the jobs queue's URL).
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from botocore.exceptions import ClientError

RETENTION_SECONDS = 60  # SQS's minimum: a doorbell is worthless after that
LIST_PAGE = 1000  # ListQueues' maximum page
# A doorbell whose body would pass this rings without its copy (SQS bills per 64 KB and takes
# at most 256 KB): a ring never fails for its size, the client then polls for the frame.
MAX_COPY = 64 * 1024
# what an SQS message body may not contain (it allows #x9 #xA #xD #x20-#xD7FF #xE000-#xFFFD
# #x10000-#x10FFFF); json.dumps already escapes the controls below #x20
_SQS_REFUSES = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


class DoorbellQueues:
    def __init__(self, client: Any, ring_client: Any, url_base: str, prefix: str) -> None:
        """`ring_client` sends the doorbells: give it short timeouts and few retries, as a ring
        must never slow a push much; `client` does the rest."""
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


def _no_such_queue(error: ClientError) -> bool:
    code = error.response.get("Error", {}).get("Code", "")
    return code in ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist")
