"""The Python client: the protocol of docs/protocol.md over a transport, as the JS client does it.

Every frame the server sends goes to the protocol core (`core.py`, the mirror of
frontend/lib/core.js; the scenarios in tests/client_scenarios/ drive both cores): the dispatch,
the acks, what a refusal or our own change's answer means, over the pure modules `outbox.py`, the
ack queue (every msg:R waits for msg:A, is sent again with the same id on ack timeout, and is
"failed" after `max_attempts` attempts while connected), `inbox.py` (messages delivered to
`inbox` in seq order, once; cumulative acks; a gap pulled only when nothing else explains it) and
`typing.py`. This module does the I/O: the transport, requests and their timeouts, the offline
pull's pages, reconnecting. Its public calls match the JS ChatClient's (docs/client.md's table).

Groups (docs/protocol.md §13): `create_group`, `add_members`, `remove_member`, `leave_group`,
`rename_group` and `set_role` are idempotent by their frame id, kept across retries as a send's
is (pass `client_id` to repeat one yourself); each answer's event message fills its seq for us.
Group messages and events (`text` "" + `event`) arrive on `inbox` like any message; group acks
are batched (at most every `group_ack` seconds, at once every `group_ack_messages` messages,
flushed by `flush_acks()` and `close()`). Groups have no retransmission, so while we hold a
group the keepalive `ping` carries `groups: true` and a group whose last seq in the `pong` is past
what we have is pulled (the tail check); a burst that showed a loss (a gap) gets one such ping
once no group push has come for `settle_check` seconds (§13.8). A group frame refused
`not_member` (we were removed while away) drops the group: nothing more is acked or pulled for
it, and `groups_gone` hears it.

Keeping the line (protocol.md §6.1): after `keepalive` seconds (540) in which we sent nothing, a
`keepalive` frame, which API Gateway takes itself and does not answer (1 billed message: no
Lambda, no DynamoDB, nothing back), keeps the WebSocket under the gateway's 10-minute idle limit;
it is sent and forgotten. The presence heartbeat is a `ping` at most every `heartbeat` seconds
(2,160: 4 keepalive periods, inside the server's 40-minute presence window), and its `pong` is
what proves an idle line alive. Any frame we send counts as activity, a ping counts as a
heartbeat. On long poll (every poll keeps the line) the keepalive's turn is a ping, as it always
was.

A dead line is found without waiting for the server: an unanswered ping (the heartbeat's, or any
other), a frame that expects an answer (a send, a request) followed by `silence` seconds without
any frame and then an unanswered ping, or any `connection_gone` answer, closes the transport (and
reconnects, §11). A keepalive expects nothing, so an idle line's death is found by the next
heartbeat (within `heartbeat` + `request_timeout`), or sooner when sending it fails.
"""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from webim_client import media as media_http
from webim_client.core import ClientCore, CoreSettings
from webim_client.inbox import Inbox, InboxSettings
from webim_client.outbox import DELIVERED, FAILED, SEEN, SENDING, SENT, Outbox
from webim_client.transport import Frame, Transport
from webim_client.typing import Typing

__all__ = ["DELIVERED", "FAILED", "HEARTBEAT_SECONDS", "KEEPALIVE_SECONDS", "SEEN", "SENDING", "SENT", "Client",
           "ClientError", "ClientOptions", "LineTimer", "Outgoing", "Photo"]

# The line's two clocks (protocol.md §2, §6.1; the JS client's KEEPALIVE_MS and HEARTBEAT_MS):
# a keepalive after 9 minutes without a frame (API Gateway's 10-minute idle limit less a
# margin), the presence heartbeat every 36 minutes (4 keepalive periods; the server's presence
# window, 40 minutes, is longer). The cost model (bench/) names these two.
KEEPALIVE_SECONDS = 540.0
HEARTBEAT_SECONDS = 4 * KEEPALIVE_SECONDS


# refusals that say nothing about the request itself: the same request may go through later
PASSING_ERRORS = frozenset({"internal_error", "rate_limited"})


class ClientError(Exception):
    """An error frame answering a request."""

    def __init__(self, frame: Frame) -> None:
        super().__init__(f"{frame.get('code')}: {frame.get('message')}")
        self.code = frame.get("code")
        self.frame = frame


@dataclass
class Outgoing:
    """A message this client sends, and its state: sending -> sent -> delivered -> seen (the
    peer read it, §14.3: when both have read receipts on), or failed (a
    failed message still moves to sent if a late `sent` or a pulled copy shows it was stored)."""

    client_id: str
    frame: Frame
    state: str = SENDING
    attempts: int = 0
    conversation_id: str | None = None
    seq: int | None = None
    accepted: asyncio.Future[Outgoing] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    delivered: asyncio.Future[Outgoing] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    seen: asyncio.Future[Outgoing] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


@dataclass(frozen=True)
class Photo:
    """A photo to send (§14.1): its bytes, type and size in pixels, and an optional preview (a
    data URL of at most 4096 characters)."""

    data: bytes
    content_type: str
    width: int
    height: int
    preview: str | None = None


@dataclass(frozen=True)
class ClientOptions:
    """ack_delay: one ack per 1:1 burst after this; group_ack / group_ack_messages: T and K of
    the batched group acks (§13.5); keepalive: after this long without sending anything, a
    `keepalive` frame (taken by API Gateway itself, unanswered; on long poll a ping; None: none);
    heartbeat: the presence heartbeat, a `ping` when none went out for this long (None: none),
    which while we hold a group also checks the groups' tails (§13.8); settle_check: Q, the quiet time after a
    group burst that showed a loss before one tail-checking ping (0: off); silence: with reconnect
    on, a frame that expects an answer and then this long without any frame makes us ping, and an
    unanswered ping reconnects (None: off). Times in seconds."""

    ack_timeout: float = 3.0
    max_attempts: int = 4
    ack_delay: float = 0.01
    keepalive: float | None = KEEPALIVE_SECONDS
    heartbeat: float | None = HEARTBEAT_SECONDS
    gap_grace: float = 1.0
    request_timeout: float = 10.0
    reconnect: bool = False
    backoff: tuple[float, float] = (1.0, 30.0)
    sync_limit: int = 200
    group_ack: float = 2.0
    group_ack_messages: int = 20
    settle_check: float = 3.0
    silence: float | None = 5.0

    def core(self) -> CoreSettings:
        return CoreSettings(ack_timeout_ms=self.ack_timeout * 1000, max_attempts=self.max_attempts,
                            inbox=InboxSettings(ack_delay_ms=self.ack_delay * 1000, gap_grace_ms=self.gap_grace * 1000,
                                                group_ack_ms=self.group_ack * 1000,
                                                group_ack_messages=self.group_ack_messages,
                                                settle_check_ms=self.settle_check * 1000))


class _LoopTimers:
    """The pure modules' timers on the asyncio loop; a failing callback is counted, not raised."""

    def __init__(self, on_error: Callable[[], None]) -> None:
        self._on_error = on_error

    def set_timeout(self, action: Callable[[], None], delay_ms: float) -> asyncio.TimerHandle:
        def run() -> None:
            try:
                action()
            except Exception:
                self._on_error()

        return asyncio.get_running_loop().call_later(delay_ms / 1000, run)

    def clear_timeout(self, handle: Any) -> None:
        handle.cancel()


@dataclass
class LineTimer:
    """When the line needs a frame (times in seconds of one clock): a `ping` when none went out
    for `heartbeat`, else a `keepalive` when nothing went out for `keepalive`."""

    keepalive: float | None
    heartbeat: float | None
    last_sent: float = 0.0
    last_ping: float = 0.0

    def sent(self, action: str, now: float) -> None:
        self.last_sent = now
        if action == "ping":
            self.last_ping = now

    def due(self, now: float) -> str | None:
        """"ping", "keepalive", or None (nothing yet)."""
        if self.heartbeat is not None and now - self.last_ping >= self.heartbeat:
            return "ping"
        if self.keepalive is not None and now - self.last_sent >= self.keepalive:
            return "keepalive"
        return None

    def wait(self, now: float) -> float | None:
        """Seconds until something may be due (None: never)."""
        at = [last + every for last, every in ((self.last_ping, self.heartbeat), (self.last_sent, self.keepalive))
              if every is not None]
        return max(0.0, min(at) - now) if at else None


class Client:
    def __init__(self, transport: Transport, options: ClientOptions | None = None, **overrides: Any) -> None:
        """options: see ClientOptions; keyword arguments override single ones
        (`Client(transport, keepalive=None)`)."""
        options = replace(options or ClientOptions(), **overrides)
        self.options = options
        self._transport = transport
        self.ack_timeout = options.ack_timeout
        self.max_attempts = options.max_attempts
        self.request_timeout = options.request_timeout
        self._reconnect_enabled = options.reconnect
        self.inbox: asyncio.Queue[Frame] = asyncio.Queue()
        self.presence_events: asyncio.Queue[Frame] = asyncio.Queue()  # peers coming and going
        # who is typing where (§14.2): {conversation_id, typing: [identities]} after every change;
        # or set `on_typing(conversation_id, people)`
        self.typing_events: asyncio.Queue[Frame] = asyncio.Queue()
        self.on_typing: Callable[[str, list[Frame]], None] | None = None
        self.pending: dict[str, Outgoing] = {}  # the ack queue: sent, not yet accepted
        self.outgoing: dict[str, Outgoing] = {}
        self.background_errors = 0
        self.pulls = 0  # sync requests sent (a fault-free chat needs none but the one on connect)
        self.reconnects = 0
        self.keepalives = 0  # keepalive frames sent (API Gateway takes them: no Lambda, no answer)
        self.last_connect_error: str | None = None
        self.identity: Frame | None = None
        self.online = False
        self._requests: dict[str, asyncio.Future[Frame]] = {}
        self._ids = itertools.count(1)
        self._prefix = secrets.token_hex(4)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._reader: asyncio.Task[None] | None = None
        self._generation = 0
        self._closing = False
        self._reconnecting = False
        self._pull_task: asyncio.Task[int] | None = None
        self._pull_again = False
        self._acking: set[asyncio.Task[Any]] = set()  # ack frames on their way to the transport
        self._probe: asyncio.TimerHandle | None = None  # armed by a frame that expects an answer
        self._line = LineTimer(options.keepalive, options.heartbeat)
        # a WebSocket takes `keepalive` frames; on long poll the keepalive's turn is a ping
        self._keepalive_frames = getattr(transport, "kind", "websocket") == "websocket"
        # groups we were refused in (`not_member`: removed while away): {conversation_id, code};
        # or set `on_group_gone(conversation_id)`
        self.groups_gone: asyncio.Queue[Frame] = asyncio.Queue()
        self.on_group_gone: Callable[[str], None] | None = None
        # messages deleted for everyone (§16), in seq order: {conversation_id, seq, by,
        # tombstone_seq}; or set `on_message_deleted(event)`. Show message `seq` as deleted.
        self.banned: Frame | None = None  # the `banned` frame, once an operator banned us: no reconnect
        self.deletions: asyncio.Queue[Frame] = asyncio.Queue()
        self.on_message_deleted: Callable[[Frame], None] | None = None
        self._connected = asyncio.Event()
        self.closed = asyncio.Event()
        # every frame in, and every protocol decision, goes through the core (core.py)
        self._core = ClientCore(_LoopTimers(self._background_error), self._transmit, self.new_id, self._heard_of,
                                options.core())
        self._events: dict[str, Callable[[Any], None]] = {
            "message": self._show, "outgoing": self._changed, "presence": self.presence_events.put_nowait,
            "typing_changed": self._typing_changed, "gone": self._gone, "pull": lambda _: self._pull_soon(),
            "ping": lambda _: self._check_tails(), "connection_gone": lambda _: self._line_dead(),
            "message_deleted": self._message_deleted, "banned": self._banned,
        }

    @property
    def _inbox(self) -> Inbox:
        return self._core.inbox

    @property
    def _outbox(self) -> Outbox:
        return self._core.outbox

    @property
    def _typing(self) -> Typing:
        return self._core.typing

    @property
    def duplicates(self) -> int:
        return self._inbox.duplicates

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self, pull: bool = True) -> None:
        await self._open()
        if self.options.keepalive or self.options.heartbeat:
            self._spawn(self._keep_line())
        if pull:
            await self.pull()

    async def _open(self) -> None:
        """Open the transport, learn who we are, then send every pending message again."""
        self._generation += 1
        await self._transport.open()
        self._reader = asyncio.create_task(self._read(self._generation))
        self.identity = (await self.request("ping")).get("identity")
        self._core.set_identity(self.identity)  # a `joined` naming us starts a group; our own typing is not shown
        self.online = True
        self._connected.set()
        self._core.set_online(True)  # pending sends again, same frames; the settle check runs again

    async def _keep_line(self) -> None:
        """Under API Gateway's 10-minute idle limit (a keepalive after `keepalive` seconds of
        silence), and the presence heartbeat (a ping every `heartbeat` seconds; while we hold a
        group also the tail check, on long poll too: nothing else would tell us)."""
        loop = asyncio.get_running_loop()
        while True:
            await self._connected.wait()  # a new line starts with its own ping
            wait = self._line.wait(loop.time())
            if wait is None:
                return
            await asyncio.sleep(wait)
            due = self._line.due(loop.time())  # None: something went out meanwhile
            if due is None or not self.online:
                continue
            if due == "keepalive" and self._keepalive_frames:
                await self._send_keepalive()
            else:
                await self._check_line()

    async def _send_keepalive(self) -> None:
        """A `keepalive`, sent and forgotten: API Gateway answers nothing (protocol.md §6.1a), so
        silence after it says nothing about the line; the heartbeat's ping proves it. Only a send
        that fails (the socket knows it is closed) ends the line here."""
        self._line.sent("keepalive", asyncio.get_running_loop().time())
        try:
            await self._transport.send({"action": "keepalive"})
        except Exception:
            self._line_dead()
            return
        self.keepalives += 1

    async def _check_line(self) -> None:
        """Ping; unanswered or refused (`connection_gone`: the server forgot this connection),
        the line is dead even if the socket is not: closing it starts the reconnect. While we
        hold a group it asks for the groups' last seqs (`groups: true`, §13.8): the `pong` is
        taken in `_dispatch`, and a group past what we have is pulled."""
        fields = {"groups": True} if self._inbox.holds_group() else {}
        try:
            await self.request("ping", **fields)
        except Exception:
            self._line_dead()

    def _check_tails(self) -> None:
        """The settle check (a group burst showed a loss and has been quiet for Q): one ping
        with `groups: true` now; it is also a keepalive, and unanswered it ends the line."""
        if self.online and not self._closing:
            self._spawn(self._check_line())

    def _banned(self, frame: Frame) -> None:
        """An operator banned this identity (docs/operator.md): the server closes the line and
        refuses every new one, so reconnecting would only knock; stop, and say why (`banned`)."""
        self.banned = frame
        self._reconnect_enabled = False
        self._spawn(self._transport.close())

    def _line_dead(self) -> None:
        if self.online and not self._closing:
            self._spawn(self._transport.close())

    def _expect_answer(self) -> None:
        """A frame that expects an answer went out: if `silence` seconds pass without any frame,
        ping (a deaf line, which the server forgot, answers nothing at all)."""
        if self.options.silence is None or not self._reconnect_enabled or self._probe is not None or not self.online:
            return

        def probe() -> None:
            self._probe = None
            if self.online and not self._closing:
                self._spawn(self._check_line())

        self._probe = asyncio.get_running_loop().call_later(self.options.silence, probe)

    def _heard(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            self._probe = None

    async def close(self) -> None:
        """Send the pending (batched) acks, answered (not quiet), wait for the answers (at most
        `request_timeout`), then close: a quiet ack sent just before the close can reach the
        server after the close forgot the connection, and be lost unseen."""
        self._core.answered_acks = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._flush_answered(), self.request_timeout)
        self._closing = True
        self._heard()
        for task in [*self._tasks, *([self._reader] if self._reader else [])]:
            task.cancel()
        with contextlib.suppress(Exception):
            await self._transport.close()

    async def flush_acks(self) -> None:
        """Send every pending ack now (group acks wait up to `group_ack` seconds) and wait until
        the transport took them: call it before going idle; close() does."""
        self._inbox.flush()
        if self._acking:
            await asyncio.wait(list(self._acking))

    async def _flush_answered(self) -> None:
        await self.flush_acks()
        while self._core.unanswered_acks and self.online:
            await asyncio.sleep(0.01)  # the reader removes each as its `acked` (or refusal) arrives

    def _pull_soon(self) -> None:
        self._spawn(self.pull())

    def _spawn(self, coroutine: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[Any]) -> None:
        """Background work (acks, pulls, retransmission) that fails is retried by its own
        mechanism (the next ack, the next gap, the server's retransmission): note, don't crash."""
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._background_error()

    def _background_error(self) -> None:
        self.background_errors += 1

    def new_id(self) -> str:
        return f"{self._prefix}-{next(self._ids)}"

    def _offline(self) -> None:
        self.online = False
        self._connected.clear()
        self._heard()  # a new line is proven by its own ping
        self._core.set_online(False)  # the clocks stop (waiting offline never fails a message); no settle check
        for future in self._requests.values():
            if not future.done():
                future.set_exception(ConnectionError("the connection closed"))

    async def _reconnect(self) -> None:
        """Reconnect with backoff (x2, jittered by the loop), then pull what came meanwhile."""
        self._reconnecting = True
        delay = self.options.backoff[0]
        try:
            while not self._closing:
                await asyncio.sleep(delay)
                with contextlib.suppress(Exception):
                    await self._transport.close()
                try:
                    await self._open()
                except Exception as error:
                    self.last_connect_error = repr(error)
                    delay = min(delay * 2, self.options.backoff[1])
                    continue
                self.reconnects += 1
                self._spawn(self.pull())
                self._spawn(self._refresh_delivered_until_done())  # receipts pushed while we were away are lost
                return
        finally:
            self._reconnecting = False

    # -- requests -------------------------------------------------------------------------
    async def request(self, action: str, timeout: float | None = None, **fields: Any) -> Frame:
        """Send a frame and wait for the answer with its `ref` (an error frame raises
        ClientError; no answer within the timeout raises TimeoutError)."""
        return await self._request_as(self.new_id(), action, timeout, **fields)

    async def _request_as(self, frame_id: str, action: str, timeout: float | None = None, **fields: Any) -> Frame:
        future: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        self._requests[frame_id] = future
        try:
            try:
                self._line.sent(action, asyncio.get_running_loop().time())
                await self._transport.send({"action": action, "id": frame_id, **fields})
            except Exception as error:
                raise ConnectionError(str(error)) from error
            if action != "ping":
                self._expect_answer()
            answer = await asyncio.wait_for(future, timeout or self.request_timeout)
        finally:
            self._requests.pop(frame_id, None)
        if answer.get("type") == "error":
            if answer.get("code") == "not_member" and action not in ("group_remove", "group_role"):
                # (those two answer not_member for a target who is not a member: not about us)
                self._core.group_gone(fields.get("conversation_id"))
            raise ClientError(answer)
        return answer

    async def pull(self) -> int:
        """The offline pull, page by page; one at a time (a call during one runs another after
        it). Returns how many messages the pulls brought."""
        if self._pull_task is not None and not self._pull_task.done():
            self._pull_again = True
            return await asyncio.shield(self._pull_task)
        self._pull_task = asyncio.create_task(self._pull_loop())
        return await asyncio.shield(self._pull_task)

    async def _pull_loop(self) -> int:
        received, delay = 0, self.options.backoff[0]
        while True:
            self._pull_again = False
            brought, complete = await self._pull_all()
            received += brought
            if not complete and self.online and not self._closing:
                # refused while the line stays up (internal_error, rate_limited): nothing else
                # would ask again (a group has no retransmission), so we do, backing off
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.options.backoff[1])
                self._pull_again = True
            if not self._pull_again:
                return received

    async def _pull_all(self) -> tuple[int, bool]:
        """One complete pull: (messages it brought, whether it completed)."""
        received, limit, more = 0, self.options.sync_limit, True
        while more:
            more = False
            # `since` only where the server's acked cursor is behind us, at most 100 per sync
            for since in self._inbox.since() or [{}]:
                try:
                    self.pulls += 1
                    page = await self.request("sync", since=since, limit=limit)
                except TimeoutError:
                    limit = max(10, limit // 2)  # an answer too big for one frame never arrives
                    more = True
                    break
                except ConnectionError:
                    return received, False  # offline: the next connect pulls again
                except ClientError as refused:
                    if refused.code not in PASSING_ERRORS:
                        raise
                    return received, False  # internal_error, rate_limited: _pull_loop asks again
                for message in page["messages"]:
                    self._core.receive(message, from_pull=True)
                received += len(page["messages"])
                more = more or bool(page["more"])
        self._core.pulled()
        return received, True

    async def history(self, conversation_id: str, before: int | None = None, limit: int = 50) -> Frame:
        fields: dict[str, Any] = {"conversation_id": conversation_id, "limit": limit}
        if before is not None:
            fields["before"] = before
        return await self.request("history", **fields)

    async def conversations(self, cursor: str | None = None, limit: int | None = None,
                            hide_blocked: bool = False) -> dict[str, Any]:
        """One page of the conversation list, newest first: {conversations, more, cursor};
        pass `cursor` from a page for the next one. `hide_blocked`: leave out the conversations
        whose peer we blocked (§15; a page may then be short, even empty, with more)."""
        fields: dict[str, Any] = {"hide_blocked": True} if hide_blocked else {}
        if cursor is not None:
            fields["cursor"] = cursor
        if limit is not None:
            fields["limit"] = limit
        answer = await self.request("conversations", **fields)
        for entry in answer["conversations"]:
            if entry.get("group"):
                self._inbox.member(entry["conversation_id"])  # the keepalive checks its tail
        return {"conversations": list(answer["conversations"]), "more": bool(answer.get("more")),
                "cursor": answer.get("cursor")}

    async def _refresh_delivered_until_done(self) -> None:
        """After a reconnect, `refresh_delivered` until one goes through on this line: nothing
        else tells us of a receipt pushed while we were away (§9h)."""
        delay = self.options.backoff[0]
        while self.online and not self._closing:
            try:
                await self.refresh_delivered()
                return
            except TimeoutError:
                await asyncio.sleep(delay)
            except ClientError as refused:
                if refused.code not in PASSING_ERRORS:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.options.backoff[1])
            except ConnectionError:
                return  # offline: the next connect asks again

    async def refresh_delivered(self) -> None:
        """`delivered` and `seen` are pushed once and may be lost (§9h, §14.3): the conversation
        list keeps the peer's acked and read cursors (`peer_acked_seq`, `peer_read_seq`); apply
        them to our messages. Done after every reconnect; call it when a receipt seems overdue."""
        cursor: str | None = None
        while True:
            page = await self.conversations(cursor=cursor)
            for entry in page["conversations"]:
                if entry.get("peer_acked_seq"):
                    self._outbox.delivered(entry["conversation_id"], int(entry["peer_acked_seq"]))
                if entry.get("peer_read_seq"):  # only when both have read receipts on (§14.3)
                    self._outbox.seen(entry["conversation_id"], int(entry["peer_read_seq"]))
            cursor = page["cursor"]
            if not page["more"] or not cursor:
                return

    # -- groups (§13) ---------------------------------------------------------------------
    async def create_group(self, title: str, members: list[Frame], client_id: str | None = None) -> Frame:
        """group_create: you are the owner; `members` (at most 20) are added. Returns the `group`
        answer ({conversation_id, title, role, seq, time, members_count})."""
        return await self._change("group_create", client_id, title=title, members=members)

    async def add_members(self, conversation_id: str, members: list[Frame], role: str = "member",
                          client_id: str | None = None) -> Frame:
        """group_add (owner, admins; only the owner adds admins): `group_changed`, `seq` None
        when every identity given was already a member."""
        return await self._change("group_add", client_id, conversation_id=conversation_id, members=members, role=role)

    async def remove_member(self, conversation_id: str, member: Frame, client_id: str | None = None) -> Frame:
        return await self._change("group_remove", client_id, conversation_id=conversation_id, member=member)

    async def leave_group(self, conversation_id: str, client_id: str | None = None) -> Frame:
        """group_leave; the owner may leave only when alone (else `owner_must_stay`: hand ownership
        on first with set_role(..., "owner"))."""
        answer = await self._change("group_leave", client_id, conversation_id=conversation_id)
        self._core.left(conversation_id)  # no acks or pulls for it any more (its `left` filled its seq)
        return answer

    async def rename_group(self, conversation_id: str, title: str, client_id: str | None = None) -> Frame:
        return await self._change("group_rename", client_id, conversation_id=conversation_id, title=title)

    async def set_role(self, conversation_id: str, member: Frame, role: str, client_id: str | None = None) -> Frame:
        """group_role (owner only): "admin", "member", or "owner" (hands ownership on; you become admin)."""
        return await self._change("group_role", client_id, conversation_id=conversation_id, member=member, role=role)

    async def group_members(self, conversation_id: str, cursor: str | None = None, limit: int = 100) -> Frame:
        """One page of the members in a stable order: {title, members_count, members: [{member,
        role, joined_seq}], more, cursor}; pass `cursor` for the next page."""
        fields: dict[str, Any] = {"conversation_id": conversation_id, "limit": limit}
        if cursor is not None:
            fields["cursor"] = cursor
        return await self.request("group_members", **fields)

    async def receipts(self, conversation_id: str, seq: int, cursor: str | None = None, limit: int = 100) -> Frame:
        """How far the other members have got with message `seq`: {members_count, acked, read,
        members: [{member, acked, read}] (one page), more, cursor}. It reads every member's
        cursor: ask when the user opens a message's details, not per message."""
        fields: dict[str, Any] = {"conversation_id": conversation_id, "seq": seq, "limit": limit}
        if cursor is not None:
            fields["cursor"] = cursor
        return await self.request("receipts", **fields)

    async def _change(self, action: str, client_id: str | None, **fields: Any) -> Frame:
        """A group change, idempotent by its id (§13.2): a lost frame or answer, `internal_error`
        or a dropped connection sends the same frame again (up to `max_attempts` tries, each
        waiting `ack_timeout`; offline time with reconnect on does not count); `rate_limited`
        waits `retry_after`. Any other error is final (ClientError). Its answer fills the seq of
        its event message (core.py), as `sent` does a message's."""
        frame_id = client_id or self.new_id()
        self._core.change_started({"action": action, "id": frame_id, **fields})
        try:
            return await self._asked_until_answered(lambda: self._request_as(frame_id, action, self.ack_timeout,
                                                                             **fields))
        finally:
            self._core.change_ended(frame_id)

    def _retrying(self) -> bool:
        return self._reconnect_enabled and not self._closing

    async def _try_failed(self, error: Exception, attempts: int) -> int:
        """A change's try failed: 1 when it does not count (nothing was done: rate_limited after
        its wait, a connection gone or dropped while we reconnect), 0 when it counts; raises when
        the error is final or the tries are spent."""
        code = error.code if isinstance(error, ClientError) else None
        if isinstance(error, ClientError) and code == "rate_limited":
            await asyncio.sleep(float(error.frame.get("retry_after") or 1))
            return 1
        if (code == "connection_gone" or isinstance(error, ConnectionError)) and self._retrying():
            return 1  # nothing was done; the reconnect sends it again
        retried = isinstance(error, TimeoutError) or code == "internal_error"
        if not retried or attempts >= self.max_attempts:
            raise error
        return 0

    # -- sending --------------------------------------------------------------------------
    async def send(self, text: str, to: Frame | None = None, conversation_id: str | None = None,
                   image: Frame | None = None) -> Outgoing:
        """msg:R; returns at once with the message in the ack queue (await `.accepted`).
        `image`: an uploaded photo's {upload_id, content_type, size, width, height, preview?}
        (send_image uploads and sends)."""
        client_id = self.new_id()
        frame: Frame = {"action": "send", "id": client_id, "text": text}
        if image is not None:
            frame["image"] = image
        if to is not None:
            frame["to"] = to
        else:
            frame["conversation_id"] = conversation_id
        outgoing = Outgoing(client_id, frame)
        self.pending[client_id] = self.outgoing[client_id] = outgoing
        self._core.send(frame)  # with the `last_seq` hint
        return outgoing

    # -- photos (§14.1) -------------------------------------------------------------------
    async def upload_image(self, data: bytes, content_type: str) -> str:
        """An upload slot (`upload`), then the bytes POSTed straight to S3; returns the
        upload_id. Raises ClientError (unsupported_media_type, upload_too_large, rate_limited)
        or media.MediaHttpError (S3 refused it)."""
        slot = await self.request_upload(content_type, len(data))
        await asyncio.to_thread(media_http.post_form, slot["url"], slot["fields"], data, content_type)
        return str(slot["upload_id"])

    async def request_upload(self, content_type: str, size: int) -> Frame:
        """An upload slot (§14.1): {upload_id, url, fields, max_bytes, expires_at}; upload_image
        asks for one and POSTs the bytes."""
        return await self.request("upload", content_type=content_type, size=size)

    async def send_image(self, photo: Photo, text: str = "", to: Frame | None = None,
                         conversation_id: str | None = None) -> Outgoing:
        """Upload a photo, then send it (with an optional caption) like a text: the same ack
        queue, so a retry (or resend) is the same frame, id and upload_id, stored once."""
        upload_id = await self.upload_image(photo.data, photo.content_type)
        image: Frame = {"upload_id": upload_id, "content_type": photo.content_type, "size": len(photo.data),
                        "width": photo.width, "height": photo.height}
        if photo.preview is not None:
            image["preview"] = photo.preview
        return await self.send(text, to=to, conversation_id=conversation_id, image=image)

    async def media_url(self, conversation_id: str, seq: int) -> Frame:
        """A fresh signed URL for a photo message: {url, url_expires (ms), ...}."""
        return await self.request("media_url", conversation_id=conversation_id, seq=seq)

    async def download_image(self, message: Frame, margin: float = 30.0) -> bytes:
        """A photo message's bytes. Its URL is refreshed first when it expires within `margin`
        seconds, and once more if S3 says it expired meanwhile (the message's `image` gets the
        new url and url_expires)."""
        image = message.get("image")
        if not image:
            raise ValueError("not a photo message")
        if image["url_expires"] <= (time.time() + margin) * 1000:
            await self._refresh_url(message)
        try:
            data, _ = await asyncio.to_thread(media_http.fetch, image["url"])
        except media_http.MediaHttpError as error:
            if error.status != 403:
                raise
            await self._refresh_url(message)
            data, _ = await asyncio.to_thread(media_http.fetch, image["url"])
        return data

    async def _refresh_url(self, message: Frame) -> None:
        fresh = await self.media_url(message["conversation_id"], int(message["seq"]))
        message["image"].update(url=fresh["url"], url_expires=fresh["url_expires"])

    def typing(self, conversation_id: str) -> bool:
        """Call on every keystroke into a non-empty draft: sends `typing` at most once per 3 s
        per conversation (§14.2); returns whether a frame went."""
        return self._typing.typed(conversation_id)

    def typing_now(self, conversation_id: str) -> list[Frame]:
        """Who is shown typing in a conversation now."""
        return self._typing.who(conversation_id)

    def _typing_changed(self, change: Frame) -> None:
        self.typing_events.put_nowait(change)
        if self.on_typing is not None:
            self.on_typing(change["conversation_id"], change["typing"])

    async def settings(self, read_receipts: bool | None = None) -> Frame:
        """Our settings ({read_receipts}), after changing the ones given (§14.3). Read receipts
        off: we send no `seen` and get none (nor `peer_read_seq`) from others."""
        fields: dict[str, Any] = {} if read_receipts is None else {"read_receipts": read_receipts}
        answer = await self.request("settings", **fields)
        return {"read_receipts": bool(answer["read_receipts"])}

    async def block(self, conversation_id: str) -> Frame:
        """Block the peer of a 1:1 conversation (§15): its sends to us are refused, and no
        presence, typing, `delivered` or `seen` passes either way until `unblock`. Idempotent;
        returns the answer ({type: "blocked", conversation_id, peer})."""
        return await self.request("block", conversation_id=conversation_id)

    async def delete_message(self, conversation_id: str, seq: int) -> Frame:
        """Delete message `seq` for everyone (§16): our own within the server's window (48 h by
        default), or any message of a group we own or admin. Idempotent: a lost answer, a
        timeout, `internal_error` or a dropped connection asks again (up to `max_attempts`),
        and a repeat is answered the same. Returns {type: "deleted", conversation_id, seq,
        tombstone_seq, time}; the tombstone event fills its seq here as `sent` does, and
        `deletions` / `on_message_deleted` tell it like one that came from someone else.
        Refusals (final): message_not_found, not_your_message, delete_window_passed,
        not_deletable, not_member, blocked, recipient_unavailable."""
        return await self._asked_until_answered(
            lambda: self.request("delete", self.ack_timeout, conversation_id=conversation_id, seq=seq))

    async def _asked_until_answered(self, ask: Callable[[], Awaitable[Frame]], final: tuple[str, ...] = ()
                                    ) -> Frame:
        """`ask` again (after a reconnect when offline) until answered, as `_try_failed` rules:
        waits and dropped lines do not count, timeouts and internal_error do up to `max_attempts`;
        a refusal whose code is in `final` is raised at once."""
        attempts = 0
        while True:
            if self._retrying() and not self.online:
                await self._connected.wait()
            attempts += 1
            try:
                return await ask()
            except (ClientError, ConnectionError, TimeoutError) as error:
                if isinstance(error, ClientError) and error.code in final:
                    raise
                attempts -= await self._try_failed(error, attempts)

    def _message_deleted(self, event: Frame) -> None:
        self.deletions.put_nowait(event)
        if self.on_message_deleted is not None:
            self.on_message_deleted(event)

    async def unblock(self, conversation_id: str) -> Frame:
        """Undo `block`: everything flows again (idempotent; {type: "unblocked", ...})."""
        return await self.request("unblock", conversation_id=conversation_id)

    async def report(self, conversation_id: str, reason: str, seq: int | None = None, note: str | None = None,
                     client_id: str | None = None) -> Frame:
        """Report message `seq` of a conversation, or the whole conversation (§17), to the site's
        operator: `reason` one of "spam", "abuse", "scam", "other", an optional `note` (at most
        1,000 characters). The server keeps a copy of the message and those around it. Idempotent
        by its id: a lost answer sends the same frame again (as a group change does), so it is
        one report. Returns {type: "reported", report_id, conversation_id, seq?}."""
        fields: dict[str, Any] = {"conversation_id": conversation_id, "reason": reason}
        if seq is not None:
            fields["seq"] = seq
        if note:
            fields["note"] = note
        frame_id = client_id or self.new_id()
        # rate_limited is final: too many reports, and waiting the window out (an hour) helps nobody
        return await self._asked_until_answered(
            lambda: self._request_as(frame_id, "report", self.ack_timeout, **fields), final=("rate_limited",))

    async def mark_read(self, conversation_id: str, seq: int) -> int:
        """Move our read mark (unread counts; with read receipts on, the peer's `seen`, §14.3);
        returns where it is now (it never moves back)."""
        answer = await self.request("read", conversation_id=conversation_id, seq=seq)
        return int(answer["seq"])

    def unsettled(self) -> list[Outgoing]:
        """Our messages not yet stored (sending) or failed, in the order they were sent."""
        return [o for o in self.outgoing.values() if o.state in (SENDING, FAILED)]

    async def resend(self, outgoing: Outgoing) -> Outgoing:
        """The "resend" button of a failed message: the same id, so never stored twice."""
        fresh = Outgoing(outgoing.client_id, outgoing.frame)
        self.pending[fresh.client_id] = self.outgoing[fresh.client_id] = fresh
        self._core.outbox.resend(fresh.client_id)
        return fresh

    def _transmit(self, frame: Frame) -> bool:
        if not self.online:
            return False
        self._line.sent(str(frame.get("action")), asyncio.get_running_loop().time())
        task = self._spawn(self._transport.send(frame))
        if frame.get("action") == "send":
            self._expect_answer()
        elif frame.get("action") == "ack":
            self._acking.add(task)  # flush_acks waits for it
            task.add_done_callback(self._acking.discard)
        return True

    def _heard_of(self, event: str, data: Any) -> None:
        """An event of the core (core.py): to the queues and callbacks."""
        handler = self._events.get(event)
        if handler is not None:
            handler(data)

    def _changed(self, view: Frame) -> None:
        """An outbox view changed: our Outgoing and its futures follow it."""
        outgoing = self.outgoing.get(view["id"])
        if outgoing is not None:
            outgoing.state, outgoing.attempts = view["state"], view["attempts"]
            outgoing.conversation_id, outgoing.seq = view["conversation_id"], view["seq"]
            if outgoing.state in (SENT, DELIVERED, SEEN):
                self.pending.pop(outgoing.client_id, None)
                if not outgoing.accepted.done():
                    outgoing.accepted.set_result(outgoing)
            if outgoing.state in (DELIVERED, SEEN) and not outgoing.delivered.done():
                outgoing.delivered.set_result(outgoing)
            if outgoing.state == SEEN and not outgoing.seen.done():
                outgoing.seen.set_result(outgoing)
            if outgoing.state == FAILED:
                self.pending.pop(outgoing.client_id, None)
                if not outgoing.accepted.done():
                    outgoing.accepted.set_exception(ClientError({"code": "failed", "message": view["error"]}))
                    outgoing.accepted.exception()  # retrieved: a failed send is a state, not a crash

    # -- receiving ------------------------------------------------------------------------
    async def _read(self, generation: int) -> None:
        try:
            while True:
                frame = await self._transport.receive()
                if generation == self._generation:
                    self._heard()  # the line is alive
                self._core.dispatch(frame)
                future = self._requests.get(frame.get("ref") or "")
                if future is not None and not future.done():
                    future.set_result(frame)
        except ConnectionError:
            pass
        if generation != self._generation:
            return  # an old connection we replaced
        self._offline()
        if self._reconnect_enabled and not self._closing:
            if not self._reconnecting:
                self._spawn(self._reconnect())
        else:
            self.closed.set()

    def _show(self, message: Frame) -> None:
        if not self._is_own(message):
            self.inbox.put_nowait(message)

    def _is_own(self, message: Frame) -> bool:
        """Our own send or group change: its caller has the answer."""
        client_id = message.get("client_id")
        return (client_id in self.outgoing or self._core.is_change(client_id)) and message.get("from") == self.identity

    def _gone(self, gone: Frame) -> None:
        self.groups_gone.put_nowait(gone)
        if self.on_group_gone is not None:
            self.on_group_gone(gone["conversation_id"])
