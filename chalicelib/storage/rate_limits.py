"""Rate-limit counters: one fixed-window count per (scope, subject, window), in the messages table.

    pk=R#<scope>:<subject>   sk=<window start, epoch seconds>   n, expires_at

`scope` is one of a fixed set of names without `:` (`mint`, `send`, `presence`), so the first
`:` ends it and any subject (an identity key, an IPv6 address) is unambiguous; no other item
of the table starts with `R#` (conversations are `d_...`, idempotency records `I#...`). A
count is taken by one conditional `ADD`: the condition refuses it at the limit, so a refused
attempt changes nothing. TTL removes old windows (`expires_at`); no reader depends on it.
The send counter is not a call of its own: it is one more item of the send's transaction
(`window_update`), so a cancelled transaction (a seq conflict, a duplicate) counts nothing.
A counter crosses this module's boundary as a `Window` (scope and subject <- pk, start <- sk,
limit -> the condition on `n`, start + seconds -> expires_at); a full one as LimitExceeded.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from chalicelib.storage.dynamo import condition_failed

_PREFIX = "R#"
# Old windows outlive their end by this much before TTL may remove them (never read again).
_KEEP_SECONDS = 60


@dataclass(frozen=True)
class Window:
    """One counter: at most `limit` takes by `subject` in [start, start + seconds)."""

    scope: str
    subject: str
    start: int
    seconds: int
    limit: int

    @property
    def end(self) -> int:
        return self.start + self.seconds

    def key(self) -> dict[str, Any]:
        return {"pk": f"{_PREFIX}{self.scope}:{self.subject}", "sk": self.start}


class LimitExceeded(Exception):
    """The window is full: nothing was counted (or, in a transaction, nothing written)."""

    def __init__(self, window: Window) -> None:
        super().__init__(f"{window.scope} limit of {window.limit} reached until {window.end}")
        self.window = window


class RateLimitTable:
    def __init__(self, table: Any) -> None:
        self._table = table  # the messages table (a boto3 Table resource)

    def take(self, window: Window) -> None:
        """Count one; raises LimitExceeded (counting nothing) when the window is full."""
        try:
            self._table.update_item(Key=window.key(), **_update(window))
        except ClientError as error:
            if condition_failed(error):
                raise LimitExceeded(window) from None
            raise



def window_update(table_name: str, window: Window) -> dict[str, Any]:
    """The same count as a TransactWriteItems action on `table_name` (the messages table): it
    cancels the transaction when the window is full."""
    return {"Update": {"TableName": table_name, "Key": window.key(), **_update(window)}}


def _update(window: Window) -> dict[str, Any]:
    return {
        "UpdateExpression": "ADD n :one SET expires_at = :e",
        "ConditionExpression": "attribute_not_exists(n) OR n < :limit",
        "ExpressionAttributeValues": {":one": 1, ":limit": window.limit, ":e": window.end + _KEEP_SECONDS},
    }
