"""The receiving half of reliable delivery (docs/protocol.md §9c-§9g), without I/O.

Messages leave here in seq order, once, per conversation; what the client has is acked
cumulatively, once per burst; a seq past a gap waits, and a pull is asked for only when the gap
cannot be explained otherwise (§9c): missing seqs that may be this client's own sends still
waiting for `sent` wait for them, and any other gap gets a short grace first (pushes from
different Lambdas can arrive out of order). Timers are injected; the client turns the callbacks
into frames. The mirror of frontend/lib/inbox.js: tests/client_scenarios/ runs on both.

Groups (§13, ids `g_...`) differ in two ways: acks are batched (at most every `group_ack_ms`,
at once on the `group_ack_messages`-th new message since the last ack, and all pending acks go
at once on `flush()`, before idle or close), and a group learned by push starts at the event
that adds us (`created`, or `joined` naming `me`): have = its seq - 1, also when added again.

Groups have no retransmission (§13.1), so a member that lost the last pushes of a burst has no
later message to reveal the gap. The tail check bounds that (§13.8): while we hold a group the
keepalive `ping` carries `groups: true` (`holds_group()`), and its `pong` names each group's
last seq; `tails()` takes them as a known seq past `have` (a gap like any other: the grace,
then one pull with `since`). The settle check runs only on evidence of loss: after a group
push that came past an unexplained gap (or a gap pull), once no group push has come for
`settle_check_ms` (Q), `on_ping` asks for one such ping at once. A fault-free chat costs
nothing extra. A group we are refused in (`not_member`, removed while away) is dropped by
`leave()` like one we were removed from.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

Frame = dict[str, Any]
MAX_SINCE = 100  # entries in one sync's `since` (the server refuses more)
START_EVENTS = ("created", "joined")  # an event that adds us starts the group for us (§13.5)


def is_group(conversation_id: str) -> bool:
    return conversation_id.startswith("g_")


class Timers(Protocol):
    """setTimeout/clearTimeout, in milliseconds (asyncio's loop, or a test clock)."""

    def set_timeout(self, action: Callable[[], None], delay_ms: float) -> Any: ...

    def clear_timeout(self, handle: Any) -> None: ...


@dataclass
class _Conversation:
    have: int | None = None  # every seq up to here is received (None: not known yet)
    waiting: dict[int, Frame] = field(default_factory=dict)  # received past a gap
    acked: int = 0  # the server's acked cursor, from `acked`
    grace: Any = None  # the gap's grace timer
    last_ack: int = 0  # the seq our last ack named (or where we started): K counts from here
    gone: bool = False  # a group we were removed from or left: nothing more until added again
    tail: int = 0  # the group's last seq as a `pong` told it (§13.8): a seq known to exist
    checked: int = 0  # start unknown: a complete pull found nothing for us up to this tail
    armed: int = 0  # start unknown: the tail known when the running pull began


def _nothing(*_: Any) -> None:
    return None


@dataclass(frozen=True)
class InboxSettings:
    """ack_delay_ms: a 1:1 burst's one ack; group_ack_ms / group_ack_messages: T and K of the
    batched group acks (§13.5); gap_grace_ms: how long a gap waits for a reordered push;
    settle_check_ms: Q of the settle check (§13.8; 0: off)."""

    ack_delay_ms: float = 20
    gap_grace_ms: float = 1000
    group_ack_ms: float = 2000
    group_ack_messages: int = 20
    settle_check_ms: float = 3000


def _none_in_flight(_: str) -> int:
    return 0


@dataclass(frozen=True)
class InboxHooks:
    """What the inbox asks of its client: in_flight(conversation_id) -> how many of our sends (or
    group changes) may still get a seq there; on_show(message) in order; on_ack(conversation_id,
    seq) to send; on_pull() for a gap; on_ping() for the settle check's `ping` with `groups: true`."""

    in_flight: Callable[[str], int] = _none_in_flight
    on_show: Callable[[Frame], None] = _nothing
    on_ack: Callable[[str, int], None] = _nothing
    on_pull: Callable[[], None] = _nothing
    on_ping: Callable[[], None] = _nothing


class Inbox:
    def __init__(self, timers: Timers, settings: InboxSettings | None = None, hooks: InboxHooks | None = None,
                 me: Frame | None = None) -> None:
        """me: our identity (a `joined` event naming it starts a group)."""
        settings = settings or InboxSettings()
        hooks = hooks or InboxHooks()
        self.timers = timers
        self.ack_delay_ms = settings.ack_delay_ms
        self.group_ack_ms = settings.group_ack_ms
        self.group_ack_messages = settings.group_ack_messages
        self.gap_grace_ms = settings.gap_grace_ms
        self.settle_check_ms = settings.settle_check_ms
        self.me = me
        self.in_flight = hooks.in_flight
        self.on_show = hooks.on_show
        self.on_ack = hooks.on_ack
        self.on_pull = hooks.on_pull
        self.on_ping = hooks.on_ping
        self.duplicates = 0
        self._conversations: dict[str, _Conversation] = {}
        self._acks: dict[str, Any] = {}
        self._online = True
        self._settle: Any = None  # the settle check's timer (Q after the last group push)
        self._suspect = False  # this burst showed a loss (an unexplained gap): check its tail

    def _conversation(self, conversation_id: str) -> _Conversation:
        return self._conversations.setdefault(conversation_id, _Conversation())

    def receive(self, message: Frame, from_pull: bool = False, own: bool = False) -> dict[str, Any]:
        """Take one `message` frame (pushed, retransmitted, pulled, or our own copy built from
        `sent`). Returns {ready, duplicate, gap, ack} as the JS Inbox does."""
        conversation_id = message["conversation_id"]
        conversation = self._conversation(conversation_id)
        seq = int(message["seq"])
        if not self._admit(message, conversation, seq):
            return {"ready": [], "duplicate": True, "gap": False, "ack": None}  # a late copy from before we went
        duplicate, ready = self._take(conversation_id, conversation, message, from_pull=from_pull, own=own)
        ended = not duplicate and self._ends_us(message)
        if ended:
            ready = self._end(conversation, ready, seq)
        for shown in ready:
            self.on_show(shown)
        if ended:
            self.leave(conversation_id)
        self._check_gap(conversation_id, conversation)
        pushed = is_group(conversation_id) and not from_pull and not own
        self._after_group_message(conversation_id, conversation, pushed)
        return {"ready": ready, "duplicate": duplicate, "gap": bool(conversation.waiting),
                "ack": conversation.have or None}

    def _admit(self, message: Frame, conversation: _Conversation, seq: int) -> bool:
        """The event adding us starts the group there (nothing before it is ours); a group we are
        out of takes nothing else."""
        if self._starts_us(message) and (conversation.gone or conversation.have is None or conversation.have < seq - 1):
            conversation.gone = False
            self._start(conversation, seq - 1)
            return True
        return not conversation.gone

    def _take(self, conversation_id: str, conversation: _Conversation, message: Frame, *, from_pull: bool,
              own: bool) -> tuple[bool, list[Frame]]:
        """(duplicate, messages now in order)."""
        seq = int(message["seq"])
        if conversation.have is None and seq != 1 and not from_pull:
            conversation.waiting.setdefault(seq, message)  # where does it start? wait, then ask
            return False, []
        if conversation.have is None:
            self._start(conversation, seq - 1)  # a pull starts right after the acked cursor
        have = conversation.have
        assert have is not None
        # A duplicate is dropped (and acked again: our earlier ack may have been lost); a pull
        # that just told where the conversation starts may release what was waiting.
        duplicate = seq <= have or seq in conversation.waiting
        if duplicate:
            self.duplicates += 1
        else:
            conversation.waiting[seq] = message
        ready = self._release(conversation)
        if not own and (conversation.have or 0) > 0:
            self._ack_soon(conversation_id)
        return duplicate, ready

    @staticmethod
    def _end(conversation: _Conversation, ready: list[Frame], seq: int) -> list[Frame]:
        """The event taking us out (at seq) may overtake messages before it (the server pushes
        `removed` directly, the rest is fanned out): nothing is ours after it and a gap before it
        will never fill, so what came up to it is shown, in seq order, and nothing past it."""
        shown = [m for m in ready if int(m["seq"]) <= seq]
        shown.extend(conversation.waiting.pop(s) for s in sorted(conversation.waiting) if s <= seq)
        return shown

    def acked(self, conversation_id: str, seq: int) -> None:
        """`acked` (ack:A): the server's cursor for us in this conversation."""
        conversation = self._conversation(conversation_id)
        conversation.acked = max(conversation.acked, int(seq))

    def have(self, conversation_id: str) -> int | None:
        known = self._conversations.get(conversation_id)
        return None if known is None else known.have

    def since(self) -> list[dict[str, int]]:
        """`since` for the next sync, as chunks of at most 100 entries (one sync each): only the
        conversations that need it, those with a gap first. Elsewhere the server's acked cursor
        is where we are, so leaving them out costs nothing."""
        for conversation in self._conversations.values():
            if conversation.have is None:
                conversation.armed = conversation.tail  # this pull will tell whether it is past it
        entries = [(cid, c) for cid, c in self._conversations.items()
                   if c.have is not None and (c.waiting or c.have > c.acked or c.tail > c.have)]
        entries.sort(key=lambda entry: not entry[1].waiting)  # stable, like the JS sort
        pairs = [(cid, c.have) for cid, c in entries if c.have is not None]
        return [dict(pairs[i:i + MAX_SINCE]) for i in range(0, len(pairs), MAX_SINCE)]

    def pulled(self) -> None:
        """After a complete pull: a conversation whose start is still unknown got nothing from
        the pull, so the server's cursor is at or past its waiting messages; release them from
        there. Gaps still open get a new grace (a pull that failed is asked for again). A group
        whose start is unknown and that got nothing is at or past the tail known when the pull
        began (the server's cursor is): that tail asks for no pull again."""
        for conversation_id, conversation in list(self._conversations.items()):
            if conversation.have is None and conversation.waiting:
                self._start(conversation, min(conversation.waiting) - 1)
                for shown in self._release(conversation):
                    self.on_show(shown)
                self._ack_soon(conversation_id)
            elif conversation.have is None:
                conversation.checked = max(conversation.checked, conversation.armed)
            self._stop_grace(conversation)
            self._check_gap(conversation_id, conversation)

    def member(self, conversation_id: str) -> None:
        """We are in this group (the conversation list names it): the keepalive checks its
        tail even before anything of it arrives."""
        if is_group(conversation_id):
            self._conversation(conversation_id).gone = False

    def holds_group(self) -> bool:
        """Do we hold a group (any of its messages came, or the list named it)? Then the
        keepalive `ping` asks for the groups' last seqs (`groups: true`)."""
        return self._holds_group()

    def tails(self, groups: Any) -> None:
        """A `pong`'s `groups` ({group id: last seq}, §13.8): a group we hold whose last seq is
        past what we have is a gap like one a push shows (the grace, then one pull with
        `since`). Groups we do not hold are ignored (we learn of new groups as before)."""
        if not isinstance(groups, dict):
            return
        for conversation_id, last_seq in groups.items():
            conversation = self._conversations.get(conversation_id)
            if (conversation is None or conversation.gone or not is_group(conversation_id)
                    or isinstance(last_seq, bool) or not isinstance(last_seq, int)):
                continue
            conversation.tail = max(conversation.tail, last_seq)
            self._check_gap(conversation_id, conversation)

    def set_online(self, online: bool) -> None:
        """Offline, no pull can run: the settle check stops (the connect's pull covers the
        time away)."""
        self._online = online
        if not online:
            self._stop_settle()

    def recheck(self) -> None:
        """Our sends in flight changed (a `sent`, a failure): a gap they explained may now need a pull."""
        for conversation_id, conversation in list(self._conversations.items()):
            self._check_gap(conversation_id, conversation)

    def leave(self, conversation_id: str) -> None:
        """We are out of this group (removed, left, or refused `not_member`): no more acks or pulls
        for it (the server would refuse them), nothing shown until an event adds us again, and
        where we were is forgotten: added again (a `joined` naming us, or the list naming it), the
        group starts where that says, never from the seq we left at."""
        conversation = self._conversation(conversation_id)
        conversation.gone, conversation.have = True, None
        conversation.tail = conversation.checked = conversation.armed = 0
        conversation.waiting.clear()
        self._stop_grace(conversation)
        if conversation_id in self._acks:
            self.timers.clear_timeout(self._acks.pop(conversation_id))
        if not self._holds_group():
            self._stop_settle()

    def flush(self) -> None:
        """Before going idle or closing: every pending ack (batched group acks, a 1:1 burst's)
        goes now."""
        for conversation_id in list(self._acks):
            self.timers.clear_timeout(self._acks[conversation_id])
            self._ack_now(conversation_id)

    def gone(self, conversation_id: str) -> bool:
        """Is this group over for us (removed, left, refused), until a `joined` naming us?"""
        known = self._conversations.get(conversation_id)
        return known is not None and known.gone

    def gaps(self) -> list[str]:
        return [cid for cid, c in self._conversations.items() if c.waiting]

    def _holds_group(self) -> bool:
        return any(is_group(cid) and not c.gone for cid, c in self._conversations.items())

    def _after_group_message(self, conversation_id: str, conversation: _Conversation, pushed: bool) -> None:
        """A group push past a gap nothing explains marks the burst (it lost something); every
        group push of a marked burst restarts the settle check's quiet time."""
        if pushed and not conversation.gone:
            known_gap = bool(conversation.waiting) and conversation.have is not None
            if known_gap and self._unexplained(conversation_id, conversation):
                self._suspect = True
            if self._suspect:
                self._settle_soon()
        elif not self._holds_group():
            self._stop_settle()

    def _settle_soon(self) -> None:
        """Q after the last group push of a burst that showed a loss (restarted by each): one
        `ping` with `groups: true`; its `pong` asks for a pull only if a group is behind."""
        if self._settle is not None:
            self.timers.clear_timeout(self._settle)
        self._settle = None
        if not self.settle_check_ms or not self._online:
            self._suspect = False
            return

        def quiet() -> None:
            self._settle, self._suspect = None, False
            if self._online and self._holds_group():
                self.on_ping()

        self._settle = self.timers.set_timeout(quiet, self.settle_check_ms)

    def _stop_settle(self) -> None:
        if self._settle is not None:
            self.timers.clear_timeout(self._settle)
        self._settle, self._suspect = None, False

    def _starts_us(self, message: Frame) -> bool:
        event = message.get("event")
        if not isinstance(event, dict) or event.get("type") not in START_EVENTS:
            return False
        return event.get("type") == "created" or any(self._is_me(m) for m in event.get("members") or [])

    def _is_me(self, identity: Any) -> bool:
        me = self.me or {}
        return isinstance(identity, dict) and (identity.get("kind"), identity.get("id")) == (
            me.get("kind"), me.get("id"))

    def _ends_us(self, message: Frame) -> bool:
        event = message.get("event")
        if not isinstance(event, dict) or self.me is None:
            return False
        return ((event.get("type") == "removed" and self._is_me(event.get("member")))
                or (event.get("type") == "left" and self._is_me(message.get("from"))))

    def _start(self, conversation: _Conversation, have: int) -> None:
        conversation.have = conversation.last_ack = have
        for seq in [s for s in conversation.waiting if s <= have]:
            del conversation.waiting[seq]

    @staticmethod
    def _release(conversation: _Conversation) -> list[Frame]:
        ready: list[Frame] = []
        assert conversation.have is not None
        while conversation.have + 1 in conversation.waiting:
            conversation.have += 1
            ready.append(conversation.waiting.pop(conversation.have))
        return ready

    @staticmethod
    def _missing(conversation: _Conversation) -> int:
        """Seqs missing below the highest waiting one or the tail a `pong` told (for an unknown
        start: every seq below the lowest waiting one, or the tail past what a pull checked)."""
        if conversation.have is None:
            if conversation.waiting:
                return min(conversation.waiting) - 1
            return conversation.tail - conversation.checked
        top = max([conversation.tail, conversation.have, *conversation.waiting])
        return top - conversation.have - len(conversation.waiting)

    def _unexplained(self, conversation_id: str, conversation: _Conversation) -> bool:
        return not conversation.gone and self._missing(conversation) > self.in_flight(conversation_id)

    def _check_gap(self, conversation_id: str, conversation: _Conversation) -> None:
        if not self._unexplained(conversation_id, conversation):
            self._stop_grace(conversation)  # no gap, or one our sends in flight may fill: their `sent` will
            return
        if conversation.grace is not None:
            return

        def expired() -> None:
            conversation.grace = None
            if self._unexplained(conversation_id, conversation):
                if is_group(conversation_id) and conversation.waiting and conversation.have is not None:
                    self._suspect_loss()  # we had to pull: check the burst's tail once it is quiet
                for other in self._conversations.values():
                    self._stop_grace(other)  # one pull covers every conversation (a pong's tails start
                    # their graces at once); `pulled()` gives a gap still open a new grace
                self.on_pull()

        conversation.grace = self.timers.set_timeout(expired, self.gap_grace_ms)

    def _suspect_loss(self) -> None:
        self._suspect = True
        if self._settle is None:
            self._settle_soon()

    def _stop_grace(self, conversation: _Conversation) -> None:
        if conversation.grace is not None:
            self.timers.clear_timeout(conversation.grace)
        conversation.grace = None

    def _ack_soon(self, conversation_id: str) -> None:
        """One cumulative ack per burst: "I have everything up to seq" (never past a gap). In a
        group, at most every T, but at once when K new messages came since the last ack."""
        group = is_group(conversation_id)
        if group:
            conversation = self._conversations[conversation_id]
            since_ack = (conversation.have or 0) - max(conversation.last_ack, conversation.acked)
            if since_ack >= self.group_ack_messages:
                if conversation_id in self._acks:
                    self.timers.clear_timeout(self._acks[conversation_id])
                self._ack_now(conversation_id)
                return
        if conversation_id in self._acks:
            return
        self._acks[conversation_id] = self.timers.set_timeout(
            lambda: self._ack_now(conversation_id), self.group_ack_ms if group else self.ack_delay_ms)

    def _ack_now(self, conversation_id: str) -> None:
        self._acks.pop(conversation_id, None)
        conversation = self._conversations[conversation_id]
        if conversation.have:
            conversation.last_ack = max(conversation.last_ack, conversation.have)
            self.on_ack(conversation_id, conversation.have)
