"""The members table: a cursor per member of each conversation, and identity links.

Items (pk is an identity key, `kind:id`):
    pk=<identity>  sk=C#<conversation_id>   membership: peer, cursors (acked/read seq)
    pk=<visitor>   sk=L#                    the user this visitor became (at most one)
    pk=<user>      sk=L#<visitor>           the visitors this user once was
    pk=<identity>  sk=C#g_<group>           a group membership: role, joined_seq, cursors; no
                                            peer, no last_time (storage/groups.py, `groups_of`)
    pk=<identity>  sk=S#                    the identity's settings: read_receipts (absent: on)

A membership (1:1 or group) also holds `typing_at`, when its member last sent a `typing` that
was pushed (`touch_typing`): the one write that proves membership and limits the rate.

A Query on one partition lists a member's conversations; links live beside them so the same
partition answers "who was this before". The `by_last_time` index (pk, last_time) lists a
member's conversations newest first, a page at a time.

Privacy marks on a membership, written by the send transaction (storage/messages.py):
`wrote` (this member has sent here) and `writers` (the set of identities that sent to this
member here). A visitor's presence and link are shown only where the visitor wrote.

Writes: `join`, `link` and the send transaction create memberships and links on purpose
(create-if-missing); `advance` and `mark_peer_linked` are conditioned on `attribute_exists`,
so an update never creates a membership it expects to exist. Keys are unambiguous: pk is one
identity key (its own `kind:` prefix ends at the first `:`, principal.py) and each sort key a
fixed prefix plus one variable part (`C#` + a conversation id, `L#` + a visitor key, or `L#`
alone, which no `L#<visitor>` equals since a key is never empty; `S#` alone, the settings).

A membership crosses this module's boundary as a `Membership` record (field <- attribute):

    member           <- pk                 the identity whose side this is
    conversation_id  <- sk after `C#`
    peer             <- peer               the other member of a 1:1 (None: a group)
    acked_seq        <- acked_seq          received up to (absent: 0)
    read_seq         <- read_seq           read up to (absent: 0)
    told_seq         <- told_seq           the peer was told `delivered` up to (absent: 0)
    last_seq, last_time, last_sender, preview, preview_image, last_event
                     <- the same names     a 1:1's copy of its last message (absent: 0 / None /
                                           "" / False / None: the event of an event message,
                                           a delete's tombstone); a group's are on its head
    wrote            <- wrote              this member has sent here (absent: False)
    writers          <- writers            the identities that sent to this member here (a set)
    via_visitor      <- via_visitor        carried over from this visitor (logic/linking.py)
    peer_linked_user <- peer_linked_user   the user the visitor peer became, shown here
    typing_at        <- typing_at          when the last pushed `typing` was noted (ms)
    blocked          <- blocked            this member blocked its 1:1 peer (absent: False)
    blocked_by_peer  <- blocked_by_peer    this member's 1:1 peer blocked it (absent: False);
                                           both written by `block` in one transaction and read
                                           by logic/privacy.py and the send (protocol.md §15)
    group, role, joined_seq
                     <- the same names     a group membership (storage/groups.py); joined_seq
                                           absent (a 1:1): 1, every message is the member's
Reads that project (`cursors`, `writers`) fill only the fields they name; the rest keep their
defaults. The settings item crosses as `Settings` (read_receipts <- read_receipts, absent: on).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from botocore.exceptions import ClientError

from chalicelib.errors import AlreadyLinkedError
from chalicelib.principal import Identity
from chalicelib.storage.dynamo import (
    Refused,
    TransactionRefused,
    batch_get,
    condition_failed,
    int_numbers,
    query_all,
    transact,
    update_if,
)

_CONVERSATION = "C#"
_LINK = "L#"
_SETTINGS = "S#"
BY_LAST_TIME = "by_last_time"


def _identity(value: Any) -> Identity | None:
    return Identity.from_key(str(value)) if value else None


@dataclass(frozen=True)
class Membership:
    """One member's side of a conversation, 1:1 or group (the item layout: module docstring)."""

    member: Identity
    conversation_id: str
    peer: Identity | None = None  # None: a group membership
    acked_seq: int = 0
    read_seq: int = 0
    told_seq: int = 0
    last_seq: int = 0
    last_time: int = 0
    last_sender: Identity | None = None
    preview: str = ""
    preview_image: bool = False
    last_event: dict[str, Any] | None = None
    wrote: bool = False
    writers: frozenset[Identity] = frozenset()
    via_visitor: Identity | None = None
    peer_linked_user: Identity | None = None
    typing_at: int | None = None
    blocked: bool = False
    blocked_by_peer: bool = False
    group: bool = False
    role: str | None = None
    joined_seq: int = 1

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> Membership:
        """The record of a membership item (`pk`, `sk=C#...` and what a read projected)."""
        return cls(
            member=Identity.from_key(str(item["pk"])),
            conversation_id=str(item["sk"])[len(_CONVERSATION):],
            peer=_identity(item.get("peer")),
            acked_seq=int(item.get("acked_seq", 0)),
            read_seq=int(item.get("read_seq", 0)),
            told_seq=int(item.get("told_seq", 0)),
            last_seq=int(item.get("last_seq", 0)),
            last_time=int(item.get("last_time", 0)),
            last_sender=_identity(item.get("last_sender")),
            preview=str(item.get("preview", "")),
            preview_image=bool(item.get("preview_image")),
            last_event=int_numbers(item["last_event"]) if "last_event" in item else None,
            wrote=item.get("wrote") is True,
            writers=frozenset(Identity.from_key(str(k)) for k in item.get("writers") or ()),
            via_visitor=_identity(item.get("via_visitor")),
            peer_linked_user=_identity(item.get("peer_linked_user")),
            typing_at=int(item["typing_at"]) if "typing_at" in item else None,
            blocked=item.get("blocked") is True,
            blocked_by_peer=item.get("blocked_by_peer") is True,
            group=item.get("group") is True,
            role=str(item["role"]) if "role" in item else None,
            joined_seq=int(item.get("joined_seq", 1)),
        )

    @property
    def shown_link(self) -> Identity | None:
        """The user this membership's visitor peer is shown to have become, if any: marked
        when the visitor, having written here, linked; or seen because that user wrote here."""
        if self.peer_linked_user is not None:
            return self.peer_linked_user
        others = sorted(self.writers - {self.peer}, key=lambda i: i.key) if self.peer else []
        return others[0] if others else None

    @property
    def peer_wrote(self) -> bool:
        """Whether this membership's peer has itself sent a message in the conversation."""
        return self.peer is not None and self.peer in self.writers

    @property
    def peers(self) -> list[Identity]:
        """Who gets a 1:1 conversation's pushes from this side: the peer, and the user a
        visitor peer has become where that is shown here (none in a group)."""
        if self.peer is None:
            return []
        linked = self.shown_link
        return [self.peer, linked] if linked is not None else [self.peer]


@dataclass(frozen=True)
class Settings:
    """An identity's settings (item `pk=<identity>, sk=S#`)."""

    read_receipts: bool = True

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> Settings:
        return cls(read_receipts=_receipts_on(item))


def _receipts_on(settings: dict[str, Any]) -> bool:
    return settings.get("read_receipts") is not False  # absent: on


class Cursor(Enum):
    """A member's cursor that `advance` moves (the value: its attribute)."""

    ACKED = "acked_seq"
    READ = "read_seq"


class NotDirect(Exception):
    """The conversation is a group: only a 1:1 peer can be blocked."""


class TypingTooSoon(Exception):
    """The member's last pushed `typing` in this conversation is less than an interval old."""


class MembersTable:
    def __init__(self, table: Any) -> None:
        self._table = table  # a boto3 DynamoDB Table resource

    def join(self, member: Identity, conversation_id: str, peer: Identity, **attrs: Any) -> bool:
        """Add a membership unless it exists; returns whether it was added."""
        item = {"pk": member.key, "sk": _CONVERSATION + conversation_id, "peer": peer.key, **attrs}
        try:
            self._table.put_item(Item=item, ConditionExpression="attribute_not_exists(pk)")
        except ClientError as error:
            if condition_failed(error):
                return False
            raise
        return True

    def carry(self, member: Identity, membership: Membership, via_visitor: Identity) -> bool:
        """Add to `member` (a user) the 1:1 membership its visitor had, unless it exists:
        where the visitor was (cursors), the last message's copy, and whether the visitor wrote
        there (which decides whether the peer may see the link and presence). Returns whether
        it was added."""
        peer, m = membership.peer, membership
        assert peer is not None, "a group membership is the group's to change"
        # only what the visitor's item held (a copy with no last_time stays out of the index)
        carried: dict[str, Any] = {"acked_seq": m.acked_seq, "read_seq": m.read_seq}
        carried.update({name: value for name, value in (
            ("last_seq", m.last_seq), ("last_time", m.last_time), ("preview", m.preview),
            ("last_sender", m.last_sender.key if m.last_sender else None), ("wrote", m.wrote or None),
            ("preview_image", m.preview_image or None), ("last_event", m.last_event)) if value})
        return self.join(member, m.conversation_id, peer, via_visitor=via_visitor.key, **carried)

    def conversations(self, member: Identity) -> list[Membership]:
        return [Membership.from_item(item) for item in self._query(member.key, _CONVERSATION)]

    def page(self, member: Identity, limit: int, after: tuple[int, str] | None = None,
             before_time: int | None = None) -> tuple[list[Membership], bool]:
        """Up to `limit` memberships, newest last message first, from the `by_last_time` index;
        `after` is the (last_time, conversation_id) of the last one of the previous page, or
        `before_time` starts at the newest with a last_time below it. Returns them and whether
        more may follow. Reads only this page, never the partition. The key is always the
        member's own partition, whatever `after` says."""
        query: dict[str, Any] = {
            "IndexName": BY_LAST_TIME, "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": member.key}, "ScanIndexForward": False, "Limit": limit,
        }
        if before_time is not None:
            query["KeyConditionExpression"] = "pk = :pk AND last_time < :t"
            query["ExpressionAttributeValues"][":t"] = before_time
        if after is not None:
            query["ExclusiveStartKey"] = {"pk": member.key, "sk": _CONVERSATION + after[1], "last_time": after[0]}
        answer = self._table.query(**query)
        items = [Membership.from_item(item) for item in answer["Items"] if item["sk"].startswith(_CONVERSATION)]
        return items, "LastEvaluatedKey" in answer

    def groups_of(self, member: Identity) -> list[Membership]:
        """The member's group memberships (at most GROUPS_PER_IDENTITY_LIMIT): not in the
        `by_last_time` index (nothing per member is written when a group message is stored),
        so the conversation list reads them all and merges them by their groups' heads."""
        return [Membership.from_item(item) for item in self._query(member.key, _CONVERSATION + "g_")]

    def writers(self, memberships: list[tuple[Identity, str]]) -> dict[tuple[Identity, str], Membership]:
        """Peer, writers and `blocked_by_peer` of up to 100 (member, conversation) pairs that
        exist, in one BatchGetItem."""
        by_key = {(m.key, _CONVERSATION + c): (m, c) for m, c in dict.fromkeys(memberships)}
        items = batch_get(self._table, [{"pk": pk, "sk": sk} for pk, sk in by_key],
                          projection="pk, sk, peer, writers, blocked_by_peer")
        return {by_key[(item["pk"], item["sk"])]: Membership.from_item(item) for item in items}

    def get(self, member: Identity, conversation_id: str, consistent: bool = True) -> Membership | None:
        """`consistent=False` reads half price and may answer an older state (or none, just after
        the membership was created)."""
        item = self._table.get_item(Key={"pk": member.key, "sk": _CONVERSATION + conversation_id},
                                    ConsistentRead=consistent).get("Item")
        return Membership.from_item(item) if item else None

    def cursors(self, memberships: Sequence[tuple[Identity, str]], settings_of: Sequence[Identity] = ()
                ) -> tuple[dict[tuple[Identity, str], Membership], dict[Identity, bool]]:
        """The cursors (`acked_seq`, `read_seq`, absent: 0) and privacy marks (`wrote`,
        `via_visitor`, `blocked`, `blocked_by_peer`, for logic/privacy.py) of (member, conversation) pairs, and the
        read-receipts setting of identities, read together: one BatchGetItem per 100 keys (one
        for a list page of up to 49 conversations with distinct peers, with the caller's setting)."""
        by_key: dict[tuple[str, str], tuple[Identity, str]] = {
            (m.key, _CONVERSATION + c): (m, c) for m, c in dict.fromkeys(memberships)}
        settings_keys = {(i.key, _SETTINGS): i for i in dict.fromkeys(settings_of)}
        keys = [{"pk": pk, "sk": sk} for pk, sk in [*by_key, *settings_keys]]
        items: list[dict[str, Any]] = []
        for start in range(0, len(keys), 100):
            items += batch_get(self._table, keys[start:start + 100],
                               projection="pk, sk, acked_seq, read_seq, read_receipts, wrote, via_visitor, "
                                          "blocked, blocked_by_peer")
        cursors: dict[tuple[Identity, str], Membership] = {}
        receipts = dict.fromkeys(settings_keys.values(), True)  # no settings item: the default, on
        for item in items:
            if item["sk"] == _SETTINGS:
                receipts[settings_keys[(item["pk"], item["sk"])]] = _receipts_on(item)
            else:
                cursors[by_key[(item["pk"], item["sk"])]] = Membership.from_item(item)
        return cursors, receipts

    def block(self, member: Identity, conversation_id: str, on: bool) -> Membership | None:
        """Block (`on`) or unblock the peer of `member`'s 1:1 conversation: `blocked` on the
        member's side and `blocked_by_peer` on the peer's, in one transaction, so the send's
        conditions and the privacy gate see both or neither (protocol.md §15). Idempotent.
        Returns the member's membership as it was before (its `peer` tells whose side was
        marked); None if the member has no such membership. Raises NotDirect for a group."""
        key = {"pk": member.key, "sk": _CONVERSATION + conversation_id}
        item = self._table.get_item(Key=key, ConsistentRead=True, ProjectionExpression="pk, sk, peer").get("Item")
        if item is None:
            return None
        membership = Membership.from_item(item)
        if membership.peer is None:
            raise NotDirect(conversation_id)
        own, theirs = ("SET blocked = :yes", "SET blocked_by_peer = :yes") if on else (
            "REMOVE blocked", "REMOVE blocked_by_peer")
        values = {":yes": True} if on else {}

        def update(pk: str, expression: str) -> dict[str, Any]:
            action: dict[str, Any] = {"TableName": self._table.name, "Key": {"pk": pk, "sk": key["sk"]},
                                      "UpdateExpression": expression, "ConditionExpression": "attribute_exists(pk)"}
            if values:
                action["ExpressionAttributeValues"] = values
            return {"Update": action}

        for _ in range(5):  # a send or an ack on either item at that moment: nothing written, again
            try:
                transact(self._table.meta.client, [("own", update(member.key, own)),
                                                   ("peer", update(membership.peer.key, theirs))])
                return membership
            except TransactionRefused as refused:
                if refused.failed("own"):
                    return None
                if refused.failed("peer"):  # the peer's side is missing: mark ours alone
                    self._table.update_item(Key=key, UpdateExpression=own, ConditionExpression="attribute_exists(pk)",
                                            **({"ExpressionAttributeValues": values} if values else {}))
                    return membership
                if not refused.conflict:
                    raise
        raise RuntimeError("the block's transaction met a conflict five times")

    def mark_told(self, member: Identity, conversation_id: str, seq: int) -> None:
        """Note on `member`'s membership that its peer has been told `delivered` up to `seq`
        (`told_seq`, never back), so the ack check and a repeated ack know whether that push
        still has to be made (a crash or an error between the ack's write and the push)."""
        update_if(self._table, {"pk": member.key, "sk": _CONVERSATION + conversation_id},
                  "SET told_seq = :n", "attribute_exists(pk) AND (attribute_not_exists(told_seq) OR told_seq < :n)",
                  {":n": seq}, new=False)

    def touch_typing(self, member: Identity, conversation_id: str, now_ms: int, interval_ms: int
                     ) -> Membership | None:
        """Note that `member` is typing here, at most once per interval: one conditional write
        proves the membership and limits the rate (protocol.md §14.2). Returns the membership;
        None if `member` is not in the conversation; raises TypingTooSoon inside the interval
        (told apart by the item the failed condition returns: none means no membership)."""
        item = update_if(self._table, {"pk": member.key, "sk": _CONVERSATION + conversation_id},
                         "SET typing_at = :now",
                         "attribute_exists(pk) AND (attribute_not_exists(typing_at) OR typing_at <= :cut)",
                         {":now": now_ms, ":cut": now_ms - interval_ms})
        if isinstance(item, Refused):
            if not item.current:
                return None
            raise TypingTooSoon()
        return Membership.from_item(item)

    def read_receipts(self, identities: list[Identity]) -> dict[Identity, bool]:
        """Whether each identity sends and gets read receipts, in one BatchGetItem (at most 100)."""
        return self.cursors([], identities)[1]

    def settings(self, member: Identity, read_receipts: bool | None = None) -> Settings:
        """The member's settings, after setting `read_receipts` when given (one write, which
        answers the whole item; else one consistent read)."""
        key = {"pk": member.key, "sk": _SETTINGS}
        if read_receipts is None:
            item = self._table.get_item(Key=key, ConsistentRead=True).get("Item") or {}
        else:
            item = self._table.update_item(Key=key, UpdateExpression="SET read_receipts = :r",
                                           ExpressionAttributeValues={":r": read_receipts},
                                           ReturnValues="ALL_NEW")["Attributes"]
        return Settings.from_item(item)

    def advance(self, member: Identity, conversation_id: str, cursor: Cursor, seq: int, bounded: bool = True
                ) -> tuple[Membership, bool] | None:
        """Move a member's `acked_seq` or `read_seq` forward to `seq` (never back).

        Returns (membership as it is now, whether it moved); None if the member is not in the
        conversation. A cursor already at or past `seq` is left alone (a repeated or late
        ack); a `seq` past the conversation's last message moves nothing. `bounded=False`: a
        group membership, which has no `last_seq` (the caller checked `seq` against the head).
        """
        # never past the last message: an ack beyond it would skip messages not yet sent
        bound = "last_seq >= :n AND " if bounded else ""
        item = update_if(self._table, {"pk": member.key, "sk": _CONVERSATION + conversation_id},
                         f"SET {cursor.value} = :n", f"attribute_exists(pk) AND {bound}{cursor.value} < :n",
                         {":n": seq})
        if isinstance(item, Refused):
            if not item.current:
                return None
            return Membership.from_item(item.current), False
        return Membership.from_item(item), True

    def mark_peer_linked(self, member: Identity, conversation_id: str, user: Identity) -> None:
        """Note on a member's side that their peer (a visitor) is now known as `user`."""
        self._table.update_item(
            Key={"pk": member.key, "sk": _CONVERSATION + conversation_id},
            UpdateExpression="SET peer_linked_user = :u",
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeValues={":u": user.key},
        )

    def link(self, visitor: Identity, user: Identity) -> None:
        """Record visitor -> user, idempotently; a visitor already linked elsewhere is refused."""
        try:
            transact(self._table.meta.client, [  # the resource's client: plain Python values
                ("link", {"Put": {
                    "TableName": self._table.name,
                    "Item": {"pk": visitor.key, "sk": _LINK, "user": user.key},
                    "ConditionExpression": "attribute_not_exists(pk) OR #u = :u",
                    "ExpressionAttributeNames": {"#u": "user"},
                    "ExpressionAttributeValues": {":u": user.key},
                }}),
                ("back link", {"Put": {
                    "TableName": self._table.name,
                    "Item": {"pk": user.key, "sk": _LINK + visitor.key},
                }}),
            ])
        except TransactionRefused as refused:
            if refused.failed("link"):
                raise AlreadyLinkedError("this visitor is already linked to another user") from None
            raise

    def linked_user(self, visitor: Identity) -> Identity | None:
        item = self._table.get_item(Key={"pk": visitor.key, "sk": _LINK}).get("Item")
        return Identity.from_key(item["user"]) if item else None

    def linked_visitors(self, user: Identity) -> list[Identity]:
        return [Identity.from_key(item["sk"][len(_LINK):]) for item in self._query(user.key, _LINK)
                if item["sk"] != _LINK]

    def _query(self, pk: str, prefix: str) -> list[dict[str, Any]]:
        return query_all(self._table, KeyConditionExpression="pk = :pk AND begins_with(sk, :prefix)",
                         ExpressionAttributeValues={":pk": pk, ":prefix": prefix})
