"""Bans (operator tools, docs/operator.md): an identity whose tokens are refused, in the members table.

Item (in the banned identity's own partition, beside its memberships `C#…`, links `L#…` and
group count `G#`; `B#` begins none of them, and the item has no `last_time`, so it is never in
`by_last_time`):
    pk=<identity key>   sk=B#   by (the operator's identity key), reason, time (ms)

One GetItem answers "is it banned" (`banned`); a ban is a Put (a second ban rewrites it), an
unban a Delete (idempotent). An erasure of the identity (issue 26 point 5) finds it in the
identity's partition with everything else.

A ban crosses this module's boundary as a `Ban` (field <- attribute): identity <- pk, by <- by,
reason <- reason, time_ms <- time.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chalicelib.principal import Identity

_SK = "B#"


@dataclass(frozen=True)
class Ban:
    identity: Identity
    by: Identity
    reason: str
    time_ms: int


class BansTable:
    def __init__(self, table: Any) -> None:
        self._table = table  # the members table (a boto3 Table resource)

    def put(self, ban: Ban) -> None:
        self._table.put_item(Item={"pk": ban.identity.key, "sk": _SK, "by": ban.by.key, "reason": ban.reason,
                                   "time": ban.time_ms})

    def delete(self, identity: Identity) -> bool:
        """Lift the ban; whether there was one."""
        old = self._table.delete_item(Key={"pk": identity.key, "sk": _SK}, ReturnValues="ALL_OLD").get("Attributes")
        return bool(old)

    def get(self, identity: Identity, consistent: bool = True) -> Ban | None:
        item = self._table.get_item(Key={"pk": identity.key, "sk": _SK}, ConsistentRead=consistent).get("Item")
        if not item:
            return None
        return Ban(identity, Identity.from_key(str(item["by"])), str(item.get("reason", "")), int(item["time"]))

    def banned(self, identity: Identity, consistent: bool = True) -> bool:
        """One GetItem (keys only): 0.5 RCU eventually consistent, 1 strongly."""
        item = self._table.get_item(Key={"pk": identity.key, "sk": _SK}, ConsistentRead=consistent,
                                    ProjectionExpression="pk").get("Item")
        return bool(item)
