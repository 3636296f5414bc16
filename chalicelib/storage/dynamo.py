"""Small helpers shared by the table modules."""
from __future__ import annotations

from dataclasses import dataclass
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
