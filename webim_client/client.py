"""The protocol logic of a client: ack queue and retransmission for what it sends, in-order
delivery without duplicates for what it receives, cumulative acks, and the offline pull.

Sender side: every msg:R waits in the ack queue (`pending`) until msg:A; without msg:A in
`ack_timeout` it is sent again with the same id (the server stores it once), and after
`max_attempts` it is "failed". Receiver side: messages are delivered to `inbox` in seq order,
once: a seq at or below what the client has is a duplicate and dropped; a seq past a gap waits
until a pull fills the gap. What the client has is acked cumulatively, shortly after it arrives.
"""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
from dataclasses import dataclass, field
from typing import Any

from webim_client.transport import Frame, Transport

SENDING, SENT, DELIVERED, FAILED = "sending", "sent", "delivered", "failed"


class ClientError(Exception):
    """An error frame answering a request."""

    def __init__(self, frame: Frame) -> None:
        super().__init__(f"{frame.get('code')}: {frame.get('message')}")
        self.code = frame.get("code")
        self.frame = frame


@dataclass
class Outgoing:
    """A message this client sends, and its state: sending -> sent -> delivered, or failed."""

    client_id: str
    frame: Frame
    state: str = SENDING
    attempts: int = 0
    conversation_id: str | None = None
    seq: int | None = None
    accepted: asyncio.Future[Outgoing] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    delivered: asyncio.Future[Outgoing] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


@dataclass
class _Conversation:
    have: int | None = None  # every seq up to here is received (None: not known yet)
    waiting: dict[int, Frame] = field(default_factory=dict)  # received past a gap
    acked: int = 0
    pulling: bool = False


class Client:
    def __init__(self, transport: Transport, ack_timeout: float = 3.0, max_attempts: int = 4,
                 ack_delay: float = 0.01, keepalive: float | None = 240.0) -> None:
        self._transport = transport
        self.ack_timeout = ack_timeout
        self.max_attempts = max_attempts
        self._ack_delay = ack_delay
        self.inbox: asyncio.Queue[Frame] = asyncio.Queue()
        self.presence_events: asyncio.Queue[Frame] = asyncio.Queue()  # peers coming and going
        self._keepalive = keepalive
        self.pending: dict[str, Outgoing] = {}  # the ack queue: sent, not yet accepted
        self.outgoing: dict[str, Outgoing] = {}
        self.duplicates = 0
        self.background_errors = 0
        self.identity: Frame | None = None
        self._conversations: dict[str, _Conversation] = {}
        self._requests: dict[str, asyncio.Future[Frame]] = {}
        self._ids = itertools.count(1)
        self._prefix = secrets.token_hex(4)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._reader: asyncio.Task[None] | None = None
        self._ack_scheduled: set[str] = set()
        self._lines: dict[str, Outgoing] = {}
        self._delivered_upto: dict[str, int] = {}
        self.closed = asyncio.Event()

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self, pull: bool = True) -> None:
        await self._transport.open()
        self._reader = asyncio.create_task(self._read())
        self.identity = (await self.request("ping")).get("identity")
        if self._keepalive:
            self._spawn(self._ping_forever(self._keepalive))
        if pull:
            await self.pull()

    async def _ping_forever(self, every: float) -> None:
        """Under API Gateway's 10-minute idle limit, and the presence heartbeat."""
        while True:
            await asyncio.sleep(every)
            with contextlib.suppress(Exception):
                await self.request("ping")

    async def close(self) -> None:
        for task in [*self._tasks, *([self._reader] if self._reader else [])]:
            task.cancel()
        with contextlib.suppress(Exception):
            await self._transport.close()

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        """Background work (acks, pulls, retransmission) that fails is retried by its own
        mechanism (the next ack, the next gap, the server's retransmission): note, don't crash."""
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.background_errors += 1

    def new_id(self) -> str:
        return f"{self._prefix}-{next(self._ids)}"

    # -- requests -------------------------------------------------------------------------
    async def request(self, action: str, timeout: float = 10.0, **fields: Any) -> Frame:
        """Send a frame and wait for the answer with its `ref` (an error frame raises)."""
        frame_id = self.new_id()
        future: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        self._requests[frame_id] = future
        try:
            await self._transport.send({"action": action, "id": frame_id, **fields})
            answer = await asyncio.wait_for(future, timeout)
        finally:
            self._requests.pop(frame_id, None)
        if answer.get("type") == "error":
            raise ClientError(answer)
        return answer

    async def pull(self) -> int:
        """The offline pull: everything after what the server has as acked, page by page."""
        received = 0
        while True:
            since = {c: s.have for c, s in self._conversations.items() if s.have is not None}
            page = await self.request("sync", since=since, limit=200)
            for message in page["messages"]:
                self._receive(message, from_pull=True)
            received += len(page["messages"])
            if not page["more"]:
                return received

    async def history(self, conversation_id: str, before: int | None = None, limit: int = 50) -> Frame:
        fields: dict[str, Any] = {"conversation_id": conversation_id, "limit": limit}
        if before is not None:
            fields["before"] = before
        return await self.request("history", **fields)

    async def conversations(self) -> list[Frame]:
        return list((await self.request("conversations"))["conversations"])

    # -- sending --------------------------------------------------------------------------
    async def send(self, text: str, to: Frame | None = None, conversation_id: str | None = None) -> Outgoing:
        """msg:R; returns at once with the message in the ack queue (await `.accepted`)."""
        client_id = self.new_id()
        frame: Frame = {"action": "send", "id": client_id, "text": text}
        if to is not None:
            frame["to"] = to
        else:
            frame["conversation_id"] = conversation_id
            known = self._conversations.get(conversation_id or "")
            if known is not None and known.have:
                frame["last_seq"] = known.have  # a hint; the server's condition decides
        outgoing = Outgoing(client_id, frame)
        self.pending[client_id] = self.outgoing[client_id] = outgoing
        self._spawn(self._transmit(outgoing, self._queue_behind(outgoing)))
        return outgoing

    def _queue_behind(self, outgoing: Outgoing) -> Outgoing | None:
        """Messages to one conversation leave one at a time: the server may handle two frames
        of a connection in parallel (API Gateway invokes a Lambda per frame), so only waiting
        for msg:A keeps the order in which they were typed."""
        line = outgoing.frame.get("conversation_id") or str(outgoing.frame.get("to"))
        ahead = self._lines.get(line)
        self._lines[line] = outgoing
        return ahead

    async def _transmit(self, outgoing: Outgoing, ahead: Outgoing | None = None) -> None:
        """Send, and send again on ack timeout, until accepted or out of attempts."""
        if ahead is not None:
            await asyncio.wait([ahead.accepted])
        while outgoing.state == SENDING and outgoing.attempts < self.max_attempts:
            outgoing.attempts += 1
            with contextlib.suppress(Exception):
                await self._transport.send(outgoing.frame)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(outgoing.accepted), self.ack_timeout)
        if outgoing.state == SENDING:
            self._fail(outgoing, "no answer from the server (network)")

    async def resend(self, outgoing: Outgoing) -> Outgoing:
        """The "resend" button of a failed message: the same id, so never stored twice."""
        fresh = Outgoing(outgoing.client_id, outgoing.frame)
        self.pending[fresh.client_id] = self.outgoing[fresh.client_id] = fresh
        self._spawn(self._transmit(fresh))
        return fresh

    def _fail(self, outgoing: Outgoing, reason: str) -> None:
        outgoing.state = FAILED
        self.pending.pop(outgoing.client_id, None)
        if not outgoing.accepted.done():
            outgoing.accepted.set_exception(ClientError({"code": "failed", "message": reason}))
            outgoing.accepted.exception()  # retrieved: a failed send is a state, not a crash

    # -- receiving ------------------------------------------------------------------------
    async def _read(self) -> None:
        try:
            while True:
                self._dispatch(await self._transport.receive())
        except ConnectionError:
            pass
        finally:
            self.closed.set()

    def _dispatch(self, frame: Frame) -> None:
        kind = frame.get("type")
        if kind == "sent":
            self._accepted(frame)
        elif kind == "message":
            self._receive(frame)
        elif kind == "delivered":
            self._delivered(frame)
        elif kind == "presence":
            self.presence_events.put_nowait(frame)
        elif kind == "resync":
            self._spawn(self.pull())  # frames were not kept for us: the store has the messages
        elif kind == "error" and frame.get("ref") in self.pending:
            self._fail(self.pending[frame["ref"]], f"{frame.get('code')}: {frame.get('message')}")
        future = self._requests.get(frame.get("ref", ""))
        if future is not None and not future.done():
            future.set_result(frame)

    def _accepted(self, frame: Frame) -> None:
        outgoing = self.pending.pop(frame.get("ref", ""), None)
        if outgoing is None:
            return  # a second msg:A for a retransmitted msg:R
        outgoing.state, outgoing.conversation_id, outgoing.seq = SENT, frame["conversation_id"], frame["seq"]
        outgoing.accepted.set_result(outgoing)
        if frame["seq"] <= self._delivered_upto.get(frame["conversation_id"], 0):
            self._mark_delivered(outgoing)  # the receipt overtook msg:A (they travel separately)
        # our own message is part of the conversation we have
        self._receive({"type": "message", "conversation_id": frame["conversation_id"], "seq": frame["seq"],
                       "from": self.identity, "text": outgoing.frame["text"], "time": frame["time"],
                       "client_id": outgoing.client_id})

    def _delivered(self, frame: Frame) -> None:
        conversation_id, seq = frame["conversation_id"], int(frame["seq"])
        self._delivered_upto[conversation_id] = max(seq, self._delivered_upto.get(conversation_id, 0))
        for outgoing in self.outgoing.values():
            if outgoing.conversation_id == conversation_id and outgoing.seq is not None and outgoing.seq <= seq:
                self._mark_delivered(outgoing)

    @staticmethod
    def _mark_delivered(outgoing: Outgoing) -> None:
        if outgoing.state == SENT:
            outgoing.state = DELIVERED
            outgoing.delivered.set_result(outgoing)

    def _receive(self, message: Frame, from_pull: bool = False) -> None:
        conversation = self._conversations.setdefault(message["conversation_id"], _Conversation())
        seq = int(message["seq"])
        if conversation.have is None:
            if seq == 1 or from_pull:
                conversation.have = seq - 1  # a pull starts right after the server's acked cursor
            else:
                conversation.waiting[seq] = message  # where does this conversation start? ask.
                self._pull_soon(conversation)
                return
        duplicate = seq <= conversation.have or seq in conversation.waiting
        if duplicate:
            self.duplicates += 1
            self._ack_soon(message["conversation_id"])  # our earlier ack may have been lost
        else:
            conversation.waiting[seq] = message
        # a pull that just told where the conversation starts may release what was waiting
        while conversation.have + 1 in conversation.waiting:
            conversation.have += 1
            ready = conversation.waiting.pop(conversation.have)
            if not self._is_own(ready):
                self.inbox.put_nowait(ready)
        if conversation.waiting:
            self._pull_soon(conversation)  # a gap: msg:N was lost; pull from what we have
        if not duplicate and not self._is_own(message):
            # our own messages need no ack of their own: the next cumulative ack covers them
            self._ack_soon(message["conversation_id"])

    def _is_own(self, message: Frame) -> bool:
        return message.get("client_id") in self.outgoing and message.get("from") == self.identity

    def _pull_soon(self, conversation: _Conversation) -> None:
        if not conversation.pulling:
            conversation.pulling = True

            async def pull() -> None:
                try:
                    await self.pull()
                finally:
                    conversation.pulling = False

            self._spawn(pull())

    def _ack_soon(self, conversation_id: str) -> None:
        """Cumulative ack:R after a short delay, so a burst costs one ack."""
        if conversation_id in self._ack_scheduled:
            return
        self._ack_scheduled.add(conversation_id)

        async def ack() -> None:
            await asyncio.sleep(self._ack_delay)
            self._ack_scheduled.discard(conversation_id)
            conversation = self._conversations[conversation_id]
            if conversation.have:
                with contextlib.suppress(Exception):
                    await self._transport.send({"action": "ack", "id": self.new_id(),
                                                "conversation_id": conversation_id, "seq": conversation.have})
                conversation.acked = max(conversation.acked, conversation.have)

        self._spawn(ack())
