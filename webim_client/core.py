"""The client's protocol core, no I/O: every frame the server sends goes through `dispatch`, and
every protocol decision the client makes (what to ack, when to pull, what a refusal means, what
our own group change's answer fills) is taken here, over the pure modules inbox.py, outbox.py and
typing.py. `Client` (client.py) owns one and does only the I/O around it: the transport,
requests and their timeouts, the pull's pages, reconnecting.

The I/O is injected: `transmit(frame) -> bool` hands a frame to the connection (False: not
connected), `new_id()` names our ack frames, `timers` runs the clocks, and `emit(event, data)`
tells the client what happened (the events below). tests/test_client_scenarios.py drives this
very object over a fake transmit and a fake clock, as frontend/tests/scenarios.test.mjs drives
frontend/lib/core.js, the JS mirror: the shared scenarios in tests/client_scenarios/ test the
clients' own dispatch, not a copy of it.

Events (`emit(name, data)`), the same names as the JS core's:
  "message"  a message frame (our own included), in seq order, once
  "outgoing" an outbox view: a message we send changed state
  "delivered", "seen"  {conversation_id, seq, by}: receipts (applied to the outbox already)
  "presence" the presence frame
  "typing"   {conversation_id, from}: a `typing` frame (ours from another device too)
  "typing_changed"  {conversation_id, typing: [identity]}: who is shown typing there changed
  "gone"     {conversation_id, code}: a group we held refused a frame naming it (`not_member`)
  "pull"     a pull is needed (a gap, a `resync`)
  "ping"     the settle check wants a `ping` with `groups: true` (§13.8)
  "connection_gone"  the server forgot this connection: reconnect at once (§11)
  "message_deleted"  {conversation_id, seq, by, tombstone_seq}: message `seq` was deleted for
             everyone (§16): show it as "message deleted" (its `deleted` event, shown in order)
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from webim_client.inbox import Frame, Inbox, InboxHooks, InboxSettings, Timers, is_group
from webim_client.outbox import Outbox
from webim_client.typing import Typing

KEEP_ACK_IDS = 500  # recent ack ids remembered for a refusal (`not_member`) naming only the id
KEEP_CHANGES = 200  # group changes remembered for a late answer
KEEP_DELETED = 2000  # (conversation, seq) known deleted (§16): a late copy of one shows no text


def deleted_event_of(message: Frame) -> dict[str, Any] | None:
    """The `deleted` event a message carries (§16), if it is one."""
    event = message.get("event")
    if isinstance(event, dict) and event.get("type") == "deleted" and isinstance(event.get("seq"), int):
        return event
    return None


def tombstone(message: Frame) -> Frame:
    """A message as deleted for everyone: no text, no photo, `deleted: true` (§16)."""
    return {**{k: v for k, v in message.items() if k != "image"}, "text": "", "deleted": True}


@dataclass(frozen=True)
class CoreSettings:
    """The protocol's clocks and counts, in milliseconds (the scenarios' `config` names them)."""

    ack_timeout_ms: float = 3000
    max_attempts: int = 4
    inbox: InboxSettings = InboxSettings()


@dataclass
class _Change:
    request: Frame  # the group_* frame we sent
    pending: bool = True  # no answer yet: its event may still fill a seq (a gap it explains)


def _receipt(frame: Frame) -> Frame:
    return {"conversation_id": frame["conversation_id"], "seq": frame["seq"], "by": frame.get("by")}


def _identity(value: Any) -> Frame:
    return {"kind": value.get("kind"), "id": value.get("id")} if isinstance(value, dict) else {}


def _members(members: Any, me: Frame | None) -> list[Frame]:
    seen = {(me.get("kind"), me.get("id"))} if me else set()
    out = []
    for member in members or []:
        key = (member.get("kind"), member.get("id"))
        if key not in seen:
            seen.add(key)
            out.append(_identity(member))
    return out


def event_of(request: Frame | None, answer: Frame, me: Frame | None) -> Frame:
    """The event our change stored, rebuilt from our request (§13.3), as frontend/lib/groups.js does."""
    action = (request or {}).get("action")
    request = request or {}
    events: dict[Any, Callable[[], Frame]] = {
        "group_create": lambda: {"type": "created", "title": answer.get("title", request.get("title")),
                                 "members": [*([_identity(me)] if me else []), *_members(request.get("members"), me)]},
        "group_add": lambda: {"type": "joined", "members": _members(request.get("members"), None),
                              "role": request.get("role") or "member"},
        "group_remove": lambda: {"type": "removed", "member": _identity(request.get("member"))},
        "group_leave": lambda: {"type": "left"},
        "group_rename": lambda: {"type": "renamed", "title": request.get("title")},
        "group_role": lambda: {"type": "role", "member": _identity(request.get("member")), "role": request.get("role")},
    }
    if action in events:
        return events[action]()
    # an answer whose request we no longer know: a type no one shows, still filling its seq
    if answer.get("type") == "group":
        return {"type": "created", "title": answer.get("title"), "members": [_identity(me)] if me else []}
    return {"type": "changed"}


class ClientCore:
    def __init__(self, timers: Timers, transmit: Callable[[Frame], bool], new_id: Callable[[], str],
                 emit: Callable[[str, Any], None], settings: CoreSettings | None = None) -> None:
        settings = settings or CoreSettings()
        self.transmit = transmit
        self.new_id = new_id
        self.emit = emit
        self.me: Frame | None = None
        self.online = False
        self._ack_ids: dict[str, str] = {}  # our recent ack frames' ids -> conversation (a refusal names only the id)
        # Acks are quiet, except the last ones before a close (`answered_acks`): a quiet ack
        # racing the connection's close can be lost unseen; an answered one is waited for.
        self.answered_acks = False
        self.unanswered_acks: set[str] = set()
        self._changes: dict[str, _Change] = {}  # our group changes by id: their answers fill seqs
        self._deleted: dict[tuple[str, int], None] = {}  # known deleted, oldest first (§16)
        self.outbox = Outbox(transmit, timers, ack_timeout_ms=settings.ack_timeout_ms,
                             max_attempts=settings.max_attempts, on_change=self._outgoing)
        self.inbox = Inbox(timers, settings.inbox, InboxHooks(
            in_flight=self._in_flight, on_show=self._show, on_ack=self._ack,
            on_pull=lambda: emit("pull", None), on_ping=lambda: emit("ping", None)))
        self.typing = Typing(transmit, timers, on_change=self._typing_changed)
        self._handlers: dict[str, Callable[[Frame], None]] = {
            "sent": self._accepted, "message": self.receive,
            "delivered": self._delivered, "seen": self._seen, "typing": self._typing,
            "acked": self._acked,
            "presence": lambda frame: emit("presence", frame), "group": self._changed,
            "group_changed": self._changed, "pong": lambda frame: self.inbox.tails(frame.get("groups")),
            "deleted": self._deleted_answer,
            "resync": lambda _: emit("pull", None),  # frames were not kept for us: the store has them
            "error": self._refused,
        }

    # -- state the client sets ------------------------------------------------------------
    def set_identity(self, me: Frame | None) -> None:
        """Who this connection proved to be: a `joined` naming us starts a group, our own typing
        (another device) is never shown, a copy of our own message is its `sent`."""
        self.me = self.inbox.me = self.typing.me = me

    def set_online(self, online: bool) -> None:
        """Connected: pending sends go again (the same frames) and the settle check runs;
        offline the clocks stop (waiting offline never fails a message)."""
        self.online = online
        self.outbox.set_online(online)
        self.inbox.set_online(online)

    # -- frames in ------------------------------------------------------------------------
    def dispatch(self, frame: Frame) -> None:
        """Any frame from the server; types added later (§1) and answers to requests pass."""
        handler = self._handlers.get(str(frame.get("type")))
        if handler is not None:
            handler(frame)

    def receive(self, message: Frame, from_pull: bool = False, own: bool = False) -> None:
        """A `message` (pushed or pulled), or our own copy built from an answer (`own`)."""
        # A copy of our own message (pulled, or pushed to our other device) is its `sent` too: a
        # message whose `sent` was lost, or that was shown failed, was stored after all.
        if not own and message.get("from") == self.me and self.outbox.has(message.get("client_id", "")):
            self.outbox.accepted({"ref": message["client_id"], "conversation_id": message["conversation_id"],
                                  "seq": message["seq"], "time": message.get("time")})
        if not own:
            self.typing.message(message)  # its sender stopped typing there (before it is shown)
        self.inbox.receive(self._tombstone_wins(message), from_pull=from_pull, own=own)

    def _tombstone_wins(self, message: Frame) -> Frame:
        """§16: a seq we know deleted (its event came, or a copy with `deleted`) is taken as a
        tombstone whatever copy arrives later (a retransmission read before the delete)."""
        conversation_id = str(message.get("conversation_id"))
        event = deleted_event_of(message)
        if event is not None:
            self._remember_deleted(conversation_id, int(event["seq"]))
        if message.get("deleted"):
            self._remember_deleted(conversation_id, int(message["seq"]))
        elif (conversation_id, message.get("seq")) in self._deleted:
            return tombstone(message)
        return message

    def _remember_deleted(self, conversation_id: str, seq: int) -> None:
        self._deleted[(conversation_id, seq)] = None
        while len(self._deleted) > KEEP_DELETED:
            del self._deleted[next(iter(self._deleted))]

    def _deleted_answer(self, answer: Frame) -> None:
        """`deleted`, the answer to our own delete (§16): its event is in the conversation's seq
        (pushed to the others, not to us), so it fills that seq as `sent` does."""
        seq, tombstone_seq = answer.get("seq"), answer.get("tombstone_seq")
        if not isinstance(seq, int) or not isinstance(tombstone_seq, int) or not answer.get("conversation_id"):
            return
        self.receive({"type": "message", "conversation_id": answer["conversation_id"], "seq": tombstone_seq,
                      "from": self.me, "text": "", "time": answer.get("time"), "client_id": f"deleted:{seq}",
                      "event": {"type": "deleted", "seq": seq, "by": self.me}}, own=True)

    def pulled(self) -> None:
        """A pull ended (every page): see Inbox.pulled."""
        self.inbox.pulled()

    # -- what the user does ---------------------------------------------------------------
    def send(self, frame: Frame) -> Frame:
        """A `send` frame (with its id) into the ack queue (given `last_seq` where we know the
        conversation); its view."""
        conversation_id = frame.get("conversation_id")
        have = self.inbox.have(conversation_id) if conversation_id else None
        if have:
            frame["last_seq"] = have  # a hint; the server's condition decides
        return self.outbox.add(frame)

    def change_started(self, request: Frame) -> None:
        """A group change (a `group_*` frame) is on its way: its answer fills a seq as `sent`
        does, and until then a gap its event may fill waits for it."""
        self._changes.pop(request["id"], None)  # re-inserted last: the oldest are forgotten first
        self._changes[request["id"]] = _Change(request)
        while len(self._changes) > KEEP_CHANGES:
            del self._changes[next(iter(self._changes))]

    def change_ended(self, frame_id: str) -> None:
        """The change was answered, or given up: it explains no gap any more."""
        change = self._changes.get(frame_id)
        if change is not None:
            change.pending = False
        self.inbox.recheck()  # a gap this change explained may now need a pull

    def is_change(self, frame_id: Any) -> bool:
        return frame_id in self._changes

    def left(self, conversation_id: str) -> None:
        """We left this group (the answer came): nothing more for it (also when the answer
        filled no seq)."""
        if not self.inbox.gone(conversation_id):
            self.inbox.leave(conversation_id)

    def group_gone(self, conversation_id: Any) -> None:
        """`not_member` for a group we hold (removed while away): dropped, never retried."""
        if not isinstance(conversation_id, str) or not is_group(conversation_id) or self.inbox.gone(conversation_id):
            return
        self.inbox.leave(conversation_id)  # no acks, pulls or `since` for it any more
        self.emit("gone", {"conversation_id": conversation_id, "code": "not_member"})

    # -- the frames' handlers -------------------------------------------------------------
    def _accepted(self, sent: Frame) -> None:
        view = self.outbox.accepted(sent)
        if view is None:
            return  # a second msg:A for a retransmitted msg:R
        # our own message is part of the conversation: it fills its seq
        message = {"type": "message", "conversation_id": sent["conversation_id"], "seq": sent["seq"],
                   "from": self.me, "text": view["text"], "time": sent.get("time"), "client_id": view["id"]}
        self.receive(message, own=True)

    def _changed(self, answer: Frame) -> None:
        """`group` / `group_changed`, the answer to our own change: its event message is in the
        group's seq (pushed to the other members, not to us), so it fills that seq as `sent` does."""
        change = self._changes.get(str(answer.get("ref")))
        if change is not None:
            change.pending = False
        seq = answer.get("seq")
        if isinstance(seq, bool) or not isinstance(seq, int) or not answer.get("conversation_id"):
            return  # a change that changed nothing (`seq` null)
        message = {"type": "message", "conversation_id": answer["conversation_id"], "seq": seq, "from": self.me,
                   "text": "", "time": answer.get("time"), "client_id": answer.get("ref"),
                   "event": event_of(change.request if change else None, answer, self.me)}
        self.receive(message, own=True)

    def _delivered(self, frame: Frame) -> None:
        self.outbox.delivered(frame["conversation_id"], int(frame["seq"]))
        self.emit("delivered", _receipt(frame))

    def _seen(self, frame: Frame) -> None:
        self.outbox.seen(frame["conversation_id"], int(frame["seq"]))
        self.emit("seen", _receipt(frame))

    def _typing(self, frame: Frame) -> None:
        self.typing.received(frame)
        self.emit("typing", {"conversation_id": frame.get("conversation_id"), "from": frame.get("from")})

    def _refused(self, frame: Frame) -> None:
        """An error frame. `connection_gone`: the server no longer knows this connection and did
        nothing with the frame: reconnect at once (the reconnect sends pending sends again).
        `not_member` for a group we hold (an ack or a send; requests are handled where they
        wait): we were removed while away, so the group is dropped, never retried."""
        ref = str(frame.get("ref") or "")
        self.unanswered_acks.discard(ref)
        conversation_id = self._ack_ids.pop(ref, None)
        view = self.outbox.rejected(ref, frame)
        if view is not None:
            conversation_id = view["conversation_id"]
        if frame.get("code") == "connection_gone":
            self.emit("connection_gone", frame)
        elif frame.get("code") == "banned":  # an operator banned us (docs/operator.md): stop, never reconnect
            self.emit("banned", frame)
        elif frame.get("code") == "not_member":
            self.group_gone(conversation_id)

    # -- the modules' callbacks -----------------------------------------------------------
    def _in_flight(self, conversation_id: str) -> int:
        """Our sends and group changes that may still fill a seq here (a group_create's event
        is seq 1 of a new group: it fills no gap anywhere)."""
        changes = sum(1 for change in self._changes.values()
                      if change.pending and change.request.get("conversation_id") == conversation_id)
        return self.outbox.in_flight(conversation_id) + changes

    def _show(self, message: Frame) -> None:
        self.emit("message", message)
        event = deleted_event_of(message)
        if event is not None:  # the app replaces message `seq` by "message deleted"
            self.emit("message_deleted", {"conversation_id": message["conversation_id"], "seq": event["seq"],
                                          "by": event.get("by"), "tombstone_seq": message["seq"]})

    def _outgoing(self, view: Frame) -> None:
        self.emit("outgoing", view)
        self.inbox.recheck()  # a gap our send explained may now need a pull

    def _ack(self, conversation_id: str, seq: int) -> None:
        """Quiet: the server answers only a refusal, not `acked` (one billed frame fewer per
        message); the cursor is where this ack puts it. Were the ack lost, the next pull
        (without `since` here) starts lower: duplicates, dropped and acked again."""
        if not self.online:
            return
        ack_id = self.new_id()
        if not self.transmit({"action": "ack", "id": ack_id, "conversation_id": conversation_id, "seq": seq,
                              "quiet": not self.answered_acks}):
            return
        if self.answered_acks:
            self.unanswered_acks.add(ack_id)
        self._ack_ids[ack_id] = conversation_id
        if len(self._ack_ids) > KEEP_ACK_IDS:
            del self._ack_ids[next(iter(self._ack_ids))]  # the oldest: its refusal came long ago, if at all
        self.inbox.acked(conversation_id, seq)

    def _acked(self, frame: Frame) -> None:
        self.unanswered_acks.discard(str(frame.get("ref") or ""))
        self.inbox.acked(frame["conversation_id"], int(frame["seq"]))

    def _typing_changed(self, conversation_id: str, people: list[Frame]) -> None:
        self.emit("typing_changed", {"conversation_id": conversation_id, "typing": people})
