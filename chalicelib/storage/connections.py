"""The connections table: which connection belongs to whom and where to push to it.

Items (see infra/template.yaml):
    pk=C#<connection_id>  sk=#               the connection itself (GetItem on every frame)
    pk=U#<kind>:<id>      sk=C#<conn_id>     routing: an identity's connections (one Query)

Both items of a connection are written and deleted together in one batch call. Readers drop
items past `expires_at`, because DynamoDB TTL deletes them up to two days late.

The identity's presence item (`pk=U#<kind>:<id>`, `sk=#presence`, storage/presence.py) also
carries each open connection as a route, one attribute `r#<conn_id>` = {endpoint, transport,
connected_at, expires_at}: what a push needs, so a group fan-out reads a page of members'
connections with their presence (one BatchGetItem of 100) instead of one Query per member.
`put` writes it after the two items, `delete` removes it after them (UpdateItems: the
presence item is shared). One left behind (a `$disconnect` that raced the `$connect`, a lost
`$disconnect`, a long poll that stopped polling) is not trusted: a WebSocket push to it meets
410 and the router forgets the connection (`delete`); presence's settle, which runs after
every close and at least every 15 minutes while the identity is online, prunes routes whose
routing item is gone or expired (storage/presence.py `prune_routes`), which is what ends the
pushes into an abandoned long poll's mailbox (it takes frames until its item expires).

Only `put` (a connection opening, under a fresh id) creates items. Every later write is an
UpdateItem conditioned on the item existing and not having expired: a heartbeat or a long
poll's refresh racing `$disconnect` / `lp/close` must never re-create an item that was just
deleted (it would hold only the updated attributes, and no `expires_at` for TTL to act on).
Readers also skip any item missing the attributes a connection always has.

Keys are unambiguous: each is a fixed prefix and one variable part (`C#` + a connection id,
`U#` + an identity key, whose own `kind:` prefix is fixed), and the sort keys `#`, `M`,
`#presence` and `C#...` never overlap; connection ids are server-made (URL-safe, no `#`).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from chalicelib.principal import Identity
from chalicelib.storage.dynamo import Refused, batch_get, condition_failed, query_all, update_if

_META_SK = "#"
PRESENCE_SK = "#presence"  # the identity's presence item (storage/presence.py), beside its routing items
ROUTE_ATTR = "r#"  # + a connection id: that connection's route on the presence item
# what every connection item holds; an item without them is not a connection (skipped)
_REQUIRED = ("connection_id", "identity", "endpoint", "connected_at", "expires_at")


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


def _presence_key(identity: Identity) -> dict[str, Any]:
    return {"pk": f"U#{identity.key}", "sk": PRESENCE_SK}


def route_records(identity: Identity, item: dict[str, Any]) -> list[ConnectionRecord]:
    """The connections a presence item carries as routes (`r#<conn_id>` attributes), as the
    records a push needs. A route's `expires_at` is the one written at open (a long poll's
    moves with each poll, and is not copied here): pushes are never judged by it."""
    records = []
    for name, route in item.items():
        if not name.startswith(ROUTE_ATTR) or not isinstance(route, dict):
            continue
        if not all(k in route for k in ("endpoint", "transport", "connected_at", "expires_at")):
            continue  # not a whole route: skipped, as a routing item without its attributes
        records.append(ConnectionRecord(
            connection_id=name[len(ROUTE_ATTR):],
            identity=identity,
            endpoint=str(route["endpoint"]),
            connected_at=float(route["connected_at"]),
            expires_at=int(route["expires_at"]),
            transport=str(route["transport"]),
            live_until=int(route["expires_at"]),
        ))
    return records


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
        # after the routing items: a route on the presence item always had them (settle prunes
        # a route whose routing item is gone). Unconditional: the first connection may come
        # before the presence item exists (one holding only routes reads as offline).
        self._table.update_item(
            Key=_presence_key(record.identity),
            UpdateExpression="SET #r = :r",
            ExpressionAttributeNames={"#r": ROUTE_ATTR + record.connection_id},
            ExpressionAttributeValues={":r": {k: attrs[k] for k in ("endpoint", "transport", "connected_at",
                                                                    "expires_at")}},
        )

    def get(self, connection_id: str) -> ConnectionRecord | None:
        # consistent: the first frame can follow `$connect` by milliseconds
        item = self._table.get_item(Key=_conn_key(connection_id), ConsistentRead=True).get("Item")
        if item is None or not _complete(item) or int(item["expires_at"]) <= self._clock():
            return None
        return _record(item)

    def existing(self, connection_ids: list[str]) -> set[str]:
        """Which of (at most 100) connections have an unexpired record: one BatchGetItem,
        consistent (a record written a moment ago counts)."""
        items = batch_get(self._table, [_conn_key(c) for c in connection_ids],
                          projection="connection_id, expires_at", consistent=True)
        now = self._clock()
        return {str(item["connection_id"]) for item in items
                if "connection_id" in item and int(item.get("expires_at", 0)) > now}

    def list_for(self, identity: Identity) -> list[ConnectionRecord]:
        """An identity's live connections: one Query on its partition, never a Scan."""
        now = self._clock()
        items = query_all(
            self._table,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :c)",
            ExpressionAttributeValues={":pk": f"U#{identity.key}", ":c": "C#"},
            ConsistentRead=True,  # a connection opened a moment ago gets the next push
        )
        return [_record(i) for i in items if _complete(i) and int(i["expires_at"]) > now]

    def touch(self, record: ConnectionRecord, live_until: int) -> bool:
        """A heartbeat: move the routing item's `live_until` (what presence reads). Returns
        False, changing nothing, when the connection is gone (deleted or expired)."""
        try:
            self._table.update_item(
                Key=_route_key(record.identity, record.connection_id),
                UpdateExpression="SET live_until = :l",
                ConditionExpression="attribute_exists(pk) AND expires_at > :now",
                ExpressionAttributeValues={":l": live_until, ":now": int(self._clock())},
            )
        except ClientError as error:
            if condition_failed(error):
                return False
            raise
        return True

    def extend(self, record: ConnectionRecord, until: int) -> int | None:
        """Move both items' `expires_at` and `live_until` to `until`, never earlier than they
        are. Returns the connection's expiry now, or None when it is gone (deleted or expired).

        Two conditional UpdateItems rather than a transaction: each alone never re-creates an
        item, and a close between them leaves nothing behind (it deletes both).
        """
        now = int(self._clock())
        kept = until
        for key in (_conn_key(record.connection_id), _route_key(record.identity, record.connection_id)):
            expiry = self._extend_item(key, until, now)
            if expiry is None:
                return None
            kept = max(kept, expiry)
        return kept

    def _extend_item(self, key: dict[str, Any], until: int, now: int) -> int | None:
        result = update_if(self._table, key, "SET expires_at = :u, live_until = :u",
                           "attribute_exists(pk) AND expires_at > :now AND expires_at < :u",
                           {":u": until, ":now": now}, new=False)
        if isinstance(result, Refused):
            old = result.current
            if "expires_at" not in old or int(old["expires_at"]) <= now:
                return None  # deleted (or never a whole item) or expired: gone
            return int(old["expires_at"])  # already later: a shorter window never shortens it
        return until

    def delete(self, record: ConnectionRecord) -> None:
        with self._table.batch_writer() as batch:
            batch.delete_item(Key=_conn_key(record.connection_id))
            batch.delete_item(Key=_route_key(record.identity, record.connection_id))
        self.drop_route(record.identity, record.connection_id)

    def drop_route(self, identity: Identity, connection_id: str) -> None:
        """Remove a connection's route from the presence item (none there: no change; never
        creates the item)."""
        try:
            self._table.update_item(
                Key=_presence_key(identity),
                UpdateExpression="REMOVE #r",
                ConditionExpression="attribute_exists(#r)",
                ExpressionAttributeNames={"#r": ROUTE_ATTR + connection_id},
            )
        except ClientError as error:
            if not condition_failed(error):
                raise


def _complete(item: dict[str, Any]) -> bool:
    return all(name in item for name in _REQUIRED)


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
