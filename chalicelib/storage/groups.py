"""Groups: the group's head and roster, and the transactions that change its membership.

Items (docs/architecture.md, "Groups"):
    messages table  pk=g_<id>        sk=0    the head (GroupHead): last_seq, last_time,
                                             last_sender, preview, preview_image (as 1:1),
                                             last_event + kind="group", title, owner,
                                             members_count, created_at
                    pk=g_<id>        sk=<n>  message n (storage/messages.py `Message`); an event
                                             message has text "" and `event` (the frame's
                                             `event` object, identities as JSON)
                    pk=I#<actor>#<id> sk=0   idempotency (IdempotencyRecord; storage/messages.py
                                             `idempotency_key`): conversation_id, seq, and for a
                                             change its `answer`, expires_at
    members table   pk=<identity>    sk=C#g_<id>  membership (storage/members.py `Membership`):
                                                  group, role, joined_seq, acked_seq, read_seq (no
                                                  peer, no last_time: not in the by_last_time
                                                  index; the last seq is the head's)
                    pk=G#g_<id>      sk=<identity> roster (RosterEntry): role, joined_seq (one
                                                  Query lists the members in identity order, paged)
                    pk=<identity>    sk=G#         how many groups the identity is in (`n`; only
                                                  written here, by the transactions' conditions)
                    pk=<identity>    sk=X#g_<id>  a group it left or was removed from (`left_seq`,
                                                  `left_time`; no `last_time`, so not in the
                                                  by_last_time index): written with the leave, so
                                                  an export or an erasure finds the messages it
                                                  wrote there (storage/erasure.py); kept on rejoin
    pk=<identity>    sk=C#d_<id>   a 1:1 membership (storage/members.py): `wrote` there is the
                                   consent to be added to a group by that peer (`wrote`)

Keys never meet: identity keys start `user:`/`visitor:`, so no identity partition is `G#...`;
in an identity's partition `G#` is the one count item, beside `C#...` memberships, `X#...`
groups left and `L#...` links; a roster's sort key is one whole identity key.

Every change is one TransactWriteItems: the head moves from the seq read to the next one
(`last_seq = :prev`, the same gap-free condition as a send), the event message and the
idempotency record are put, and the affected memberships, roster items and counts are written
with conditions, so a change that raced another is cancelled whole and retried on fresh reads.
Each item is named (`head`, `actor`, `join:<identity>`, `join-roster:`, `join-count:`,
`leave:`/`leave-roster:`/`leave-count:`/`left:`, `role:`/`role-roster:`, `event`, `idempotency`,
`counter`) and a refusal is read by those names (storage/dynamo.py `transact`), never by position.
"""
from __future__ import annotations

import base64
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from chalicelib.principal import Identity
from chalicelib.storage.dynamo import CONFLICT, FAILED, TransactionRefused, batch_get, transact
from chalicelib.storage.media import StoredImage
from chalicelib.storage.members import Membership
from chalicelib.storage.messages import IDEMPOTENCY_SECONDS, Message, idempotency_key, message_expiry
from chalicelib.storage.rate_limits import LimitExceeded, Window, window_update

GROUP_PREFIX = "g_"
HEAD = 0
ROSTER = "G#"  # + group id: the roster partition
COUNT = "G#"  # sort key of an identity's group count
CONVERSATION = "C#"
LEFT = "X#"  # + group id: a group the identity left (the sort key in its partition)
BATCH = 100  # BatchGetItem's most keys per call
Named = tuple[str, dict[str, Any]]  # a transaction's item and its name (storage/dynamo.transact)
JOIN_COUNT = "join-count:"  # + identity key: the name of a joining identity's count in a change
_NAMES = {"#role": "role"}


def is_group_id(conversation_id: str) -> bool:
    """A group's conversation id starts with `g_` (a 1:1 id with `d_`)."""
    return conversation_id.startswith(GROUP_PREFIX)


def encode_roster_cursor(member_key: str) -> str:
    """The opaque cursor of `group_members` / `receipts`: the last identity of a page."""
    return base64.urlsafe_b64encode(member_key.encode()).decode().rstrip("=")


def decode_roster_cursor(cursor: str) -> str | None:
    """The identity key a cursor names, or None when it is not one of ours."""
    try:
        key = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        Identity.from_key(key)
    except (ValueError, UnicodeDecodeError):
        return None
    return key


@dataclass(frozen=True)
class GroupHead:
    """A group's head item (sk=0): the group's fields and its last message's preview."""

    conversation_id: str
    last_seq: int = 0
    last_time: int = 0
    last_sender: Identity | None = None
    preview: str = ""
    preview_image: bool = False  # the last message is a photo (protocol.md §14.1)
    last_event: dict[str, Any] | None = None  # the last message is this membership change
    title: str = ""
    owner: Identity | None = None
    members_count: int = 0  # (the item's created_at is written, never read)

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> GroupHead:
        sender, owner = item.get("last_sender"), item.get("owner")
        return cls(
            conversation_id=str(item["pk"]), last_seq=int(item.get("last_seq", 0)),
            last_time=int(item.get("last_time", 0)),
            last_sender=Identity.from_key(sender) if sender else None, preview=str(item.get("preview", "")),
            preview_image=bool(item.get("preview_image")),
            last_event=_ints(item["last_event"]) if item.get("last_event") else None,
            title=str(item.get("title", "")), owner=Identity.from_key(owner) if owner else None,
            members_count=int(item.get("members_count", 0)),
        )


@dataclass(frozen=True)
class RosterEntry:
    """One member on a group's roster (pk=G#<group>, sk=<identity>)."""

    member: Identity
    role: str
    joined_seq: int

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> RosterEntry:
        return cls(Identity.from_key(item["sk"]), str(item["role"]), int(item["joined_seq"]))


@dataclass(frozen=True)
class IdempotencyRecord:
    """What an actor's frame id became: `seq` of `conversation_id`; a group change also keeps
    its `answer` (None: the id was used by a `send`)."""

    conversation_id: str
    seq: int
    answer: dict[str, Any] | None = None

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> IdempotencyRecord:
        answer = item.get("answer")
        return cls(str(item["conversation_id"]), int(item["seq"]), _ints(answer) if answer is not None else None)


class GroupConflict(Exception):
    """The group (a head, a membership, a count) changed since it was read: read again, retry."""


class DuplicateChange(Exception):
    """The actor's frame id was stored before: `record` is its idempotency item."""

    def __init__(self, record: IdempotencyRecord) -> None:
        super().__init__(f"already stored as {record.conversation_id}/{record.seq}")
        self.record = record


class TooManyGroups(Exception):
    """Joining would take `identity` past its groups-per-identity limit: nothing was stored."""

    def __init__(self, identity: Identity) -> None:
        super().__init__(f"{identity.key} is in too many groups")
        self.identity = identity


@dataclass(frozen=True)
class EventMessage:
    """A membership change as a message of the group's seq (text "" and `event`)."""

    group_id: str
    seq: int
    actor: Identity
    client_id: str
    time_ms: int
    event: dict[str, Any]

    @property
    def removed(self) -> Identity | None:
        """The member a `removed` event names (None for any other event)."""
        if self.event.get("type") != "removed":
            return None
        member = self.event["member"]
        return Identity(member["kind"], member["id"])

    def to_frame(self) -> dict[str, Any]:
        return {"type": "message", "conversation_id": self.group_id, "seq": self.seq,
                "from": self.actor.to_json(), "text": "", "time": self.time_ms,
                "client_id": self.client_id, "event": self.event}


@dataclass(frozen=True)
class Change:
    """What one group change writes besides the head, the event and the idempotency record.

    `joins`: (identity, role) added at the event's seq. `leaves`: (identity, role it has now)
    removed. `roles`: (identity, role now, new role). `actor_roles`: the roles the actor must
    hold (checked on its membership, which also gets read_seq = the event: it saw its own
    change) unless the actor is itself in `leaves` or `roles`, whose conditions check it.
    `title`, `owner`: set on the head when given."""

    actor_roles: tuple[str, ...]
    joins: list[tuple[Identity, str]] = field(default_factory=list)
    leaves: list[tuple[Identity, str]] = field(default_factory=list)
    roles: list[tuple[Identity, str, str]] = field(default_factory=list)
    title: str | None = None
    owner: Identity | None = None

    def head(self) -> dict[str, Any]:
        """The head's attributes this change sets besides its last message."""
        return {**({"title": self.title} if self.title is not None else {}),
                **({"owner": self.owner.key} if self.owner is not None else {})}


class GroupsStore:
    def __init__(self, messages: Any, members: Any, retention_seconds: int = 0) -> None:
        self._messages = messages  # boto3 Table resources
        self._members = members
        self._retention = retention_seconds  # >0: event messages expire (TTL) as messages do

    # -- reads -------------------------------------------------------------------------------
    def head(self, group_id: str, consistent: bool = True) -> GroupHead | None:
        item = self._messages.get_item(Key={"pk": group_id, "sk": HEAD}, ConsistentRead=consistent).get("Item")
        return GroupHead.from_item(item) if item else None

    def heads(self, group_ids: list[str]) -> dict[str, GroupHead]:
        """The heads of these groups (eventually consistent), BatchGetItem 100 at a time."""
        wanted = list(dict.fromkeys(group_ids))
        found: dict[str, GroupHead] = {}
        for start in range(0, len(wanted), BATCH):
            keys = [{"pk": g, "sk": HEAD} for g in wanted[start:start + BATCH]]
            for item in batch_get(self._messages, keys):
                found[item["pk"]] = GroupHead.from_item(item)
        return found

    def membership(self, member: Identity, group_id: str) -> Membership | None:
        """The member's group membership (role, joined_seq, cursors), strongly consistent."""
        item = self._members.get_item(Key={"pk": member.key, "sk": CONVERSATION + group_id},
                                      ConsistentRead=True).get("Item")
        return Membership.from_item(item) if item and item.get("group") else None

    def memberships(self, members: list[Identity], group_id: str) -> dict[str, Membership]:
        """Memberships of these identities in the group, by identity key (absent: not a member);
        BatchGetItem 100 at a time, strongly consistent."""
        wanted = list(dict.fromkeys(m.key for m in members))
        found: dict[str, Membership] = {}
        for start in range(0, len(wanted), BATCH):
            keys = [{"pk": k, "sk": CONVERSATION + group_id} for k in wanted[start:start + BATCH]]
            for item in batch_get(self._members, keys, consistent=True):
                if item.get("group"):
                    found[item["pk"]] = Membership.from_item(item)
        return found

    def wrote(self, memberships: list[tuple[Identity, str]]) -> set[str]:
        """Which of these (identity, 1:1 conversation) memberships carry the send transaction's
        `wrote` mark (the identity has itself sent a message there) and no `blocked` (it has not
        blocked the peer there): their identity keys. One
        consistent BatchGetItem per 100, projected to the keys and the mark. An identity that
        never wrote there, or does not exist at all, is simply absent."""
        wanted = list(dict.fromkeys((m.key, CONVERSATION + c) for m, c in memberships))
        found: set[str] = set()
        for start in range(0, len(wanted), BATCH):
            keys = [{"pk": pk, "sk": sk} for pk, sk in wanted[start:start + BATCH]]
            for item in batch_get(self._members, keys, projection="pk, sk, wrote, blocked", consistent=True):
                # a member that blocked its peer there (protocol.md §15) counts as never having
                # written: the peer cannot add it to a group (the same `cannot_add` as a stranger)
                if item.get("wrote") is True and item.get("blocked") is not True:
                    found.add(str(item["pk"]))
        return found

    def roster_page(self, group_id: str, after: str | None, limit: int) -> tuple[list[RosterEntry], str | None]:
        """Up to `limit` members after identity key `after`, in identity order (one consistent
        Query); returns them and the next `after`, or None when this was the last page."""
        query: dict[str, Any] = {
            "KeyConditionExpression": "pk = :pk", "ExpressionAttributeValues": {":pk": ROSTER + group_id},
            "Limit": limit + 1, "ConsistentRead": True,
        }
        if after is not None:
            query["ExclusiveStartKey"] = {"pk": ROSTER + group_id, "sk": after}
        items = self._members.query(**query)["Items"]
        page = [RosterEntry.from_item(i) for i in items[:limit]]
        return page, (str(items[limit - 1]["sk"]) if len(items) > limit else None)

    def roster(self, group_id: str) -> list[RosterEntry]:
        """Every member, in identity order (one Query per 100)."""
        members: list[RosterEntry] = []
        after: str | None = None
        while True:
            page, after = self.roster_page(group_id, after, BATCH)
            members.extend(page)
            if after is None:
                return members

    def message(self, group_id: str, seq: int) -> Message | None:
        """Message `seq` of the group (an event message or a sent one), strongly consistent."""
        item = self._messages.get_item(Key={"pk": group_id, "sk": seq}, ConsistentRead=True).get("Item")
        if not item:
            return None
        return Message(conversation_id=group_id, seq=seq, sender=Identity.from_key(item["sender"]),
                       text=str(item.get("text", "")), time_ms=int(item["time"]), client_id=str(item["client_id"]),
                       event=_ints(item["event"]) if item.get("event") else None,
                       image=StoredImage.from_item(item["image"]) if "image" in item else None)

    def idempotent(self, actor: Identity, client_id: str) -> IdempotencyRecord | None:
        """The record of an earlier frame of `actor` with this id, if any (strongly consistent)."""
        item = self._messages.get_item(Key={"pk": idempotency_key(actor, client_id), "sk": HEAD},
                                       ConsistentRead=True).get("Item")
        return IdempotencyRecord.from_item(item) if item else None

    # -- changes -----------------------------------------------------------------------------
    def create(self, event: EventMessage, title: str, members: list[Identity], answer: dict[str, Any],
               groups_limit: int, counter: Window | None = None) -> None:
        """A new group with `members[0]` as owner and the rest as members, event `created` as
        seq 1. Raises GroupConflict (the id is taken: pick another), DuplicateChange,
        TooManyGroups, LimitExceeded; nothing is stored then."""
        owner = members[0]
        items: list[Named] = [
            ("head", {"Put": {"TableName": self._messages.name, "ConditionExpression": "attribute_not_exists(pk)",
                              "Item": {
                "pk": event.group_id, "sk": HEAD, "last_seq": 1, "last_time": event.time_ms,
                "last_sender": owner.key, "preview": "", "last_event": event.event, "kind": "group", "title": title,
                "owner": owner.key, "members_count": len(members), "created_at": event.time_ms}}}),
        ]
        for i, member in enumerate(members):
            items.extend(self._join(event, member, "owner" if i == 0 else "member", groups_limit))
        self._commit(items, event, answer, counter)

    def change(self, event: EventMessage, prev_seq: int, change: Change, answer: dict[str, Any],
               groups_limit: int, counter: Window | None = None) -> None:
        """Store a change of an existing group as its event `prev_seq + 1`. Raises GroupConflict
        (anything read before changed: read again), DuplicateChange, TooManyGroups (of a
        joining identity), LimitExceeded; nothing is stored then."""
        assert event.seq == prev_seq + 1
        items: list[Named] = [("head", {"Update": self._head_update(event, prev_seq, change)})]
        touched = {who.key for who, _ in change.leaves} | {who.key for who, _, _ in change.roles}
        if event.actor.key not in touched:
            roles = {f":r{i}": role for i, role in enumerate(change.actor_roles)}
            items.append(("actor", {"Update": {
                "TableName": self._members.name, "Key": _membership_key(event.actor, event.group_id),
                "UpdateExpression": "SET read_seq = :n",
                "ConditionExpression": f"#role IN ({', '.join(roles)})",
                "ExpressionAttributeNames": _NAMES, "ExpressionAttributeValues": {":n": event.seq, **roles},
            }}))
        for who, role in change.leaves:
            items.extend(self._leave(event, who, role))
        for who, old, new in change.roles:
            items.extend(self._set_role(event, who, old, new))
        for who, role in change.joins:
            items.extend(self._join(event, who, role, groups_limit))
        self._commit(items, event, answer, counter)

    def _head_update(self, event: EventMessage, prev_seq: int, change: Change) -> dict[str, Any]:
        """The head moves from `prev_seq` to the event (the gap-free condition of a send)."""
        sets = ["last_seq = :n", "last_time = :t", "last_sender = :s", "preview = :p", "last_event = :e",
                "members_count = members_count + :d"]
        names: dict[str, str] = {}
        values: dict[str, Any] = {":n": event.seq, ":t": event.time_ms, ":s": event.actor.key, ":p": "",
                                  ":e": event.event, ":d": len(change.joins) - len(change.leaves), ":prev": prev_seq}
        for i, (name, value) in enumerate(sorted(change.head().items())):
            sets.append(f"#h{i} = :h{i}")
            names[f"#h{i}"], values[f":h{i}"] = name, value
        update: dict[str, Any] = {
            "TableName": self._messages.name, "Key": {"pk": event.group_id, "sk": HEAD},
            "UpdateExpression": "SET " + ", ".join(sets), "ConditionExpression": "last_seq = :prev",
            "ExpressionAttributeValues": values,
        }
        if names:
            update["ExpressionAttributeNames"] = names
        return update

    def _commit(self, items: list[Named], event: EventMessage, answer: dict[str, Any],
                counter: Window | None) -> None:
        """Add the event message, the idempotency record and the rate window to `items` (the
        head and the memberships, named) and write them in one transaction."""
        m = self._messages.name
        items = [
            *items,
            ("event", {"Put": {"TableName": m, "ConditionExpression": "attribute_not_exists(pk)", "Item": {
                "pk": event.group_id, "sk": event.seq, "sender": event.actor.key, "text": "",
                "time": event.time_ms, "client_id": event.client_id, "event": event.event,
                **message_expiry(event.time_ms, self._retention)}}}),
            ("idempotency", {"Put": {"TableName": m, "ConditionExpression": "attribute_not_exists(pk)",
                                     "ReturnValuesOnConditionCheckFailure": "ALL_OLD", "Item": {
                                         "pk": idempotency_key(event.actor, event.client_id), "sk": HEAD,
                                         "conversation_id": event.group_id, "seq": event.seq, "answer": answer,
                                         "expires_at": event.time_ms // 1000 + IDEMPOTENCY_SECONDS}}}),
            *([("counter", window_update(m, counter))] if counter is not None else []),
        ]
        assert len(items) <= 100, "a transaction holds at most 100 items"
        try:
            transact(self._messages.meta.client, items)
        except TransactionRefused as refused:
            raise _refusal(refused, counter) from None

    def _join(self, event: EventMessage, who: Identity, role: str, groups_limit: int) -> list[Named]:
        """Membership and roster put (neither may exist yet) and the count taken (its name
        tells who is in too many groups). The actor has read its own event."""
        n = event.seq
        read = n if who == event.actor else n - 1
        return [
            (f"join:{who.key}", {"Put": {
                "TableName": self._members.name, "ConditionExpression": "attribute_not_exists(pk)", "Item": {
                    **_membership_key(who, event.group_id), "group": True, "role": role, "joined_seq": n,
                    "acked_seq": n - 1, "read_seq": read}}}),
            (f"join-roster:{who.key}", {"Put": {
                "TableName": self._members.name, "ConditionExpression": "attribute_not_exists(pk)", "Item": {
                    "pk": ROSTER + event.group_id, "sk": who.key, "role": role, "joined_seq": n}}}),
            (JOIN_COUNT + who.key, {"Update": {
                "TableName": self._members.name, "Key": {"pk": who.key, "sk": COUNT},
                "UpdateExpression": "ADD n :one", "ConditionExpression": "attribute_not_exists(n) OR n < :limit",
                "ExpressionAttributeValues": {":one": 1, ":limit": groups_limit}}}),
        ]

    def _leave(self, event: EventMessage, who: Identity, role: str) -> list[Named]:
        """Membership and roster deleted (the membership must still have `role`), count down,
        the group marked as left (put whole: a second leave after a rejoin moves it on)."""
        group_id = event.group_id
        return [
            (f"leave:{who.key}", {"Delete": {
                "TableName": self._members.name, "Key": _membership_key(who, group_id),
                "ConditionExpression": "#role = :r", "ExpressionAttributeNames": _NAMES,
                "ExpressionAttributeValues": {":r": role}}}),
            (f"leave-roster:{who.key}", {"Delete": {
                "TableName": self._members.name, "Key": {"pk": ROSTER + group_id, "sk": who.key},
                "ConditionExpression": "attribute_exists(pk)"}}),
            (f"leave-count:{who.key}", {"Update": {
                "TableName": self._members.name, "Key": {"pk": who.key, "sk": COUNT},
                "UpdateExpression": "ADD n :minus", "ConditionExpression": "attribute_exists(n)",
                "ExpressionAttributeValues": {":minus": -1}}}),
            (f"left:{who.key}", {"Put": {"TableName": self._members.name, "Item": {
                "pk": who.key, "sk": LEFT + group_id, "left_seq": event.seq, "left_time": event.time_ms}}}),
        ]

    def _set_role(self, event: EventMessage, who: Identity, old: str, new: str) -> list[Named]:
        own = who == event.actor  # the owner handing on: it has seen its own change
        values: dict[str, Any] = {":old": old, ":new": new, **({":n": event.seq} if own else {})}
        return [
            (f"role:{who.key}", {"Update": {
                "TableName": self._members.name, "Key": _membership_key(who, event.group_id),
                "UpdateExpression": "SET #role = :new" + (", read_seq = :n" if own else ""),
                "ConditionExpression": "#role = :old", "ExpressionAttributeNames": _NAMES,
                "ExpressionAttributeValues": values}}),
            (f"role-roster:{who.key}", {"Update": {
                "TableName": self._members.name, "Key": {"pk": ROSTER + event.group_id, "sk": who.key},
                "UpdateExpression": "SET #role = :new", "ConditionExpression": "attribute_exists(pk)",
                "ExpressionAttributeNames": _NAMES, "ExpressionAttributeValues": {":new": new}}}),
        ]


def _refusal(refused: TransactionRefused, counter: Window | None) -> Exception:
    """What a change's refused transaction means, checked in this order: the frame id was
    used before; the rate window is full; the group is as read (its head passed) but a joining
    identity's count refused; something read before changed (retry on fresh reads)."""
    if refused.failed("idempotency"):
        return DuplicateChange(IdempotencyRecord.from_item(refused.seen("idempotency")))
    if counter is not None and refused.failed("counter"):
        return LimitExceeded(counter)
    if not refused.failed("head"):
        counts = [name for name in refused.failed_names if name.startswith(JOIN_COUNT)]
        if counts:
            return TooManyGroups(Identity.from_key(counts[0][len(JOIN_COUNT):]))
    if refused.only(FAILED, CONFLICT):
        return GroupConflict()
    return refused


def _membership_key(member: Identity, group_id: str) -> dict[str, str]:
    return {"pk": member.key, "sk": CONVERSATION + group_id}


def member_keys(member: Identity, group_id: str) -> dict[str, dict[str, str]]:
    """The members-table keys a member of a group has: its membership, its roster item and its
    group count (tests hold them unambiguous against every other key)."""
    return {"membership": _membership_key(member, group_id),
            "roster": {"pk": ROSTER + group_id, "sk": member.key},
            "count": {"pk": member.key, "sk": COUNT},
            "left": {"pk": member.key, "sk": LEFT + group_id}}


def _ints(value: Any) -> Any:
    """DynamoDB numbers (Decimal) as ints, through maps and lists (seqs, times, counts)."""
    if isinstance(value, Decimal):
        return int(value)
    if isinstance(value, dict):
        return {k: _ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_ints(v) for v in value]
    return value
