"""The connections table: which connection belongs to whom and where to push to it.

Items (see infra/template.yaml):
    pk=C#<connection_id>  sk=#               the connection itself (GetItem on every frame)
    pk=U#<kind>:<id>      sk=C#<conn_id>     routing: an identity's connections (one Query)

Both items of a connection are written and deleted together in one batch call. Readers drop
items past `expires_at`, because DynamoDB TTL deletes them up to two days late.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chalicelib.principal import Identity
from chalicelib.storage.dynamo import query_all

_META_SK = "#"


@dataclass(frozen=True)
class ConnectionRecord:
    connection_id: str
    identity: Identity  # established when the connection opened; never taken from a frame
    endpoint: str  # the callback API base URL this connection is reachable through
    connected_at: float
    expires_at: int
    transport: str = "ws"
    # Presence: the connection counts as live until here (a heartbeat or a poll moves it);
    # routing still uses `expires_at`, so a connection whose heartbeats stopped is still tried
    # (and forgotten on 410) until then.
    live_until: int = 0


def _conn_key(connection_id: str) -> dict[str, Any]:
    return {"pk": f"C#{connection_id}", "sk": _META_SK}


def _route_key(identity: Identity, connection_id: str) -> dict[str, Any]:
    return {"pk": f"U#{identity.key}", "sk": f"C#{connection_id}"}


class ConnectionsTable:
    def __init__(self, table: Any, clock: Callable[[], float] = time.time) -> None:
        self._table = table  # a boto3 DynamoDB Table resource
        self._clock = clock

    def put(self, record: ConnectionRecord) -> None:
        attrs = {
            "connection_id": record.connection_id,
            "identity": record.identity.key,
            "endpoint": record.endpoint,
            "connected_at": str(record.connected_at),
            "expires_at": record.expires_at,
            "transport": record.transport,
            "live_until": record.live_until or record.expires_at,
        }
        with self._table.batch_writer() as batch:
            batch.put_item(Item={**_conn_key(record.connection_id), **attrs})
            batch.put_item(Item={**_route_key(record.identity, record.connection_id), **attrs})

    def get(self, connection_id: str) -> ConnectionRecord | None:
        # consistent: the first frame can follow `$connect` by milliseconds
        item = self._table.get_item(Key=_conn_key(connection_id), ConsistentRead=True).get("Item")
        if item is None or int(item["expires_at"]) <= self._clock():
            return None
        return _record(item)

    def list_for(self, identity: Identity) -> list[ConnectionRecord]:
        """An identity's live connections: one Query on its partition, never a Scan."""
        now = self._clock()
        items = query_all(
            self._table,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :c)",
            ExpressionAttributeValues={":pk": f"U#{identity.key}", ":c": "C#"},
            ConsistentRead=True,  # a connection opened a moment ago gets the next push
        )
        return [_record(i) for i in items if int(i["expires_at"]) > now]

    def touch(self, record: ConnectionRecord, live_until: int) -> None:
        """A heartbeat: move the routing item's `live_until` (what presence reads)."""
        self._table.update_item(Key=_route_key(record.identity, record.connection_id),
                                UpdateExpression="SET live_until = :l", ExpressionAttributeValues={":l": live_until})

    def delete(self, record: ConnectionRecord) -> None:
        with self._table.batch_writer() as batch:
            batch.delete_item(Key=_conn_key(record.connection_id))
            batch.delete_item(Key=_route_key(record.identity, record.connection_id))


def _record(item: dict[str, Any]) -> ConnectionRecord:
    return ConnectionRecord(
        connection_id=item["connection_id"],
        identity=Identity.from_key(item["identity"]),
        endpoint=item["endpoint"],
        connected_at=float(item["connected_at"]),
        expires_at=int(item["expires_at"]),
        transport=item.get("transport", "ws"),
        live_until=int(item.get("live_until", item["expires_at"])),
    )
