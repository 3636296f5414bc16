"""Erasure of one identity (issue 26 point 5; docs/operator.md "Erasure"): an operator's
`POST /operator/erase`, one bounded step per request, answered with the progress.

Phases, in order; each step does a bounded batch of one phase and saves the progress
(storage/erasure.py, `pk=E#<identity>`), so a crash anywhere loses at most one batch, which the
next request redoes (every write below is idempotent):

1. messages: walk the identity's memberships (1:1 and groups) in conversation order, then the
   groups it left (`ErasureStore.place_after`), and in each the identity's live messages by a
   Query of the conversation's partition filtered on sender (`MessagesTable.written_by`, `PAGE`
   items read a Query); each becomes protocol.md §16's tombstone exactly as an operator's delete
   makes it (`MessagesTable.operator_delete`: the `deleted` event at the next seq, by {"kind":
   "operator"}, the original blanked under `attribute_not_exists(deleted)`, a 1:1's members'
   copies of the last message moved). A re-run finds a blanked message no more (the filter), so
   nothing is tombstoned twice. A batch's last tombstone in a conversation is pushed (1:1: to
   the peer; group: its fan-out): an online client sees the gap before it and pulls the rest
   (protocol.md §9c); an offline one at its next pull.
2. groups: leave each group as the member would (`Groups.leave`, the `left` event; an owner
   with others first hands ownership to the first other member on the roster), with fixed client
   ids, so a repeat is answered from the idempotency record.
3. identity: the identity's partition in the members table, 25 items a batch (1:1 memberships,
   links with their other side, settings, the group count, a ban).
4. connections: presence, routing items, connection records and mailboxes.
5. counters: its rate-limit windows (send, presence, upload, report).
6. media: every object under its owner part (`m/<owner>/`: its photos' copies, `u/<owner>/`:
   its uploads), 1,000 keys a batch.
Then `done`. What stays, and why: docs/operations.md "Data requests".
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from chalicelib import observability
from chalicelib.errors import OwnerMustStayError
from chalicelib.logic.frames import GroupLeaveRequest, GroupRoleRequest
from chalicelib.logic.groups import Groups
from chalicelib.logic.limits import PRESENCE, REPORT, SEND, UPLOAD
from chalicelib.logic.media import owner_part
from chalicelib.principal import Identity
from chalicelib.storage.erasure import ErasureStore, Progress, conversation_of
from chalicelib.storage.groups import GroupsStore, is_group_id
from chalicelib.storage.media import ATTACHED_PREFIX, UPLOAD_PREFIX, MediaBucket
from chalicelib.storage.members import MembersTable
from chalicelib.storage.messages import AlreadyDeleted, Message, MessageMissing, MessagesTable, SeqConflict

Frame = dict[str, Any]
PHASES = ("messages", "groups", "identity", "connections", "counters", "media", "done")
PAGE = 100  # message items one Query reads (the filter keeps the identity's)
STEP_UNITS = 200  # a request's budget: tombstones (one transaction each) or batches of the other phases
SCOPES = (SEND, PRESENCE, UPLOAD, REPORT)
OPERATOR = {"kind": "operator"}
MAX_RETRIES = 100
# logic/operator.py `Operator.push_tombstone`: (tombstone, whom to push a 1:1's to)
PushTombstone = Callable[[Message, list[Identity]], None]


class Erasure:
    def __init__(self, store: ErasureStore, messages: MessagesTable, members: MembersTable, groups: Groups,
                 groups_store: GroupsStore, bucket: MediaBucket | None, push: PushTombstone | None = None) -> None:
        self._store = store
        self._push = push
        self._messages = messages
        self._members = members
        self._groups = groups
        self._groups_store = groups_store
        self._bucket = bucket
        self.step_units = STEP_UNITS

    def erase(self, operator: Identity, identity: Identity) -> Frame:
        """One step of the erasure of `identity`: batches until the budget is spent or it is
        done, the progress saved after each. Call again until `done` is true; once done, the
        same answer (nothing more is written)."""
        progress = self._store.progress(identity)
        if progress is None:
            progress = Progress(identity, PHASES[0], operator, self._now())
            self._store.save(progress)
            observability.event("erasure_started", identity=identity.key, operator=operator.key)
        used = 0
        while progress.phase != "done" and used < self.step_units:
            progress, spent = self._batch(progress, self.step_units - used)
            used += max(spent, 1)
            if progress.phase == "done":
                progress = replace(progress, finished_ms=self._now())
                observability.event("erasure_done", identity=identity.key, operator=operator.key,
                                    tombstoned=progress.tombstoned)
            self._store.save(progress)
        return _progress_json(progress)

    def _now(self) -> int:
        return int(time.time() * 1000)

    def _batch(self, p: Progress, budget: int) -> tuple[Progress, int]:
        if p.phase == "messages":
            return self._messages_batch(p, budget)
        if p.phase == "groups":
            return self._groups_batch(p)
        if p.phase == "identity":
            return (p, 1) if self._store.delete_identity_page(p.identity) else (_next(p), 1)
        if p.phase == "connections":
            return (p, 1) if self._store.delete_connections_page(p.identity) else (_next(p), 1)
        if p.phase == "counters":
            found = sum(self._store.delete_counters_page(p.identity, scope) for scope in SCOPES)
            return (p, 1) if found else (_next(p), 1)
        if p.phase == "media":
            return self._media_batch(p)
        raise ValueError(f"unknown erasure phase {p.phase!r}")

    # -- 1. messages ------------------------------------------------------------------------------------
    def _messages_batch(self, p: Progress, budget: int) -> tuple[Progress, int]:
        if not p.conversation:
            first = self._store.place_after(p.identity, None)
            if first is None:
                return _next(p), 1
            p = replace(p, conversation=first, seq=0)
        conversation = conversation_of(p.conversation)
        found, next_seq = self._messages.written_by(conversation, p.identity, p.seq, min(PAGE, budget))
        members, pushed_to = self._members_of(p.identity, conversation) if found else ([], [])
        last: Message | None = None
        for message in found:
            last = self._tombstone(message, members, last.seq if last else None) or last
        if last is not None and self._push is not None:  # online members see the gap and pull the rest
            self._push(last, pushed_to)
        p = replace(p, tombstoned=p.tombstoned + len(found))
        if next_seq is not None:
            return replace(p, seq=next_seq), len(found)
        following = self._store.place_after(p.identity, p.conversation)
        if following is None:
            return _next(p), len(found)
        return replace(p, conversation=following, seq=0), len(found)

    def _members_of(self, identity: Identity, conversation_id: str) -> tuple[list[Identity], list[Identity]]:
        """A 1:1's members whose copies of the last message the tombstones move (those that
        exist: a transaction conditioned on a missing one would be refused for good), and whom
        its tombstones are pushed to (the peer, and the user a visitor peer became); none for a
        group (its fan-out reads the roster)."""
        if is_group_id(conversation_id):
            return [], []
        own = self._members.get(identity, conversation_id)
        if own is None or own.peer is None:
            return [], []
        theirs = self._members.get(own.peer, conversation_id)
        return [identity] + ([own.peer] if theirs is not None else []), own.peers

    def _tombstone(self, original: Message, members: list[Identity], expected: int | None) -> Message | None:
        """Protocol.md §16's tombstone of `original` (an operator's), stored after the last seq
        (`expected`, or read); None when it was deleted already."""
        conv = original.conversation_id
        if expected is None:
            expected = self._messages.last_seq(conv)
        for _ in range(MAX_RETRIES):
            tombstone = Message(conv, expected + 1, original.sender, "", self._now(), f"deleted:{original.seq}",
                                event={"type": "deleted", "seq": original.seq, "by": OPERATOR})
            try:
                self._messages.operator_delete(original, tombstone, expected, members)
            except SeqConflict as conflict:
                expected = conflict.actual
                continue
            except (AlreadyDeleted, MessageMissing):
                return None
            return tombstone
        raise RuntimeError("could not store the tombstone after many attempts")

    # -- 2. groups ----------------------------------------------------------------------------------------
    def _groups_batch(self, p: Progress) -> tuple[Progress, int]:
        group = self._store.first_group(p.identity)
        if group is None:
            return _next(p), 1
        gid = group.conversation_id
        leave = GroupLeaveRequest(f"erasure-leave-{gid}", gid)
        try:
            self._groups.leave(p.identity, None, leave)
        except OwnerMustStayError:
            successor = next((e.member for e in self._groups_store.roster_page(gid, None, 2)[0]
                              if e.member != p.identity), None)
            if successor is None:
                raise
            self._groups.set_role(p.identity, None, GroupRoleRequest(f"erasure-owner-{gid}", gid, successor, "owner"))
            self._groups.leave(p.identity, None, leave)
        return p, 1

    # -- 6. media -----------------------------------------------------------------------------------------
    def _media_batch(self, p: Progress) -> tuple[Progress, int]:
        if self._bucket is None:
            return _next(p), 1
        owner = owner_part(p.identity)
        for prefix in (f"{ATTACHED_PREFIX}{owner}/", f"{UPLOAD_PREFIX}{owner}/"):
            keys = self._bucket.keys_under(prefix)
            if keys:
                self._bucket.delete_many(keys)
                return p, 1
        return _next(p), 1


def _next(p: Progress) -> Progress:
    return replace(p, phase=PHASES[PHASES.index(p.phase) + 1], conversation="", seq=0)


def _progress_json(p: Progress) -> Frame:
    return {"identity": p.identity.to_json(), "done": p.phase == "done", "phase": p.phase,
            "tombstoned": p.tombstoned, "started": p.started_ms, "finished": p.finished_ms or None,
            "by": p.operator.to_json()}
