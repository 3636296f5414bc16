"""Presence: each identity's own item, beside its routing items in the connections table.

    pk=U#<kind>:<id>  sk=#presence   online_until, last_seen, announced, version, slots,
                                     r#<conn> (one route per open connection, written and removed
                                     by storage/connections.py)
                                     (crosses as `Presence`: last_seen -> last_seen_ms, the rest
                                     by name; absent: 0 / None; `slots` an immutable mapping;
                                     the routes as `connections`, ConnectionRecords)
    pk=U#<kind>:<id>  sk=C#<conn>    (routing items, storage/connections.py) read here as
                                     `Route`: the connection id (after `C#`), expires_at, and
                                     live_until, the connection's heartbeat deadline (absent:
                                     expires_at)

`slots` (a map: connection id -> when its slot was taken) holds the identity's connection
slots, at most the connection cap (logic/limits.py): an open takes one with a conditional
write (`size(slots) < :cap`), so racing opens can never pass the cap; a close gives it back.
A slot whose connection ended without a close (a lost `$disconnect`, a long poll that stopped
polling) keeps counting only until an open is refused: then one read judges every slot by
its routing item and one conditional write drops the dead ones (`drop_slots`).

An identity is online while `online_until` is in the future, judged when read: a connection
that vanished without `$disconnect` simply stops extending it. Every change is a conditional
write on this one item (the seed's serialisation): `extend` only moves the deadline forward,
`settle` rewrites it from the live connections under the item's version, and `announce`
records what peers were told, also under the version, so two writers never both win.

Only `extend`, `take_slot` and a connection's route (storage/connections.py `put`) create the
item (a connection opening is what makes presence exist; an item holding only `slots` or
routes reads as offline, never seen); `settle` and `announce`
require it (`attribute_exists` / `version = :v`), so neither can bring back an
item nor make a half one. Routing items are read here too: one that lacks `expires_at` is not
a whole connection (left by an old heartbeat that raced a disconnect) and is skipped.

The key `U#` + identity key, `sk=#presence` is unambiguous: a fixed prefix and one variable
part, and `#presence` never equals a routing item's `C#<connection>`.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from botocore.exceptions import ClientError

from chalicelib.principal import Identity
from chalicelib.storage.connections import PRESENCE_SK, ROUTE_ATTR, ConnectionRecord, route_records
from chalicelib.storage.dynamo import batch_get, condition_failed, plain

_SK = PRESENCE_SK
_ROUTE = "C#"


@dataclass(frozen=True)
class Presence:
    identity: Identity
    online_until: int
    last_seen_ms: int | None
    announced: str | None  # "online" / "offline": what peers were last told
    version: int
    # connection id -> when its slot was taken
    slots: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    # the open connections' routes: what a push to each needs (a group fan-out reads them here)
    connections: tuple[ConnectionRecord, ...] = ()

    def online(self, now: float) -> bool:
        return self.online_until > now


@dataclass(frozen=True)
class Route:
    """A connection's routing item as presence reads it: its deadlines."""

    connection_id: str
    expires_at: int  # routing ends (the record's life)
    live_until: int  # presence ends (the heartbeat deadline)

    @property
    def ends_at(self) -> int:
        """When the connection stops counting at all: the earlier of its two deadlines."""
        return min(self.live_until, self.expires_at)

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> Route:
        return cls(str(item["sk"])[len(_ROUTE):], int(item["expires_at"]),
                   int(item.get("live_until", item["expires_at"])))


class PresenceTable:
    def __init__(self, table: Any) -> None:
        self._table = table  # the connections table (a boto3 Table resource)

    @staticmethod
    def _key(identity: Identity) -> dict[str, str]:
        return {"pk": f"U#{identity.key}", "sk": _SK}

    def extend(self, identity: Identity, until: int, now_ms: int) -> Presence | None:
        """Move the online deadline forward to `until`; returns the item as it was before
        (None if it did not exist), or raises `NotExtended` when it was already later."""
        try:
            old = self._table.update_item(
                Key=self._key(identity),
                UpdateExpression="SET online_until = :u, last_seen = :s ADD version :one",
                ConditionExpression="attribute_not_exists(online_until) OR online_until < :u",
                ExpressionAttributeValues={":u": until, ":s": now_ms, ":one": 1},
                ReturnValues="ALL_OLD",
            ).get("Attributes")
        except ClientError as error:
            if condition_failed(error):
                raise NotExtended from None
            raise
        return _presence(identity, old) if old else None

    def read(self, identity: Identity) -> tuple[Presence | None, list[Route]]:
        """The presence item and the routes, in one consistent Query of the partition."""
        items = self._table.query(
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": f"U#{identity.key}"},
            ConsistentRead=True,
        )["Items"]
        presence = next((i for i in items if i["sk"] == _SK), None)
        connections = [Route.from_item(i) for i in items if i["sk"].startswith(_ROUTE) and "expires_at" in i]
        return (_presence(identity, presence) if presence else None), connections

    def settle(self, identity: Identity, online_until: int, last_seen_ms: int, version: int) -> bool:
        """Rewrite the deadline from the live connections, if nobody changed the item since it
        was read at `version`; returns False on a lost race (the caller reads again)."""
        try:
            self._table.update_item(
                Key=self._key(identity),
                UpdateExpression="SET online_until = :u, last_seen = :s, version = :next",
                ConditionExpression="attribute_exists(pk) AND (attribute_not_exists(version) OR version = :v)",
                ExpressionAttributeValues={":u": online_until, ":s": last_seen_ms, ":v": version,
                                           ":next": version + 1},
            )
        except ClientError as error:
            if condition_failed(error):
                return False
            raise
        return True

    def announce(self, identity: Identity, state: str, version: int) -> bool:
        """Record that peers are being told `state`, unless the item moved on (then whoever
        moved it decides what to tell)."""
        try:
            self._table.update_item(
                Key=self._key(identity),
                UpdateExpression="SET announced = :s",
                ConditionExpression="version = :v AND (attribute_not_exists(announced) OR announced <> :s)",
                ExpressionAttributeValues={":s": state, ":v": version},
            )
        except ClientError as error:
            if condition_failed(error):
                return False
            raise
        return True

    def take_slot(self, identity: Identity, connection_id: str, taken_at: int, cap: int
                  ) -> Mapping[str, int] | None:
        """Take one of the identity's `cap` connection slots for `connection_id` (taking it
        again is no change). None when taken; else the slots that refused it (all taken)."""
        for _ in range(3):  # the map is made by the first open; a race there just goes round
            try:
                self._table.update_item(
                    Key=self._key(identity),
                    UpdateExpression="SET slots.#c = :t",
                    # attribute_exists first: moto fails on size() of a missing attribute
                    ConditionExpression="attribute_exists(slots) AND "
                                        "(size(slots) < :cap OR attribute_exists(slots.#c))",
                    ExpressionAttributeNames={"#c": connection_id},
                    ExpressionAttributeValues={":t": taken_at, ":cap": cap},
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )
                return None
            except ClientError as error:
                if not condition_failed(error):
                    raise
                current = plain(error.response.get("Item"))
            if "slots" in current:
                return _slots(current["slots"])
            try:  # no map yet (no item, or one from before slots): make it, holding this slot
                self._table.update_item(
                    Key=self._key(identity),
                    UpdateExpression="SET slots = :m",
                    ConditionExpression="attribute_not_exists(slots)",
                    ExpressionAttributeValues={":m": {connection_id: taken_at}},
                )
                return None
            except ClientError as error:
                if not condition_failed(error):
                    raise
        raise RuntimeError("connection slots: the map kept changing")  # never seen: 3 races in a row

    def drop_slots(self, identity: Identity, dead: Mapping[str, int], connection_id: str, taken_at: int,
                   cap: int) -> bool:
        """In one conditional write: drop the `dead` slots (each only if it still holds the time
        it was judged with) and take one for `connection_id` if that leaves room. False when
        anything changed meanwhile or there is still no room."""
        names = {"#c": connection_id, **{f"#d{i}": c for i, c in enumerate(dead)}}
        values: dict[str, Any] = {":t": taken_at, ":cap": cap + len(dead),
                                  **{f":d{i}": t for i, t in enumerate(dead.values())}}
        # a dead slot's route goes with it (a push to it would only meet 410)
        names.update({f"#r{i}": ROUTE_ATTR + c for i, c in enumerate(dead)})
        removes = ", ".join([f"slots.#d{i}" for i in range(len(dead))] + [f"#r{i}" for i in range(len(dead))])
        unchanged = "".join(f" AND slots.#d{i} = :d{i}" for i in range(len(dead)))
        try:
            self._table.update_item(
                Key=self._key(identity),
                UpdateExpression="SET slots.#c = :t" + (f" REMOVE {removes}" if removes else ""),
                ConditionExpression=f"attribute_exists(slots) AND size(slots) < :cap{unchanged}",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
        except ClientError as error:
            if condition_failed(error):
                return False
            raise
        return True

    def release_slot(self, identity: Identity, connection_id: str) -> None:
        """Give the connection's slot back; one not held (a duplicate close, a refused open) is
        no change."""
        try:
            self._table.update_item(
                Key=self._key(identity),
                UpdateExpression="REMOVE slots.#c",
                ConditionExpression="attribute_exists(slots.#c)",
                ExpressionAttributeNames={"#c": connection_id},
            )
        except ClientError as error:
            if not condition_failed(error):
                raise

    def prune_routes(self, identity: Identity, connection_ids: list[str]) -> None:
        """Remove the routes of connections that are gone (their routing item deleted or
        expired): removing one twice, or one that is not there, changes nothing."""
        if not connection_ids:
            return
        names = {f"#r{i}": ROUTE_ATTR + c for i, c in enumerate(connection_ids)}
        try:
            self._table.update_item(
                Key=self._key(identity),
                UpdateExpression="REMOVE " + ", ".join(names),
                ConditionExpression="attribute_exists(pk)",  # never makes an item of a key alone
                ExpressionAttributeNames=names,
            )
        except ClientError as error:
            if not condition_failed(error):
                raise

    def batch(self, identities: list[Identity], consistent: bool = False) -> dict[Identity, Presence]:
        """Up to 100 identities' presence in one BatchGetItem (retrying unprocessed keys);
        `consistent` for pushing to the routes (a connection opened a moment ago gets the push)."""
        by_key = {f"U#{i.key}": i for i in identities}
        items = batch_get(self._table, [{"pk": pk, "sk": _SK} for pk in by_key], consistent=consistent)
        return {by_key[item["pk"]]: _presence(by_key[item["pk"]], item) for item in items}


class NotExtended(Exception):
    """The deadline was already at or past the one asked for: nothing changed."""


def _presence(identity: Identity, item: dict[str, Any]) -> Presence:
    last_seen = item.get("last_seen")
    return Presence(
        identity=identity,
        online_until=int(item.get("online_until", 0)),
        last_seen_ms=int(last_seen) if last_seen is not None else None,
        announced=item.get("announced"),
        version=int(item.get("version", 0)),
        slots=_slots(item.get("slots") or {}),
        connections=tuple(route_records(identity, item)),
    )


def _slots(stored: dict[str, Any]) -> Mapping[str, int]:
    return MappingProxyType({str(k): int(v) for k, v in stored.items()})
