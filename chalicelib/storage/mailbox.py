"""Long-poll mailboxes: the frames pushed to a long-poll connection while no poll has taken
them (the seed's "message pool"), in the connections table beside the connection:

    pk=C#<connection_id>  sk=M   owner, base, frames (a list of JSON texts), expires_at

Frame k of the list has mailbox number `base + k`. A poll releases what the client's cursor
has moved past and reads the rest in one UpdateItem; frames are never removed before that, so
a lost poll response only means the next poll returns them again.

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
from typing import Any

from botocore.exceptions import ClientError

from chalicelib.principal import Identity
from chalicelib.storage.dynamo import Refused, condition_failed, update_if

MAX_FRAMES = 500  # the client resyncs past it (frames are small; a 400 KB item holds them)
RELEASE_CHUNK = 100  # frames removed per UpdateItem: ~1.2 KB of expression
RESYNC = '{"type":"resync"}'


@dataclass(frozen=True)
class Pending:
    base: int  # the mailbox number of frames[0]
    frames: list[str]

    @property
    def last(self) -> int:
        """The number of the last frame (base - 1 when empty)."""
        return self.base + len(self.frames) - 1


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
                                   "expires_at": expires_at})

    def append(self, connection_id: str, frame: str) -> tuple[int, str] | None:
        """Add a frame; returns its mailbox number and text, or None if nothing was added.
        Raises MailboxGone if there is no mailbox. A full mailbox takes one last frame,
        `{"type": "resync"}`, telling the client that what follows is only in the message store
        (a `sync` gets it), and then nothing more until the client catches up."""
        number = self._append_if_below(connection_id, frame, MAX_FRAMES)
        if number is not None:
            return number, frame
        number = self._append_if_below(connection_id, RESYNC, MAX_FRAMES + 1)
        return None if number is None else (number, RESYNC)

    def _append_if_below(self, connection_id: str, frame: str, size: int) -> int | None:
        # the new item tells the frame's number (base + its index); a held poll's mailbox is
        # nearly empty, so returning it costs little
        item = update_if(self._table, self._key(connection_id), "SET frames = list_append(frames, :f)",
                         "attribute_exists(pk) AND size(frames) < :max", {":f": [frame], ":max": size})
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
        """
        release = max(0, min(release, MAX_FRAMES + 1))
        # the first call checks that all `release` frames are there; later chunks follow it
        step = min(release, RELEASE_CHUNK)
        pending = self._release(connection_id, owner, base, step, release, expires_at)
        done = step
        while done < release:
            step = min(release - done, RELEASE_CHUNK)
            pending = self._release(connection_id, owner, base + done, step, step, expires_at)
            done += step
        return pending

    def _release(self, connection_id: str, owner: Identity, base: int, count: int, needed: int,
                 expires_at: int) -> Pending:
        """One UpdateItem: remove the first `count` frames if at least `needed` are there."""
        assert count <= RELEASE_CHUNK
        removes = ", ".join(f"frames[{i}]" for i in range(count))
        expression = "SET expires_at = :e, #b = #b + :k" + (f" REMOVE {removes}" if removes else "")
        try:
            item = self._table.update_item(
                Key=self._key(connection_id),
                UpdateExpression=expression,
                ConditionExpression="attribute_exists(pk) AND #o = :me AND #b = :base AND size(frames) >= :n",
                ExpressionAttributeNames={"#o": "owner", "#b": "base"},  # both reserved words
                ExpressionAttributeValues={":e": expires_at, ":k": count, ":n": needed, ":me": owner.key,
                                           ":base": base},
                ReturnValues="ALL_NEW",
            )["Attributes"]
        except ClientError as error:
            if condition_failed(error):
                raise MailboxGone(connection_id) from None
            raise
        return _pending(item)

    def peek(self, connection_id: str) -> tuple[Identity, Pending] | None:
        """The mailbox's owner and content, read consistently; None if there is none."""
        item = self._table.get_item(Key=self._key(connection_id), ConsistentRead=True).get("Item")
        if item is None:
            return None
        return Identity.from_key(item["owner"]), _pending(item)

    def delete(self, connection_id: str) -> None:
        self._table.delete_item(Key=self._key(connection_id))


def _pending(item: dict[str, Any]) -> Pending:
    return Pending(int(item["base"]), list(item.get("frames", [])))
