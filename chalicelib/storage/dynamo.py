"""Small helpers shared by the table modules: paged Query, BatchGetItem, one conditional update
(`update_if`: the item its failed condition saw) and one transaction of named items
(`transact`: a cancellation says which named condition failed, never by position)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer
from botocore.exceptions import ClientError

_deserializer = TypeDeserializer()


def plain(raw: dict[str, Any] | None) -> dict[str, Any]:
    """An item from an error response (`ReturnValuesOnConditionCheckFailure`) as Python values.

    The Table resource deserializes results, but not error responses: there items stay in
    DynamoDB's `{"S": ...}` form.
    """
    return {key: _deserializer.deserialize(value) for key, value in (raw or {}).items()}


def int_numbers(value: Any) -> Any:
    """DynamoDB's Decimals as ints, deep (an event map holds seqs and counts), so the value
    encodes as JSON."""
    if isinstance(value, dict):
        return {k: int_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [int_numbers(v) for v in value]
    return int(value) if isinstance(value, Decimal) else value


def query_all(table: Any, **kwargs: Any) -> list[dict[str, Any]]:
    """Every item of a Query, following `LastEvaluatedKey` across 1 MB pages."""
    items: list[dict[str, Any]] = []
    while True:
        page = table.query(**kwargs)
        items.extend(page["Items"])
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def batch_get(table: Any, keys: list[dict[str, Any]], projection: str | None = None,
              consistent: bool = False) -> list[dict[str, Any]]:
    """Up to 100 items by key in one BatchGetItem, retrying what DynamoDB left unprocessed."""
    found: list[dict[str, Any]] = []
    wanted: dict[str, Any] = {"Keys": keys, "ConsistentRead": consistent}
    if projection:
        wanted["ProjectionExpression"] = projection
    request: dict[str, Any] = {table.name: wanted} if keys else {}
    while request:
        response = table.meta.client.batch_get_item(RequestItems=request)
        found.extend(response["Responses"].get(table.name, []))
        request = response.get("UnprocessedKeys") or {}
    return found


def condition_failed(error: ClientError) -> bool:
    return bool(error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException")


@dataclass(frozen=True)
class Refused:
    """A conditional update whose condition failed: the item as it is (`{}` when there is none)."""

    current: dict[str, Any]


def update_if(table: Any, key: dict[str, Any], update: str, condition: str, values: dict[str, Any],
              new: bool = True) -> dict[str, Any] | Refused:
    """One conditional UpdateItem: the item after it (`{}` unless `new`), or Refused with the item
    as the failed condition saw it, so the caller tells "missing" from "not now" without a read."""
    try:
        answer = table.update_item(Key=key, UpdateExpression=update, ConditionExpression=condition,
                                   ExpressionAttributeValues=values, ReturnValues="ALL_NEW" if new else "NONE",
                                   ReturnValuesOnConditionCheckFailure="ALL_OLD")
    except ClientError as error:
        if not condition_failed(error):
            raise
        return Refused(plain(error.response.get("Item")))
    return dict(answer.get("Attributes") or {})


FAILED = "ConditionalCheckFailed"  # a cancellation reason: that item's condition was false
CONFLICT = "TransactionConflict"  # that item was busy in another transaction: nothing written


class TransactionRefused(Exception):
    """A TransactWriteItems was cancelled: nothing of it was written. Each item is told by the
    name it was given (`transact`): its reason code (`"None"` where it was fine) and the item
    its failed condition saw, where the action asked for it (ReturnValuesOnConditionCheckFailure)."""

    def __init__(self, codes: dict[str, str], seen: dict[str, dict[str, Any]]) -> None:
        super().__init__("transaction cancelled: " + ", ".join(f"{n}={c}" for n, c in codes.items() if c != "None"))
        self.codes = codes
        self._seen = seen

    def failed(self, name: str) -> bool:
        """Whether the named item's condition failed."""
        return self.codes.get(name) == FAILED

    def seen(self, name: str) -> dict[str, Any]:
        """The named item as its failed condition saw it (`{}`: none, or not asked for)."""
        return self._seen.get(name, {})

    @property
    def failed_names(self) -> list[str]:
        """The names whose condition failed, in the transaction's order."""
        return [name for name, code in self.codes.items() if code == FAILED]

    @property
    def conflict(self) -> bool:
        """Whether some item was busy in another transaction at that moment."""
        return CONFLICT in self.codes.values()

    def only(self, *codes: str) -> bool:
        """Whether every item's reason is one of `codes` (or none)."""
        return all(code in ("None", *codes) for code in self.codes.values())


def transact(client: Any, items: Sequence[tuple[str, dict[str, Any]]]) -> None:
    """One TransactWriteItems of (name, action) pairs, names unique. A cancellation raises
    TransactionRefused, which tells by name which condition failed (never by position); any
    other error is raised as it came."""
    names = [name for name, _ in items]
    assert len(set(names)) == len(names), "each item of a transaction has its own name"
    try:
        client.transact_write_items(TransactItems=[action for _, action in items])
    except ClientError as error:
        reasons = error.response.get("CancellationReasons")
        if not reasons or len(reasons) != len(names):
            raise
        codes = {name: str(reason.get("Code") or "None") for name, reason in zip(names, reasons, strict=True)}
        seen = {name: plain(reason["Item"]) for name, reason in zip(names, reasons, strict=True)
                if reason.get("Item")}
        raise TransactionRefused(codes, seen) from None
