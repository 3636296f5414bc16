"""What an erasure (logic/erasure.py, docs/operator.md) reads and deletes by key, and its progress.

Items (members table; `E#` begins no identity key, `user:`/`visitor:`, nor `G#`, `P#`, `PS#`):
    pk=E#<identity key>  sk=#   the erasure's progress: phase, conversation (the one being
                                walked), seq (read up to there), tombstoned, operator,
                                started, finished (0: running); kept when done, as the record
                                that the identity was erased, by whom and when

Every read here is a Query of one partition, never a Scan: the identity's partition in the
members table (`pk=<identity>`, a page of memberships, or of groups it left, from a given one
on, or any of its items), its presence and routing items in the connections table (`pk=U#<identity>`), and
its rate-limit counters in the messages table (`pk=R#<scope>:<identity>`). Deletes are
BatchWriteItem pages of at most 25 keys (idempotent: a missing key is no error).

The progress crosses this module's boundary as `Progress` (field <- attribute, by name; the
identity <- pk after `E#`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chalicelib.principal import Identity
from chalicelib.storage.dynamo import query_all
from chalicelib.storage.members import Membership
from chalicelib.storage.rate_limits import Window

_PROGRESS = "E#"
_CONVERSATION = "C#"
_LEFT = "X#"  # storage/groups.py: a group the identity left
_LINK = "L#"
_BAN = "B#"  # storage/bans.py
PAGE = 25  # BatchWriteItem's most keys per call


def conversation_of(place: str) -> str:
    """The conversation id of a place `ErasureStore.place_after` returned."""
    return place[len(_CONVERSATION):]


def is_place(text: str) -> bool:
    """Whether `text` has the shape of a place (a client's cursor can carry one back)."""
    return text[:2] in (_CONVERSATION, _LEFT) and len(text) > 2


@dataclass(frozen=True)
class GroupLeft:
    group_id: str
    left_seq: int
    left_time_ms: int


@dataclass(frozen=True)
class Progress:
    identity: Identity
    phase: str
    operator: Identity
    started_ms: int
    conversation: str = ""  # the place being walked (`ErasureStore.place_after`; "" before the first)
    seq: int = 0  # its messages read up to this seq
    tombstoned: int = 0
    finished_ms: int = 0


class ErasureStore:
    def __init__(self, members: Any, messages: Any, connections: Any) -> None:
        self._members = members  # boto3 Table resources
        self._messages = messages
        self._connections = connections

    # -- progress ---------------------------------------------------------------------------------
    def progress(self, identity: Identity) -> Progress | None:
        item = self._members.get_item(Key={"pk": _PROGRESS + identity.key, "sk": "#"},
                                      ConsistentRead=True).get("Item")
        if item is None:
            return None
        return Progress(identity, str(item["phase"]), Identity.from_key(str(item["operator"])),
                        int(item["started"]), str(item.get("conversation", "")), int(item.get("seq", 0)),
                        int(item.get("tombstoned", 0)), int(item.get("finished", 0)))

    def save(self, progress: Progress) -> None:
        """One PutItem: the whole progress (only one erasure of an identity runs at a time:
        the operator's; two would each redo the other's idempotent work, never undo it)."""
        p = progress
        self._members.put_item(Item={
            "pk": _PROGRESS + p.identity.key, "sk": "#", "phase": p.phase, "operator": p.operator.key,
            "started": p.started_ms, "conversation": p.conversation, "seq": p.seq, "tombstoned": p.tombstoned,
            "finished": p.finished_ms})

    # -- the identity's partition in the members table ------------------------------------------------
    def place_after(self, identity: Identity, after: str | None) -> str | None:
        """The next place where the identity may have written, after `after` (a place this
        returned before; None: the first): its memberships (`C#<conversation>`, 1:1 and groups)
        in id order, then the groups it left and is not in again (`X#<group>`; one it rejoined
        is walked as a membership). A place is a sort key of its partition (`conversation_of`).
        One Query of at most 2 items a range, and a GetItem for each group left it skips."""
        ranges = (_CONVERSATION, _LEFT)
        start = ranges.index(after[:2]) if after else 0
        for prefix in ranges[start:]:
            low = after if after and after.startswith(prefix) else prefix
            while True:
                page = self._members.query(
                    KeyConditionExpression="pk = :pk AND sk BETWEEN :lo AND :hi",
                    ExpressionAttributeValues={":pk": identity.key, ":lo": low, ":hi": prefix[0] + "$"},
                    ProjectionExpression="sk", Limit=2, ConsistentRead=True)
                following = [str(i["sk"]) for i in page["Items"] if str(i["sk"]) != after]
                if not following:
                    break
                place = following[0]
                if prefix == _CONVERSATION or not self._is_member(identity, conversation_of(place)):
                    return place
                after = low = place
        return None

    def _is_member(self, identity: Identity, conversation_id: str) -> bool:
        key = {"pk": identity.key, "sk": _CONVERSATION + conversation_id}
        return "Item" in self._members.get_item(Key=key, ProjectionExpression="sk", ConsistentRead=True)

    def groups_left(self, identity: Identity) -> list[GroupLeft]:
        """Every group the identity left (some it may have rejoined since): a Query a 1 MB page."""
        items = query_all(self._members, KeyConditionExpression="pk = :pk AND begins_with(sk, :x)",
                          ExpressionAttributeValues={":pk": identity.key, ":x": _LEFT}, ConsistentRead=True)
        return [GroupLeft(conversation_of(str(i["sk"])), int(i["left_seq"]), int(i["left_time"])) for i in items]

    def first_group(self, identity: Identity) -> Membership | None:
        page = self._members.query(KeyConditionExpression="pk = :pk AND begins_with(sk, :g)",
                                   ExpressionAttributeValues={":pk": identity.key, ":g": _CONVERSATION + "g_"},
                                   Limit=1, ConsistentRead=True)
        return Membership.from_item(page["Items"][0]) if page["Items"] else None

    def delete_identity_page(self, identity: Identity) -> int:
        """Delete up to 25 items of the identity's partition (memberships, links, settings, the
        group count), with the other side of each link (a visitor's `L#` naming this user, or
        this user's `L#<visitor>`); returns how many it deleted of its own. A ban (`B#`) is
        kept: a token minted before the erasure stays refused (docs/operations.md)."""
        items = [i for i in self._page(self._members, identity.key) if i["sk"] != _BAN]
        keys = [{"pk": i["pk"], "sk": i["sk"]} for i in items]
        for item in items:
            sk = str(item["sk"])
            if sk == _LINK and "user" in item:  # this visitor became that user: its back link
                keys.append({"pk": str(item["user"]), "sk": _LINK + identity.key})
            elif sk.startswith(_LINK) and sk != _LINK:  # a visitor this user was: its link here
                keys.append({"pk": sk[len(_LINK):], "sk": _LINK})
        self._delete(self._members, keys)
        return len(items)

    # -- connections table: presence, routing items, connection records, mailboxes ---------------------
    def delete_connections_page(self, identity: Identity) -> int:
        items = self._page(self._connections, "U#" + identity.key)
        keys = [{"pk": i["pk"], "sk": i["sk"]} for i in items]
        for item in items:
            sk = str(item["sk"])
            if sk.startswith(_CONVERSATION):  # a routing item: its connection's record and mailbox
                keys += [{"pk": "C#" + sk[len(_CONVERSATION):], "sk": "#"},
                         {"pk": "C#" + sk[len(_CONVERSATION):], "sk": "M"}]
        self._delete(self._connections, keys)
        return len(items)

    # -- rate-limit counters (messages table) ------------------------------------------------------------
    def delete_counters_page(self, identity: Identity, scope: str) -> int:
        pk = str(Window(scope, identity.key, 0, 1, 1).key()["pk"])
        items = self._page(self._messages, pk)
        self._delete(self._messages, [{"pk": i["pk"], "sk": i["sk"]} for i in items])
        return len(items)

    @staticmethod
    def _page(table: Any, pk: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = table.query(KeyConditionExpression="pk = :pk",
                                                  ExpressionAttributeValues={":pk": pk},
                                                  ProjectionExpression="pk, sk, #u",
                                                  ExpressionAttributeNames={"#u": "user"},
                                                  Limit=PAGE, ConsistentRead=True)["Items"]
        return items

    @staticmethod
    def _delete(table: Any, keys: list[dict[str, Any]]) -> None:
        unique = list({(k["pk"], str(k["sk"])): k for k in keys}.values())
        with table.batch_writer() as batch:  # 25 keys a call; unprocessed ones are sent again
            for key in unique:
                batch.delete_item(Key=key)
