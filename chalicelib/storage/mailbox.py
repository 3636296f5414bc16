"""Long-poll mailboxes: the frames pushed to a long-poll connection while no poll has taken
them (the seed's "message pool"), in the connections table beside the connection:

    pk=C#<connection_id>  sk=M   owner, base, frames (a list of JSON texts), held, expires_at

It crosses as `Mailbox` (owner -> an Identity, and `Pending`: base, frames as a tuple); an
appended frame as `Entry` (its mailbox number and text). Frame k of the list has mailbox
number `base + k`. A poll releases what the client's cursor
has moved past and reads the rest in one UpdateItem; frames are never removed before that, so
a lost poll response only means the next poll returns them again.

Bounded by count AND by bytes: at most MAX_FRAMES frames weighing at most MAX_BYTES together
(an item holds 400 KB; a message frame up to ~24 KB). `held` is the weight of the frames in
the list (UTF-8 bytes + 1 each, what DynamoDB counts for a list element), kept exact by every
write in the same UpdateItem: an append adds its frame's weight under the condition that the
sum stays within MAX_BYTES (so concurrent appends can never overshoot: each is checked against
the sum the others left), a release subtracts the weight of the frames it removes. Those
frames are known before the release is written: frames are only appended at the end and
removed at the front with `base` moving, so under the condition `base = :base` the first k
frames are exactly the ones a read (or the refused fast path's returned item) saw. A frame
that does not fit, by count or by bytes, is not stored: the mailbox takes `resync` instead
(weighing more than MAX_BYTES by itself, so nothing follows it until the client releases it).

Nothing here grows with client input: a release asks for at most what a mailbox can hold
(MAX_FRAMES + 1), and one UpdateItem removes at most `RELEASE_CHUNK` frames (DynamoDB caps an
expression at 4 KB; moto's parser recurses once per term), so the largest release is a few
short calls. The key is unambiguous: `C#` + a server-made connection id (URL-safe, no `#`),
and `sk=M` sits beside the connection's own `sk=#`. Only `create` may create the item; every
update is conditioned on `attribute_exists(pk)`, so a write racing `lp/close` never brings a
closed mailbox back.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from botocore.exceptions import ClientError

from chalicelib.principal import Identity
from chalicelib.storage.dynamo import Refused, condition_failed, plain, update_if

MAX_FRAMES = 500  # the client resyncs past it
# The frames' weight: with the item's other attributes (~200 B) and the resync frame, far under
# DynamoDB's 400 KB item limit; and under the local stack's too, where moto counts an attribute
# being replaced twice (old and new value), so a list of more than ~195 KB cannot grow there.
MAX_BYTES = 128 * 1024
RELEASE_CHUNK = 100  # frames removed per UpdateItem: ~1.2 KB of expression
RESYNC = '{"type":"resync"}'
_RESYNC_WEIGHT = MAX_BYTES + 1  # a mailbox holding `resync` is full, whatever else it holds


def weight(frame: str) -> int:
    """What a frame counts for against MAX_BYTES: its UTF-8 bytes and the list element's byte."""
    return _RESYNC_WEIGHT if frame == RESYNC else len(frame.encode("utf-8")) + 1


@dataclass(frozen=True)
class Pending:
    base: int  # the mailbox number of frames[0]
    frames: tuple[str, ...]

    @property
    def last(self) -> int:
        """The number of the last frame (base - 1 when empty)."""
        return self.base + len(self.frames) - 1


class Mailbox(NamedTuple):
    """A mailbox as `peek` reads it: whose it is and what it holds."""

    owner: Identity
    pending: Pending


class Entry(NamedTuple):
    """A frame as `append` stored it: its mailbox number and its text (maybe `resync`)."""

    number: int
    frame: str


class MailboxGone(Exception):
    """No mailbox (expired or closed), or not the caller's."""


class MailboxTable:
    def __init__(self, table: Any) -> None:
        self._table = table  # a boto3 DynamoDB Table resource (the connections table)

    @staticmethod
    def _key(connection_id: str) -> dict[str, str]:
        return {"pk": f"C#{connection_id}", "sk": "M"}

    def create(self, connection_id: str, owner: Identity, expires_at: int) -> None:
        self._table.put_item(Item={**self._key(connection_id), "owner": owner.key, "base": 1, "frames": [],
                                   "held": 0, "expires_at": expires_at})

    def append(self, connection_id: str, frame: str) -> Entry | None:
        """Add a frame; returns its mailbox number and text, or None if nothing was added.
        Raises MailboxGone if there is no mailbox. A full mailbox (MAX_FRAMES frames, or no room
        for this frame's bytes) takes one last frame, `{"type": "resync"}`, telling the client
        that what follows is only in the message store (a `sync` gets it), and then nothing
        more until the client catches up."""
        number = self._append_if_room(connection_id, frame, MAX_FRAMES, MAX_BYTES - weight(frame))
        if number is not None:
            return Entry(number, frame)
        # no room: `resync` if the mailbox holds none yet (its weight alone passes MAX_BYTES)
        number = self._append_if_room(connection_id, RESYNC, MAX_FRAMES + 1, MAX_BYTES)
        return None if number is None else Entry(number, RESYNC)

    def _append_if_room(self, connection_id: str, frame: str, count: int, room: int) -> int | None:
        """Append if fewer than `count` frames are there and they weigh at most `room` (a room
        below 0, a frame heavier than a whole mailbox, never fits)."""
        # the new item tells the frame's number (base + its index); a held poll's mailbox is
        # nearly empty, so returning it costs little. A mailbox made before `held` existed
        # counts from 0.
        item = update_if(self._table, self._key(connection_id),
                         "SET frames = list_append(frames, :f), held = if_not_exists(held, :zero) + :w",
                         "attribute_exists(pk) AND size(frames) < :max AND "
                         "(attribute_not_exists(held) OR held <= :room)",
                         {":f": [frame], ":max": count, ":w": weight(frame), ":zero": 0, ":room": room})
        if isinstance(item, Refused):
            if not item.current:
                raise MailboxGone(connection_id)
            return None  # full
        return _pending(item).last

    def take(self, connection_id: str, owner: Identity, base: int, release: int, expires_at: int) -> Pending:
        """Release the first `release` frames, given the mailbox's current `base`, and return
        the rest; also extends the expiry. Raises MailboxGone when the mailbox is missing, not
        the owner's, not at `base` or holding fewer than `release` frames (the caller then
        peeks and retries); nothing is released then.

        `release` may be any number: above what a mailbox can hold it cannot succeed, so it is
        cut to MAX_FRAMES + 1 before anything is built, and removed `RELEASE_CHUNK` at a time.

        Calls: one UpdateItem when the client releases all that is there (a held poll's usual
        case) or nothing; otherwise the released frames' weight must be known first, from the
        refused first try's returned item (or one consistent read past RELEASE_CHUNK frames),
        then one UpdateItem per RELEASE_CHUNK frames.
        """
        release = max(0, min(release, MAX_FRAMES + 1))
        current: dict[str, Any] | None = None
        if release <= RELEASE_CHUNK:
            # all of them, or none: no weight to look up (all of them leave 0)
            exact = self._release(connection_id, owner, base, release, expires_at,
                                  minus=None if release > 0 else 0)
            if not isinstance(exact, Refused):
                return exact
            current = exact.current
        else:
            current = self._table.get_item(Key=self._key(connection_id), ConsistentRead=True).get("Item")
        if not current or current.get("owner") != owner.key or int(current.get("base", -1)) != base:
            raise MailboxGone(connection_id)
        frames = list(current.get("frames", []))
        if len(frames) < release:
            raise MailboxGone(connection_id)
        pending = None
        done = 0
        while pending is None or done < release:  # at least one call: it extends the expiry
            step = min(release - done, RELEASE_CHUNK)
            removed = sum(weight(frame) for frame in frames[done:done + step])
            result = self._release(connection_id, owner, base + done, step, expires_at, minus=removed)
            if isinstance(result, Refused):  # another poll released them meanwhile
                raise MailboxGone(connection_id)
            pending = result
            done += step
        return pending

    def _release(self, connection_id: str, owner: Identity, base: int, count: int, expires_at: int,
                 minus: int | None) -> Pending | Refused:
        """One UpdateItem: remove the first `count` frames if at least `count` are there,
        subtracting `minus` from `held` (None: if exactly `count` are, leaving `held` at 0).
        Refused carries the item as it is."""
        assert count <= RELEASE_CHUNK
        everything = minus is None
        removes = ", ".join(f"frames[{i}]" for i in range(count))
        held = "held = :zero" if everything else "held = if_not_exists(held, :zero) - :w"
        expression = f"SET expires_at = :e, #b = #b + :k, {held}" + (f" REMOVE {removes}" if removes else "")
        values: dict[str, Any] = {":e": expires_at, ":k": count, ":n": count, ":me": owner.key, ":base": base,
                                  ":zero": 0}
        if minus is not None:
            values[":w"] = minus
        try:
            item = self._table.update_item(
                Key=self._key(connection_id),
                UpdateExpression=expression,
                ConditionExpression="attribute_exists(pk) AND #o = :me AND #b = :base AND "
                                    + ("size(frames) = :n" if everything else "size(frames) >= :n"),
                ExpressionAttributeNames={"#o": "owner", "#b": "base"},  # both reserved words
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )["Attributes"]
        except ClientError as error:
            if condition_failed(error):
                return Refused(plain(error.response.get("Item")))
            raise
        return _pending(item)

    def peek(self, connection_id: str) -> Mailbox | None:
        """The mailbox's owner and content, read consistently; None if there is none."""
        item = self._table.get_item(Key=self._key(connection_id), ConsistentRead=True).get("Item")
        if item is None:
            return None
        return Mailbox(Identity.from_key(item["owner"]), _pending(item))

    def delete(self, connection_id: str) -> None:
        self._table.delete_item(Key=self._key(connection_id))


def _pending(item: dict[str, Any]) -> Pending:
    return Pending(int(item["base"]), tuple(item.get("frames", ())))
