"""Group management (protocol.md §13): create, add, remove, leave, rename, roles, the member
list and receipts.

Every change is stored as one event message in the group's own seq (storage/groups.py: one
transaction, the same gap-free head condition as a send), answered with that seq, then pushed
to the members by the fan-out job (logic/fanout.py). The order of work for a change:

    repeat of a frame id already stored?  -> its original answer (and the push again)
    read the head, then the actor's membership (strongly consistent; the head first, so a
        change committed in between fails the head's condition and is read again)
    authorize and plan (errors here store nothing) -> one transaction -> fan-out -> answer

A refusal (an `error`) and "nothing to change" (`seq: null`) write nothing.

Nobody is added to a group by a stranger (protocol.md §13.2, architecture.md "Groups"): an
identity may be named in `group_create` / `group_add` only by someone it has itself written to
in their 1:1 conversation: its side of that conversation carries the send transaction's
`wrote` mark. One BatchGetItem reads the marks of everyone to be added; one answer,
`cannot_add`, refuses the whole frame whether an identity never wrote to the actor, does not
exist, or is in the most groups allowed, so the actor learns nothing about it (not its count).
"""
from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from chalicelib import observability
from chalicelib.errors import (
    AckBeyondLastError,
    CannotAddError,
    GroupFullError,
    NotAllowedError,
    NotMemberError,
    OwnerMustStayError,
    TooManyGroupsError,
)
from chalicelib.logic.frames import (
    GroupAddRequest,
    GroupCreateRequest,
    GroupLeaveRequest,
    GroupMembersRequest,
    GroupRemoveRequest,
    GroupRenameRequest,
    GroupRoleRequest,
    ReceiptsRequest,
)
from chalicelib.logic.limits import Limits
from chalicelib.logic.messaging import direct_conversation_id
from chalicelib.logic.privacy import may_reveal
from chalicelib.principal import Identity
from chalicelib.routing.router import Router
from chalicelib.storage.groups import (
    GROUP_PREFIX,
    Change,
    DuplicateChange,
    EventMessage,
    GroupConflict,
    GroupHead,
    GroupsStore,
    IdempotencyRecord,
    TooManyGroups,
    encode_roster_cursor,
)
from chalicelib.storage.members import Membership
from chalicelib.storage.rate_limits import LimitExceeded

Frame = dict[str, Any]
# fan_out(conversation_id, seq, frame, skip_connection): push a stored group message to the
# members' connections (GroupFanout.start); never raises.
FanOut = Callable[[str, int, Frame, "str | None"], None]
MAX_RETRIES = 50
# what one attempt at a change's transaction came to (Groups._commit), besides a repeat's answer
_STORED: Frame = {}
_CONFLICT: Frame = {}
MANAGERS = ("owner", "admin")
# The one refusal for anyone who may not be added (never naming who, nor why)
CANNOT_ADD = "you can add only people who have written to you"


class _Plan:
    """What a change will store: its event, its writes, and what to do once it is stored."""

    def __init__(self, event: dict[str, Any], change: Change, removed: Identity | None = None) -> None:
        self.event = event
        self.change = change
        self.removed = removed  # gets the `removed` event pushed directly


Planner = Callable[[GroupHead, Membership], "_Plan | None"]


class Groups:
    def __init__(self, store: GroupsStore, router: Router, member_limit: int, groups_limit: int,
                 fan_out: FanOut | None = None, limits: Limits | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._router = router
        self._member_limit = member_limit
        self._groups_limit = groups_limit
        self._fan_out = fan_out
        self._limits = limits  # every change counts toward the actor's send rate
        self._clock = clock

    # -- changes -----------------------------------------------------------------------------
    def create(self, actor: Identity, connection_id: str | None, request: GroupCreateRequest) -> Frame:
        members = [actor, *(m for m in request.members if m != actor)]
        if len(members) > self._member_limit:
            raise GroupFullError(f"a group has at most {self._member_limit} members")
        try:
            self._require_consent(actor, members[1:])
        except CannotAddError:
            record = self._store.idempotent(actor, request.client_id)
            if record is not None:  # a repeat answers as the first time, whatever changed since
                return self._repeat(record, connection_id)
            raise
        counter = self._limits.send_window(actor) if self._limits else None
        for _ in range(MAX_RETRIES):
            group_id = GROUP_PREFIX + secrets.token_urlsafe(16)  # 22 url-safe characters
            now = self._now()
            event = EventMessage(group_id, 1, actor, request.client_id, now,
                                 {"type": "created", "title": request.title, "members": [m.to_json() for m in members]})
            answer = {"type": "group", "conversation_id": group_id, "title": request.title, "role": "owner",
                      "seq": 1, "time": now, "members_count": len(members)}
            outcome = self._commit(actor, partial(self._store.create, event, request.title, members, answer,
                                           self._groups_limit, counter), connection_id)
            if outcome is _CONFLICT:
                continue  # the id was taken (or a count was busy): a new id
            if outcome is not _STORED:
                return outcome  # the frame id was seen before: its original answer
            self._start_fan_out(event, connection_id)
            return answer
        raise RuntimeError("could not create the group after many attempts")

    def add(self, actor: Identity, connection_id: str | None, request: GroupAddRequest) -> Frame:
        consented: set[str] = set()  # checked on an earlier attempt (a retry reads only the rest)

        def plan(head: GroupHead, mine: Membership) -> _Plan | None:
            _require(mine, MANAGERS, "only the owner and admins add members")
            if request.role == "admin":
                _require(mine, ("owner",), "only the owner adds admins")
            candidates = [m for m in request.members if m != actor]
            already = self._store.memberships(candidates, request.conversation_id)
            new = [m for m in candidates if m.key not in already]
            if not new:
                return None
            if head.members_count + len(new) > self._member_limit:
                raise GroupFullError(f"a group has at most {self._member_limit} members")
            self._require_consent(actor, [m for m in new if m.key not in consented])
            consented.update(m.key for m in new)
            return _Plan({"type": "joined", "members": [m.to_json() for m in new], "role": request.role},
                         Change(MANAGERS, joins=[(m, request.role) for m in new]))
        return self._change(actor, connection_id, request.client_id, request.conversation_id, plan)

    def remove(self, actor: Identity, connection_id: str | None, request: GroupRemoveRequest) -> Frame:
        def plan(head: GroupHead, mine: Membership) -> _Plan | None:
            _require(mine, MANAGERS, "only the owner and admins remove members")
            if request.member == actor:
                raise NotAllowedError("use group_leave to leave a group")
            theirs = self._store.membership(request.member, request.conversation_id)
            if theirs is None:
                raise NotMemberError("that identity is not a member of this group")
            if theirs.role == "owner":
                raise NotAllowedError("nobody removes the owner")
            if theirs.role == "admin":
                _require(mine, ("owner",), "only the owner removes an admin")
            return _Plan({"type": "removed", "member": request.member.to_json()},
                         Change(MANAGERS, leaves=[(request.member, _role(theirs))]), removed=request.member)
        return self._change(actor, connection_id, request.client_id, request.conversation_id, plan)

    def leave(self, actor: Identity, connection_id: str | None, request: GroupLeaveRequest) -> Frame:
        def plan(head: GroupHead, mine: Membership) -> _Plan | None:
            if mine.role == "owner" and head.members_count > 1:
                raise OwnerMustStayError("hand ownership on (group_role) before leaving")
            # no longer on the roster, the leaver's other devices get `left` pushed directly, as
            # a removed member gets `removed` (its sending connection has the answer too)
            return _Plan({"type": "left"}, Change((_role(mine),), leaves=[(actor, _role(mine))]),
                         removed=actor)
        return self._change(actor, connection_id, request.client_id, request.conversation_id, plan)

    def rename(self, actor: Identity, connection_id: str | None, request: GroupRenameRequest) -> Frame:
        def plan(head: GroupHead, mine: Membership) -> _Plan | None:
            _require(mine, MANAGERS, "only the owner and admins rename the group")
            if head.title == request.title:
                return None
            return _Plan({"type": "renamed", "title": request.title}, Change(MANAGERS, title=request.title))
        return self._change(actor, connection_id, request.client_id, request.conversation_id, plan)

    def set_role(self, actor: Identity, connection_id: str | None, request: GroupRoleRequest) -> Frame:
        def plan(head: GroupHead, mine: Membership) -> _Plan | None:
            _require(mine, ("owner",), "only the owner sets roles")
            if request.member == actor:
                if request.role == "owner":
                    return None
                raise NotAllowedError("hand ownership on (role \"owner\" to another member) first")
            theirs = self._store.membership(request.member, request.conversation_id)
            if theirs is None:
                raise NotMemberError("that identity is not a member of this group")
            if theirs.role == request.role:
                return None
            event = {"type": "role", "member": request.member.to_json(), "role": request.role}
            if request.role == "owner":  # hand ownership on: the old owner becomes an admin
                return _Plan(event, Change(("owner",), roles=[(request.member, _role(theirs), "owner"),
                                                              (actor, "owner", "admin")],
                                           owner=request.member))
            return _Plan(event, Change(("owner",), roles=[(request.member, _role(theirs), request.role)]))
        return self._change(actor, connection_id, request.client_id, request.conversation_id, plan)

    def _change(self, actor: Identity, connection_id: str | None, client_id: str, group_id: str,
                planner: Planner) -> Frame:
        record = self._store.idempotent(actor, client_id)
        if record is not None:
            return self._repeat(record, connection_id)
        counter = self._limits.send_window(actor) if self._limits else None
        for _ in range(MAX_RETRIES):
            head = self._store.head(group_id)  # first: see the module's docstring
            mine = self._store.membership(actor, group_id) if head is not None else None
            if head is None or mine is None:
                raise NotMemberError("not a member of this group")
            plan = planner(head, mine)
            if plan is None:
                return {"type": "group_changed", "conversation_id": group_id, "seq": None, "time": None}
            seq = head.last_seq + 1
            event = EventMessage(group_id, seq, actor, client_id, self._now(), plan.event)
            answer = {"type": "group_changed", "conversation_id": group_id, "seq": seq, "time": event.time_ms}
            outcome = self._commit(actor, partial(self._store.change, event, seq - 1, plan.change, answer,
                                           self._groups_limit, counter), connection_id)
            if outcome is _CONFLICT:
                continue  # another change or message came first: read again
            if outcome is not _STORED:
                return outcome  # the frame id was seen before: its original answer
            self._start_fan_out(event, connection_id)
            if plan.removed is not None:
                self._push_removed(plan.removed, event.to_frame())
            return answer
        raise RuntimeError("could not store the group change after many attempts")

    def _commit(self, actor: Identity, write: Callable[[], None], connection_id: str | None) -> Frame:
        """One attempt at a change's transaction: _STORED, _CONFLICT (the head or an id moved:
        try again), or the original answer of a frame id seen before. Refusals raise."""
        try:
            write()
        except GroupConflict:
            return _CONFLICT
        except DuplicateChange as duplicate:
            return self._repeat(duplicate.record, connection_id)
        except LimitExceeded as exceeded:
            raise self._refusal(exceeded) from None
        except TooManyGroups as refused:
            raise self._too_many(actor, refused.identity) from None
        return _STORED

    def _require_consent(self, actor: Identity, added: list[Identity]) -> None:
        """Every identity in `added` has itself written to `actor` in their 1:1 conversation,
        or the whole frame is refused with `cannot_add`. Only that exact conversation counts: a
        visitor's link to a user widens nothing (the user's conversations with the visitor's
        peers are other conversations, and the visitor's own writes are under its own key)."""
        if not added:
            return
        wrote = self._store.wrote([(m, direct_conversation_id(m, actor)) for m in added])
        if any(m.key not in wrote for m in added):
            raise CannotAddError(CANNOT_ADD)

    def _too_many(self, actor: Identity, identity: Identity) -> Exception:
        """A count refused in the transaction: the actor's own is `too_many_groups`; anyone
        else's is `cannot_add`, the same answer as for a stranger (never the count)."""
        if identity == actor:
            return TooManyGroupsError(f"you are already in {self._groups_limit} groups")
        return CannotAddError(CANNOT_ADD)

    def _repeat(self, record: IdempotencyRecord, connection_id: str | None) -> Frame:
        """A frame id seen before: its original answer, and its event pushed again (the first
        try may have stopped between storing and pushing; members drop the repeat by seq)."""
        group_id, seq = record.conversation_id, record.seq
        message = self._store.message(group_id, seq)
        answer = record.answer
        if answer is None:  # the id was used by a `send`: the answer names what it became
            answer = {"type": "group_changed", "conversation_id": group_id, "seq": seq,
                      "time": message.time_ms if message else None}
        if message is not None and message.event:
            event = EventMessage(group_id, seq, message.sender, message.client_id, message.time_ms,
                                 dict(message.event))
            self._start_fan_out(event, connection_id)
            if event.removed is not None:
                self._push_removed(event.removed, event.to_frame())
        return dict(answer)

    def _start_fan_out(self, event: EventMessage, connection_id: str | None) -> None:
        """The change's fan-out job; one that cannot be enqueued raises (logic/fanout.py
        FanoutNotStarted: `internal_error`), and the frame's retry, a repeat, starts it again."""
        if self._fan_out is not None:
            self._fan_out(event.group_id, event.seq, event.to_frame(), connection_id)

    def _push_removed(self, member: Identity, frame: Frame) -> None:
        """The roster no longer has the removed member, so the fan-out does not reach it."""
        try:
            self._router.push_to(member, frame)
        except Exception:
            observability.failed("group_removed_push_failed", receiver=member.key)

    # -- reads -------------------------------------------------------------------------------
    def members(self, actor: Identity, request: GroupMembersRequest) -> Frame:
        """One page of the members, in identity order."""
        self._member_of(actor, request.conversation_id)
        head = self._store.head(request.conversation_id)
        assert head is not None, "a membership's group has a head"
        page, after = self._store.roster_page(request.conversation_id, request.after, request.limit)
        return {"type": "group_members", "conversation_id": request.conversation_id,
                "title": head.title, "members_count": head.members_count,
                "members": [{"member": m.member.to_json(), "role": m.role, "joined_seq": m.joined_seq}
                            for m in page],
                "more": after is not None, "cursor": None if after is None else encode_roster_cursor(after)}

    def receipts(self, actor: Identity, request: ReceiptsRequest) -> Frame:
        """How many members (who had joined by `seq`, other than its sender) have acked / read
        up to `seq`, and one page of them. Reads the whole roster and every such member's
        membership (cursors and its `wrote` mark): one Query and one BatchGetItem per 100
        members.

        Read never passes acked (as the 1:1 list's peer_read_seq, §14.3): a member's read mark
        also moves to its own sends, past earlier messages it may not have received; the stored
        cursors keep their meaning, the answer reports min(read, acked). A member the privacy
        rule hides (logic/privacy.py: a visitor that never wrote in the group) is reported
        neither acked nor read, except to itself."""
        mine = self._member_of(actor, request.conversation_id)
        head = self._store.head(request.conversation_id)
        assert head is not None, "a membership's group has a head"
        if request.seq > head.last_seq or request.seq < mine.joined_seq:
            raise AckBeyondLastError(f"this group's messages for you are {mine.joined_seq} to {head.last_seq}")
        message = self._store.message(request.conversation_id, request.seq)
        assert message is not None, "every seq up to the head exists"
        counted = [m.member for m in self._store.roster(request.conversation_id)
                   if m.joined_seq <= request.seq and m.member != message.sender]
        cursors = self._store.memberships(counted, request.conversation_id)
        states = []
        for member in counted:
            c = cursors.get(member.key)
            shown = member == actor or may_reveal(member, c)  # one's own state is no secret
            acked = shown and c is not None and c.acked_seq >= request.seq
            read = acked and c is not None and c.read_seq >= request.seq
            states.append((member, acked, read))
        listed = [s for s in states if request.after is None or s[0].key > request.after]
        page, more = listed[:request.limit], len(listed) > request.limit
        return {"type": "receipts", "conversation_id": request.conversation_id, "seq": request.seq,
                "members_count": head.members_count,
                "acked": sum(1 for _, acked, _ in states if acked), "read": sum(1 for _, _, read in states if read),
                "members": [{"member": who.to_json(), "acked": acked, "read": read} for who, acked, read in page],
                "more": more, "cursor": encode_roster_cursor(page[-1][0].key) if more else None}

    def _member_of(self, actor: Identity, group_id: str) -> Membership:
        mine = self._store.membership(actor, group_id)
        if mine is None:
            raise NotMemberError("not a member of this group")
        return mine

    def _now(self) -> int:
        return int(self._clock() * 1000)

    def _refusal(self, exceeded: LimitExceeded) -> Exception:
        assert self._limits is not None  # only a counted change can exceed
        return self._limits.refusal(exceeded)


def _require(membership: Membership, roles: tuple[str, ...], why: str) -> None:
    if membership.role not in roles:
        raise NotAllowedError(why)


def _role(membership: Membership) -> str:
    """A group membership's role (every one has one: the join writes it)."""
    assert membership.role is not None, "a group membership has a role"
    return membership.role
