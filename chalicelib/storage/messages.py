"""The messages table: one gap-free message log per conversation.

Items:
    pk=<conversation_id>        sk=0     the head: last_seq and a preview of the last message
    pk=<conversation_id>        sk=<n>   message n (1, 2, 3 ...)
    pk=I#<sender>#<client_id>   sk=0     idempotency: which seq a client message id became
                                         (`#` and backslash in <sender> escaped: `_idempotency_key`)
    pk=R#<scope>:<subject>      sk=<t>   rate-limit counters (storage/rate_limits.py)

`append` writes message n, moves the head from n-1 to n, records the idempotency key and
upserts both members' cursors, in one TransactWriteItems. The head's condition makes seq n+1
exist only if n does, under any number of concurrent senders; the idempotency item makes a
repeated send store nothing new. `append_group` does the same for a group (`g_`) with the
sender's own membership in place of both members' cursors: its size never depends on the
group's (docs/protocol.md §13; storage/groups.py holds the group's head fields and roster).

`delete` (protocol.md §16) stores a `deleted` event as the next seq, with the same head
condition and member writes, and in the same transaction blanks the original item (text "", no
image, `deleted`, `tombstone_seq`, `deleted_time`, `purge_key`: the photo's object to remove)
under `attribute_not_exists(deleted)`: every later read (history, sync, a retransmission)
returns the tombstone only.

A message item crosses this module's boundary as a `Message` (field <- attribute):
conversation_id <- pk, seq <- sk, sender <- sender (an identity key), text <- text,
time_ms <- time, client_id <- client_id, event <- event (a group's event message), image <-
image (a photo: storage/media.py `StoredImage`). The head's last seq crosses as an int
(`last_seq`); a refused append as SeqConflict (the head's last_seq), DuplicateSend (the
idempotency record's conversation_id and seq), NotGroupMember or LimitExceeded.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chalicelib.principal import Identity
from chalicelib.storage.dynamo import TransactionRefused, int_numbers, transact
from chalicelib.storage.media import StoredImage
from chalicelib.storage.rate_limits import LimitExceeded, Window, window_update

HEAD = 0
PREVIEW_CHARS = 200
IDEMPOTENCY_SECONDS = 7 * 24 * 3600


@dataclass(frozen=True)
class Message:
    conversation_id: str
    seq: int
    sender: Identity
    text: str
    time_ms: int
    client_id: str
    event: dict[str, Any] | None = None  # a group's event message (text ""; protocol.md §13.3)
    # a photo (protocol.md §14.1): key, content_type, size, width, height, preview (optional)
    image: StoredImage | None = None
    # deleted for everyone (protocol.md §16): text "" and no image; `tombstone_seq` is the seq of
    # the `deleted` event that says so, `purge_key` the photo's object the delete removes
    deleted: bool = False
    tombstone_seq: int = 0
    deleted_time_ms: int = 0
    purge_key: str | None = None

    def to_frame(self) -> dict[str, Any]:
        """msg:N, the message as the receiver (and every later pull) sees it. A photo's `image`
        (a signed URL, never the key) is added by logic/messaging.py, which can sign."""
        frame: dict[str, Any] = {
            "type": "message",
            "conversation_id": self.conversation_id,
            "seq": self.seq,
            "from": self.sender.to_json(),
            "text": self.text,
            "time": self.time_ms,
            "client_id": self.client_id,
        }
        if self.event is not None:
            frame["event"] = self.event
        if self.deleted:
            frame["deleted"] = True
        return frame


class SeqConflict(Exception):
    """Another message took the seq we tried; `actual` is the head's last seq now."""

    def __init__(self, actual: int) -> None:
        super().__init__(f"head is at {actual}")
        self.actual = actual


class DuplicateSend(Exception):
    """This client message id was stored before, as `seq` of `conversation_id`."""

    def __init__(self, conversation_id: str, seq: int) -> None:
        super().__init__(f"already stored as {conversation_id}/{seq}")
        self.conversation_id = conversation_id
        self.seq = seq


class SenderBlocked(Exception):
    """The sender's side of the 1:1 carries `blocked` (it blocked the peer): nothing stored."""


class ReceiverBlocked(Exception):
    """A receiver's side carries `blocked` (it blocked the sender): nothing stored."""


class NotGroupMember(Exception):
    """The sender has no membership in this group (never had, or was removed): nothing stored."""


class AlreadyDeleted(Exception):
    """The message was deleted before (protocol.md §16): `original` is its tombstoned item."""

    def __init__(self, original: Message) -> None:
        super().__init__(f"{original.conversation_id}/{original.seq} deleted at {original.tombstone_seq}")
        self.original = original


class MessageMissing(Exception):
    """No message item at that seq: nothing stored."""


class DeleterChanged(Exception):
    """The deleter's group membership no longer allows the delete (removed, or its role
    changed since it was read): nothing stored; read again."""


class MessagesTable:
    def __init__(self, table: Any, members_table_name: str, retention_seconds: int = 0) -> None:
        self._table = table  # a boto3 DynamoDB Table resource
        self._members = members_table_name
        self._retention = retention_seconds  # >0: each message item expires (TTL) this long after its time

    def append(self, message: Message, receivers: list[Identity], expected_last: int,
               counter: Window | None = None) -> None:
        """Store `message` as seq `expected_last + 1` (== message.seq) in one transaction.

        Raises SeqConflict when the head is not at `expected_last`, DuplicateSend when the
        sender's client id was used before. Also upserts every member's cursor: the sender has
        read up to here; each receiver (the peer, and the user a visitor peer became) has a
        membership that knows the last seq. `counter` (the sender's send-rate window) is
        counted in the same transaction: LimitExceeded when it is full, and nothing is stored.
        A block (protocol.md §15) is a condition of the same writes: SenderBlocked when the
        sender's side carries `blocked`, ReceiverBlocked when a receiver's does; a block and a
        send racing are ordered by DynamoDB, never both half done.
        """
        assert message.seq == expected_last + 1
        conv, name = message.conversation_id, self._table.name
        if expected_last == 0:
            head = _head_update(name, message, "attribute_not_exists(pk)", {})
        else:
            head = _head_update(name, message, "last_seq = :prev", {":prev": expected_last})
        items = [
            ("head", head),
            ("message", _message_put(name, message, self._retention)),
            ("idempotency", _idempotency_put(name, message)),
            ("sender", _member_upsert(self._members, message.sender, conv, receivers[0], message, own=True)),
            *((f"receiver {r.key}", _member_upsert(self._members, r, conv, message.sender, message, own=False))
              for r in receivers),
            *([("counter", window_update(name, counter))] if counter is not None else []),
        ]
        try:
            transact(self._table.meta.client, items)
        except TransactionRefused as refused:
            if (meaning := _send_refusal(refused, counter)) is not None:
                raise meaning from None
            if refused.failed("sender"):
                raise SenderBlocked(conv) from None
            if any(refused.failed(f"receiver {r.key}") for r in receivers):
                raise ReceiverBlocked(conv) from None
            if refused.conflict and not refused.failed_names:
                # an item was busy at that moment (the sender's other send on the counter, a
                # block or an ack on a membership): nothing was written, try the same seq again
                raise SeqConflict(expected_last) from None
            raise

    def append_group(self, message: Message, expected_last: int, counter: Window | None = None) -> None:
        """Store a group message as seq `expected_last + 1` in one transaction whose size does
        not depend on the group's: head, message, idempotency, the sender's own membership and
        the rate window. Nothing per member: previews and unread counts are derived from the
        head at read time.

        The membership update (attribute_exists; the sender has read what it sent) is what
        proves the sender is a member, in the same transaction: a removal committed first makes
        it fail (NotGroupMember) and nothing is stored; one committed after finds the message
        stored while the sender was a member. Raises SeqConflict, DuplicateSend and
        LimitExceeded as `append` does.
        """
        assert message.seq == expected_last + 1
        conv, name = message.conversation_id, self._table.name
        items = [
            ("head", _head_update(name, message, "last_seq = :prev", {":prev": expected_last}, group=True)),
            ("message", _message_put(name, message, self._retention)),
            ("idempotency", _idempotency_put(name, message)),
            ("sender", {"Update": {
                "TableName": self._members,
                "Key": {"pk": message.sender.key, "sk": "C#" + conv},
                # `wrote`: from now on the group may be told of this member's acks and reads
                # (logic/privacy.py); before, a visitor put in a group shows nothing
                "UpdateExpression": "SET read_seq = :n, wrote = :wrote",
                "ConditionExpression": "attribute_exists(pk)",
                "ExpressionAttributeValues": {":n": message.seq, ":wrote": True},
            }}),
            *([("counter", window_update(name, counter))] if counter is not None else []),
        ]
        try:
            transact(self._table.meta.client, items)
        except TransactionRefused as refused:
            if refused.failed("sender") and not refused.failed("idempotency"):
                raise NotGroupMember(conv) from None  # before the head: a removed sender never retries
            if (meaning := _send_refusal(refused, counter)) is not None:
                raise meaning from None
            if refused.conflict:
                # an item was busy at that moment (another sender's transaction on the head,
                # an ack from the sender's other device on its membership, its rate counter):
                # nothing was written, try the same seq again (a taken seq then shows as such)
                raise SeqConflict(expected_last) from None
            raise

    def delete(self, original: Message, tombstone: Message, expected_last: int, receivers: list[Identity],
               manager_roles: tuple[str, ...] | None, counter: Window | None = None) -> None:
        """Delete `original` for everyone (protocol.md §16) in one transaction: `tombstone` (the
        `deleted` event, text "") is stored as seq `expected_last + 1` under the head's gap-free
        condition, and the original item loses its text and image and gets `deleted` under
        `attribute_not_exists(deleted)`, so of two racing deletes exactly one stores a tombstone.
        A 1:1 moves both members' cursors as a send does (its block conditions too); a group
        checks the deleter's membership (`manager_roles`: its role must be one of them; None:
        it must only still be a member).

        Raises AlreadyDeleted (checked first: a repeat is answered as the first time),
        MessageMissing, SeqConflict, LimitExceeded, DeleterChanged, SenderBlocked,
        ReceiverBlocked; nothing is stored then."""
        assert tombstone.seq == expected_last + 1
        conv = tombstone.conversation_id
        group = not receivers
        items = self._tombstone_items(original, tombstone, expected_last, group=group)
        if group:
            roles = {f":r{i}": role for i, role in enumerate(manager_roles or ())}
            items.append(("sender", {"Update": {
                "TableName": self._members, "Key": {"pk": tombstone.sender.key, "sk": "C#" + conv},
                "UpdateExpression": "SET read_seq = :n",
                "ConditionExpression": f"#role IN ({', '.join(roles)})" if roles else "attribute_exists(pk)",
                **({"ExpressionAttributeNames": {"#role": "role"}} if roles else {}),
                "ExpressionAttributeValues": {":n": tombstone.seq, **roles},
            }}))
        else:
            items.append(("sender", _member_upsert(self._members, tombstone.sender, conv, receivers[0], tombstone,
                                                   own=True)))
            items.extend((f"receiver {r.key}", _member_upsert(self._members, r, conv, tombstone.sender, tombstone,
                                                              own=False)) for r in receivers)
        if counter is not None:
            items.append(("counter", window_update(self._table.name, counter)))
        try:
            transact(self._table.meta.client, items)
        except TransactionRefused as refused:
            raise _delete_refusal(refused, tombstone, expected_last, receivers, counter) from None

    def _tombstone_items(self, original: Message, tombstone: Message, expected_last: int, *, group: bool
                         ) -> list[tuple[str, dict[str, Any]]]:
        """What every delete writes: the original blanked under `attribute_not_exists(deleted)`
        (of two racing deletes one stores), the head moved past it under its gap-free condition
        (a group's list shows the event), and the `deleted` event at the next seq."""
        name = self._table.name
        head_sets = "SET last_seq = :n, last_time = :t, last_sender = :s, preview = :p"
        head_values: dict[str, Any] = {":n": tombstone.seq, ":t": tombstone.time_ms, ":s": tombstone.sender.key,
                                       ":p": "", ":prev": expected_last}
        if group:  # the list shows a group's last event (logic/conversations.py)
            head_sets += ", last_event = :e"
            head_values[":e"] = tombstone.event
        purge = {":key": original.image.key} if original.image is not None else {}
        return [
            ("original", {"Update": {
                "TableName": name, "Key": {"pk": tombstone.conversation_id, "sk": original.seq},
                "UpdateExpression": "SET #tx = :empty, deleted = :yes, tombstone_seq = :n, deleted_time = :t"
                                    + (", purge_key = :key" if purge else "") + " REMOVE image",
                "ConditionExpression": "attribute_exists(pk) AND attribute_not_exists(deleted)",
                "ExpressionAttributeNames": {"#tx": "text"},
                "ExpressionAttributeValues": {":empty": "", ":yes": True, ":n": tombstone.seq,
                                              ":t": tombstone.time_ms, **purge},
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            }}),
            ("head", {"Update": {
                "TableName": name, "Key": {"pk": tombstone.conversation_id, "sk": HEAD},
                "UpdateExpression": head_sets + " REMOVE preview_image",
                "ConditionExpression": "last_seq = :prev", "ExpressionAttributeValues": head_values,
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            }}),
            ("tombstone", _message_put(name, tombstone, self._retention)),
        ]

    def operator_delete(self, original: Message, tombstone: Message, expected_last: int,
                        members: list[Identity]) -> None:
        """An operator's delete (docs/operator.md): as `delete`, without a deleter's membership,
        block marks or rate window. One transaction: `tombstone` as seq `expected_last + 1`
        (the head's gap-free condition), the original blanked under `attribute_not_exists(deleted)`,
        and in a 1:1 both `members`' copies of the last message moved (so `sync` and acks reach
        the tombstone), with no read cursor moved and no privacy mark. Raises AlreadyDeleted,
        MessageMissing or SeqConflict; nothing is stored then."""
        assert tombstone.seq == expected_last + 1
        conv = tombstone.conversation_id
        items = [
            *self._tombstone_items(original, tombstone, expected_last, group=not members),
            *((f"member {m.key}", {"Update": {
                "TableName": self._members, "Key": {"pk": m.key, "sk": "C#" + conv},
                "UpdateExpression": "SET last_seq = :n, last_time = :t, last_sender = :s, preview = :p,"
                                    " last_event = :e REMOVE preview_image",
                "ConditionExpression": "attribute_exists(pk)",
                "ExpressionAttributeValues": {":n": tombstone.seq, ":t": tombstone.time_ms,
                                              ":s": tombstone.sender.key, ":p": "", ":e": tombstone.event},
            }}) for m in members),
        ]
        try:
            transact(self._table.meta.client, items)
        except TransactionRefused as refused:
            raise _delete_refusal(refused, tombstone, expected_last, [], None) from None

    def stored_as(self, sender: Identity, client_id: str) -> tuple[str, int] | None:
        """Which (conversation, seq) this client message id became, if it was stored (one GetItem)."""
        item = self._table.get_item(Key={"pk": idempotency_key(sender, client_id), "sk": HEAD},
                                    ConsistentRead=True).get("Item")
        return (str(item["conversation_id"]), int(item["seq"])) if item else None

    def last_seq(self, conversation_id: str, consistent: bool = True) -> int:
        """The head's last seq (0 if there is no head). `consistent=False` reads half price and
        may answer an older, smaller value: never a larger one, since last_seq only grows."""
        item = self._table.get_item(Key={"pk": conversation_id, "sk": HEAD}, ConsistentRead=consistent,
                                    ProjectionExpression="last_seq").get("Item")
        return int(item.get("last_seq", 0)) if item else 0

    def get(self, conversation_id: str, seq: int) -> Message | None:
        item = self._table.get_item(Key={"pk": conversation_id, "sk": seq}, ConsistentRead=True).get("Item")
        return _message(item) if item else None

    def after(self, conversation_id: str, after_seq: int, limit: int) -> list[Message]:
        """Messages with seq > after_seq, oldest first, at most `limit`."""
        page = self._table.query(
            KeyConditionExpression="pk = :c AND sk > :a",
            ExpressionAttributeValues={":c": conversation_id, ":a": after_seq},
            Limit=limit,
            ConsistentRead=True,
        )
        return [_message(item) for item in page["Items"]]

    def written_by(self, conversation_id: str, sender: Identity, after_seq: int, limit: int
                   ) -> tuple[list[Message], int | None]:
        """`sender`'s messages of one conversation past `after_seq` that are neither events nor
        deleted (export and erasure, logic/erasure.py): one consistent Query of the
        conversation's partition reading at most `limit` items (the FilterExpression on sender
        drops the others after the read: they are paid, never returned), and the seq the next
        page starts after (None: the end). Never a Scan."""
        page = self._table.query(
            KeyConditionExpression="pk = :c AND sk > :a",
            FilterExpression="sender = :me AND attribute_not_exists(event) AND attribute_not_exists(deleted)",
            ExpressionAttributeValues={":c": conversation_id, ":a": after_seq, ":me": sender.key},
            Limit=limit, ConsistentRead=True)
        last = page.get("LastEvaluatedKey")
        return [_message(item) for item in page["Items"]], (int(last["sk"]) if last else None)

    def before(self, conversation_id: str, before_seq: int | None, limit: int, first: int = 1) -> list[Message]:
        """Messages with first <= seq < before_seq (None: no upper bound, the newest), newest
        `limit` of them, returned oldest first."""
        values: dict[str, Any]
        if before_seq is None:
            condition, values = "pk = :c AND sk >= :one", {":c": conversation_id, ":one": first}
        elif before_seq <= first:
            return []  # (BETWEEN 1 AND 0 is a validation error on DynamoDB)
        else:
            condition = "pk = :c AND sk BETWEEN :one AND :b"
            values = {":c": conversation_id, ":one": first, ":b": before_seq - 1}
        page = self._table.query(
            KeyConditionExpression=condition,
            ExpressionAttributeValues=values,
            ScanIndexForward=False,
            Limit=limit,
            ConsistentRead=True,
        )
        return [_message(item) for item in reversed(page["Items"])]


def _send_refusal(refused: TransactionRefused, counter: Window | None) -> Exception | None:
    """What a send's refused transaction means, checked in this order: the client id was
    stored before (DuplicateSend, with the seq it became), the head moved (SeqConflict, with
    where it is now), the rate window is full (LimitExceeded); None if none of these."""
    if refused.failed("idempotency"):
        original = refused.seen("idempotency")
        return DuplicateSend(original["conversation_id"], int(original["seq"]))
    if refused.failed("head"):
        return SeqConflict(int(refused.seen("head").get("last_seq", 0)))
    if counter is not None and refused.failed("counter"):
        return LimitExceeded(counter)
    return None


def _delete_refusal(refused: TransactionRefused, tombstone: Message, expected_last: int,
                    receivers: list[Identity], counter: Window | None) -> Exception:
    """What a delete's refused transaction means (`MessagesTable.delete`), the original first."""
    conv = tombstone.conversation_id
    if refused.failed("original"):
        seen = refused.seen("original")
        return AlreadyDeleted(_message(seen)) if seen.get("deleted") else MessageMissing(conv)
    if refused.failed("head"):
        return SeqConflict(int(refused.seen("head").get("last_seq", 0)))
    if counter is not None and refused.failed("counter"):
        return LimitExceeded(counter)
    if refused.failed("sender"):
        return SenderBlocked(conv) if receivers else DeleterChanged(conv)
    if any(refused.failed(f"receiver {r.key}") for r in receivers):
        return ReceiverBlocked(conv)
    # an item was busy (nothing was written): try again
    return SeqConflict(expected_last) if refused.conflict and not refused.failed_names else refused


def idempotency_key(sender: Identity, client_id: str) -> str:
    """`I#` + the sender's key with `\\` and `#` escaped + `#` + the client id.

    Ids may contain `#`: unescaped, user `shop` with client id `alice#c` and user `shop#alice`
    with `c` made one key, and the second send read or suppressed the first. Escaped, the first
    bare `#` after `I#` always ends the sender, so two (sender, client id) pairs never share a
    key. Keys of senders without `#` or `\\` are unchanged. At most ~1 KB (two 128-character
    ids of 4-byte characters; an escaped character takes 2 bytes), under DynamoDB's 2 KB."""
    escaped = sender.key.replace("\\", "\\\\").replace("#", "\\#")
    return f"I#{escaped}#{client_id}"


_idempotency_key = idempotency_key  # the old name (tests and other modules import it)


def _head_update(table: str, message: Message, condition: str, values: dict[str, Any], group: bool = False
                 ) -> dict[str, Any]:
    """Move the head to `message` (last seq, time, sender, preview) under `condition`; only
    these attributes: a group's title, owner and count stay as they are. A group's head also
    drops `last_event` (set by a membership change, storage/groups.py): the preview is text now."""
    return {"Update": {
        "TableName": table,
        "Key": {"pk": message.conversation_id, "sk": HEAD},
        "UpdateExpression": "SET last_seq = :n, last_time = :t, last_sender = :s, preview = :p"
                            + _image_flag(message, remove=["last_event"] if group else []),
        "ConditionExpression": condition,
        "ExpressionAttributeValues": {
            ":n": message.seq, ":t": message.time_ms, ":s": message.sender.key,
            ":p": message.text[:PREVIEW_CHARS], **values, **_image_flag_values(message),
        },
        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
    }}


def message_expiry(time_ms: int, retention_seconds: int) -> dict[str, Any]:
    """A message item's TTL attribute under a retention period (settings.py
    `message_retention_days`, architecture.md "Retention"): `expires_at` = its time + the
    period; nothing when messages are kept (0). DynamoDB deletes it within about two days after."""
    return {"expires_at": time_ms // 1000 + retention_seconds} if retention_seconds > 0 else {}


def _message_put(table: str, message: Message, retention_seconds: int = 0) -> dict[str, Any]:
    return {"Put": {
        "TableName": table,
        "Item": {
            "pk": message.conversation_id, "sk": message.seq, "sender": message.sender.key,
            "text": message.text, "time": message.time_ms, "client_id": message.client_id,
            **_image_item(message), **({"event": message.event} if message.event is not None else {}),
            **message_expiry(message.time_ms, retention_seconds),
        },
        "ConditionExpression": "attribute_not_exists(pk)",
    }}


def _idempotency_put(table: str, message: Message) -> dict[str, Any]:
    return {"Put": {
        "TableName": table,
        "Item": {
            "pk": idempotency_key(message.sender, message.client_id), "sk": HEAD,
            "conversation_id": message.conversation_id, "seq": message.seq,
            "expires_at": message.time_ms // 1000 + IDEMPOTENCY_SECONDS,
        },
        "ConditionExpression": "attribute_not_exists(pk)",
        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
    }}


def _member_upsert(table: str, member: Identity, conv: str, peer: Identity, message: Message, own: bool
                   ) -> dict[str, Any]:
    """Create the membership if missing and copy the last message onto it, so one Query on a
    member's partition lists conversations with previews and unread counts, and acks can be
    checked against `last_seq` without reading the head. The sender has read what they sent.

    Privacy marks, free in the same write: the sender's side gets `wrote`, each receiver's side
    adds the sender to `writers`, so presence and linking can tell "the visitor wrote here"
    from "someone wrote to the visitor" without another read (members.py, presence.md).
    """
    expression = (
        "SET peer = if_not_exists(peer, :peer), acked_seq = if_not_exists(acked_seq, :zero), "
        "last_seq = :n, last_time = :t, last_sender = :s, preview = :p, "
    )
    values: dict[str, Any] = {
        ":peer": peer.key, ":zero": 0, ":n": message.seq, ":t": message.time_ms,
        ":s": message.sender.key, ":p": message.text[:PREVIEW_CHARS], **_image_flag_values(message),
    }
    # the list says what an event was ("Message deleted"), as a group's head does
    if message.event is not None:
        expression += "last_event = :e, "
        values[":e"] = message.event
    flags = _image_flag(message, remove=[] if message.event is not None else ["last_event"])
    if own:
        expression += "read_seq = :n, wrote = :yes" + flags
        values[":yes"] = True
    else:
        expression += "read_seq = if_not_exists(read_seq, :zero)" + flags + " ADD writers :writer"
        values[":writer"] = {message.sender.key}
    return {"Update": {
        "TableName": table,
        "Key": {"pk": member.key, "sk": "C#" + conv},
        "UpdateExpression": expression,
        # a block (members.py `block`): refused here, in the send's own transaction
        "ConditionExpression": "attribute_not_exists(blocked)",
        "ExpressionAttributeValues": values,
    }}


def _image_item(message: Message) -> dict[str, Any]:
    return {"image": message.image.to_item()} if message.image is not None else {}


def _image_flag(message: Message, remove: list[str] | None = None) -> str:
    """The preview's photo flag (the list says "Photo"), to append to a SET clause: set for a
    photo, removed otherwise (with `remove`'s other attributes)."""
    removed = list(remove or [])
    if message.image is None:
        removed.append("preview_image")
    return (", preview_image = :img" if message.image is not None else "") + (
        " REMOVE " + ", ".join(removed) if removed else "")


def _image_flag_values(message: Message) -> dict[str, Any]:
    return {":img": True} if message.image is not None else {}


def _message(item: dict[str, Any]) -> Message:
    return Message(
        conversation_id=item["pk"],
        seq=int(item["sk"]),
        sender=Identity.from_key(item["sender"]),
        text=item["text"],
        time_ms=int(item["time"]),
        client_id=item["client_id"],
        event=int_numbers(item["event"]) if "event" in item else None,
        image=StoredImage.from_item(item["image"]) if "image" in item else None,
        deleted=item.get("deleted") is True,
        tombstone_seq=int(item.get("tombstone_seq", 0)),
        deleted_time_ms=int(item.get("deleted_time", 0)),
        purge_key=str(item["purge_key"]) if "purge_key" in item else None,
    )

