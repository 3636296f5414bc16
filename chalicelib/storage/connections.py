"""The connections table: which connection belongs to whom and where to push to it.

Items (see infra/template.yaml):
    pk=C#<connection_id>  sk=#               the connection itself (GetItem on every frame)
    pk=U#<user_id>        sk=C#<conn_id>     routing: a user's connections (one Query)

Both items of a connection are written and deleted together in one batch call. Readers drop
items past `expires_at`, because DynamoDB TTL deletes them up to two days late.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_META_SK = "#"


@dataclass(frozen=True)
class ConnectionRecord:
    connection_id: str
    endpoint: str  # the callback API base URL this connection is reachable through
    connected_at: float
    expires_at: int
    user_id: str | None = None
    transport: str = "ws"


def _conn_key(connection_id: str) -> dict[str, Any]:
    return {"pk": f"C#{connection_id}", "sk": _META_SK}


def _route_key(user_id: str, connection_id: str) -> dict[str, Any]:
    return {"pk": f"U#{user_id}", "sk": f"C#{connection_id}"}


class ConnectionsTable:
    def __init__(self, table: Any, clock: Callable[[], float] = time.time) -> None:
        self._table = table  # a boto3 DynamoDB Table resource
        self._clock = clock

    def put(self, record: ConnectionRecord) -> None:
        attrs = {
            "connection_id": record.connection_id,
            "endpoint": record.endpoint,
            "connected_at": str(record.connected_at),
            "expires_at": record.expires_at,
            "transport": record.transport,
        }
        if record.user_id is None:
            self._table.put_item(Item={**_conn_key(record.connection_id), **attrs})
            return
        attrs["user_id"] = record.user_id
        with self._table.batch_writer() as batch:
            batch.put_item(Item={**_conn_key(record.connection_id), **attrs})
            batch.put_item(Item={**_route_key(record.user_id, record.connection_id), **attrs})

    def get(self, connection_id: str) -> ConnectionRecord | None:
        item = self._table.get_item(Key=_conn_key(connection_id)).get("Item")
        if item is None or int(item["expires_at"]) <= self._clock():
            return None
        return _record(item)

    def list_for_user(self, user_id: str) -> list[ConnectionRecord]:
        """A user's live connections: one Query on the user's partition, never a Scan."""
        now = self._clock()
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :c)",
            "ExpressionAttributeValues": {":pk": f"U#{user_id}", ":c": "C#"},
        }
        while True:
            page = self._table.query(**kwargs)
            items.extend(page["Items"])
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return [_record(i) for i in items if int(i["expires_at"]) > now]

    def delete(self, record: ConnectionRecord) -> None:
        if record.user_id is None:
            self._table.delete_item(Key=_conn_key(record.connection_id))
            return
        with self._table.batch_writer() as batch:
            batch.delete_item(Key=_conn_key(record.connection_id))
            batch.delete_item(Key=_route_key(record.user_id, record.connection_id))


def _record(item: dict[str, Any]) -> ConnectionRecord:
    return ConnectionRecord(
        connection_id=item["connection_id"],
        endpoint=item["endpoint"],
        connected_at=float(item["connected_at"]),
        expires_at=int(item["expires_at"]),
        user_id=item.get("user_id"),
        transport=item.get("transport", "ws"),
    )
