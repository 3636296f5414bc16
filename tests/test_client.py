"""The Python client's receiving logic against a scripted server (no network)."""
from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from chalicelib.logic.frames import MAX_SYNC_CONVERSATIONS
from webim_client import Client
from webim_client.client import DELIVERED, FAILED, SENT, ClientError

Frame = dict[str, Any]
ALICE = {"kind": "user", "id": "alice"}
BOB = {"kind": "user", "id": "bob"}


class ScriptedServer:
    """A transport whose server answers ping and sync from a list of stored messages (after the
    acked cursor or `since`, refusing more than 100 `since` entries as the server does), acks,
    sends (`send_answers`: the answers to each attempt, else `sent`) and conversations. A ping
    with `groups: true` is answered with each stored group's last seq (§13.8)."""

    def __init__(self, stored: list[Frame]) -> None:
        self.stored = stored
        self.sent: list[Frame] = []
        self.frames: asyncio.Queue[Frame] = asyncio.Queue()
        self.acked: dict[str, int] = {}
        self.send_answers: list[Frame | None] = []
        self.conversation_pages: list[Frame] = []
        self.stored_after_sync: list[Frame] = []  # stored (never pushed) once the next sync has read
        self.read_seq = 0

    async def open(self) -> None:
        pass

    async def send(self, frame: Frame) -> None:
        self.sent.append(frame)
        answer = {"ping": self._pong, "sync": self._sync, "ack": self._ack, "send": self._sent,
                  "conversations": self._conversations, "read": self._read_mark}.get(frame["action"])
        if answer is not None:
            await answer(frame, frame.get("id"))

    async def _pong(self, frame: Frame, ref: Any) -> None:
        pong: Frame = {"type": "pong", "v": 2, "time": 1, "identity": ALICE, "ref": ref}
        if frame.get("groups"):
            pong["groups"] = {}
            for stored in self.stored:
                if stored["conversation_id"].startswith("g_"):
                    last = pong["groups"].get(stored["conversation_id"], 0)
                    pong["groups"][stored["conversation_id"]] = max(last, stored["seq"])
        await self.frames.put(pong)

    async def _sync(self, frame: Frame, ref: Any) -> None:
        since = frame.get("since", {})
        if len(since) > MAX_SYNC_CONVERSATIONS:
            await self.frames.put({"type": "error", "code": "invalid_field", "message": "since", "ref": ref})
            return
        messages = [m for m in self.stored
                    if m["seq"] > since.get(m["conversation_id"], self.acked.get(m["conversation_id"], 0))]
        await self.frames.put({"type": "sync", "messages": messages, "more": False, "ref": ref})
        self.stored.extend(self.stored_after_sync)
        self.stored_after_sync = []

    async def _ack(self, frame: Frame, ref: Any) -> None:
        cid = frame["conversation_id"]
        self.acked[cid] = max(self.acked.get(cid, 0), frame["seq"])
        if not frame.get("quiet"):
            await self.frames.put({"type": "acked", "conversation_id": cid, "seq": self.acked[cid], "ref": ref})

    async def _sent(self, frame: Frame, ref: Any) -> None:
        answer = self.send_answers.pop(0) if self.send_answers else {"type": "sent", "seq": 1}
        if answer is not None:
            await self.frames.put({"conversation_id": "c", "time": 5, **answer, "ref": ref})

    async def _conversations(self, frame: Frame, ref: Any) -> None:
        await self.frames.put({**self.conversation_pages.pop(0), "ref": ref})

    async def _read_mark(self, frame: Frame, ref: Any) -> None:
        """The read mark never moves back (protocol §6.5): the answer says where it is."""
        self.read_seq = max(self.read_seq, frame["seq"])
        await self.frames.put({"type": "read", "conversation_id": frame["conversation_id"], "seq": self.read_seq,
                               "ref": ref})

    async def receive(self) -> Frame:
        return await self.frames.get()

    async def close(self) -> None:
        pass


def message(seq: int, conversation_id: str = "c") -> Frame:
    return {"type": "message", "conversation_id": conversation_id, "seq": seq, "from": BOB, "text": f"m{seq}",
            "time": seq, "client_id": f"b-{seq}"}


def test_a_push_into_an_unknown_conversation_is_shown_once_the_pull_brings_it_again() -> None:
    """Regression: the pull that tells where a conversation starts returns the very message that
    was pushed and is waiting; it must be released, not dropped as a duplicate."""
    async def scenario() -> list[int]:
        server = ScriptedServer(stored=[message(7)])  # the server's acked cursor is at 6
        client = Client(server, keepalive=None)
        await client.start(pull=False)
        await server.frames.put(message(7))  # pushed before this client knows the conversation
        shown = await asyncio.wait_for(client.inbox.get(), 5)
        await client.flush_acks()  # every ack owed is sent (the pull's answer came before the show)
        await client.close()
        acks = [f["seq"] for f in server.sent if f["action"] == "ack"]
        return [shown["seq"], *acks]

    assert asyncio.run(scenario()) == [7, 7]


def test_a_push_into_an_unknown_conversation_is_shown_when_the_pull_brings_nothing() -> None:
    """Regression: the server's cursor is already past seq 6 (acked on another device), so the
    pull returns nothing; the pushed seq 7 must be shown, not wait forever (JS `settleUnknown`)."""
    async def scenario() -> list[int]:
        server = ScriptedServer(stored=[])
        client = Client(server, keepalive=None, gap_grace=0.05)
        await client.start(pull=False)
        await server.frames.put(message(7))
        shown = await asyncio.wait_for(client.inbox.get(), 5)
        await client.close()
        return [shown["seq"], client.pulls]

    assert asyncio.run(scenario()) == [7, 1]


async def _until(condition: Any) -> None:
    async with asyncio.timeout(10):
        while not condition():
            await asyncio.sleep(0.01)


def test_acks_are_quiet_and_the_cursor_they_set_needs_no_since() -> None:
    """Cost (issue 12): `acked` is one billed frame per message that tells the client nothing
    its own ack did not; the client asks for none and takes its ack as the cursor, so a later
    pull names only the conversation with a gap (as the JS client)."""
    async def scenario() -> tuple[list[Frame], Frame]:
        server = ScriptedServer(stored=[message(2, "c2")])
        client = Client(server, keepalive=None, gap_grace=0.05)
        await client.start(pull=False)
        await server.frames.put(message(1, "c1"))
        await server.frames.put(message(1, "c2"))
        await _until(lambda: len([f for f in server.sent if f["action"] == "ack"]) == 2)
        await server.frames.put(message(3, "c2"))  # seq 2 of c2 was lost
        await _until(lambda: any(f["action"] == "sync" for f in server.sent))
        # before close(): its last acks go answered, so that none is lost to the $disconnect
        acks = [f for f in server.sent if f["action"] == "ack"]
        await client.close()
        return acks, next(f for f in server.sent if f["action"] == "sync")

    acks, pull = asyncio.run(scenario())
    assert all(ack["quiet"] is True for ack in acks)
    assert pull["since"] == {"c2": 1}


def test_pulls_work_beyond_100_conversations() -> None:
    """Regression: `since` listed every known conversation, and the server refuses more than 100,
    so every pull failed. Now `since` names only conversations the server's cursor is behind on,
    at most 100 per sync: a message lost in the 150th conversation is still pulled."""
    async def scenario() -> list[int]:
        stored = [message(1, f"c{i:03d}") for i in range(150)]
        server = ScriptedServer(stored=stored)
        server.acked = {}  # nothing acked: each conversation needs `since` once the client has seq 1
        client = Client(server, keepalive=None, gap_grace=0.05, ack_delay=10)  # acks wait: all 150 need since
        await client.start()
        for _ in range(150):
            await asyncio.wait_for(client.inbox.get(), 5)
        stored += [message(2, "c149"), message(3, "c149")]
        await server.frames.put(message(3, "c149"))  # seq 2 was lost
        late = [(await asyncio.wait_for(client.inbox.get(), 5))["seq"] for _ in range(2)]
        syncs = [f for f in server.sent if f["action"] == "sync"]
        await client.close()
        return [*late, max(len(f.get("since", {})) for f in syncs), len(syncs)]

    assert asyncio.run(scenario()) == [2, 3, 100, 3]


def test_internal_error_on_a_send_retries_the_same_frame_and_a_late_sent_revives_a_failed_one() -> None:
    async def scenario() -> tuple[list[str], int, str, str]:
        server = ScriptedServer(stored=[])
        server.send_answers = [{"type": "error", "code": "internal_error", "message": "x"}, {"type": "sent", "seq": 1},
                               None, None]
        client = Client(server, keepalive=None, ack_timeout=0.05, max_attempts=2)
        await client.start()
        first = await client.send("hi", conversation_id="c")
        await asyncio.wait_for(first.accepted, 5)
        second = await client.send("again", conversation_id="c")
        try:
            await asyncio.wait_for(second.accepted, 5)
        except Exception:  # noqa: BLE001 - failed: no answer to either attempt
            pass
        failed_state = second.state
        await server.frames.put({"type": "sent", "ref": second.client_id, "conversation_id": "c", "seq": 2, "time": 6})
        for _ in range(500):  # until the late `sent` is handled (a condition, not a fixed wait)
            if second.state == SENT:
                break
            await asyncio.sleep(0.01)
        await client.close()
        ids = [f["id"] for f in server.sent if f["action"] == "send"]
        return ids, first.attempts, failed_state, second.state

    ids, attempts, failed_state, late_state = asyncio.run(scenario())
    assert ids[:2] == [ids[0], ids[0]] and attempts == 2  # the same frame again after internal_error
    assert failed_state == FAILED and late_state == SENT


def test_mark_read_and_unsettled_as_the_js_client_has_them() -> None:
    """mark_read sends `read` and returns where the mark is; unsettled() lists our messages not
    stored yet or failed, in the order sent (docs/client.md: the two clients' surface)."""
    async def scenario() -> tuple[list[int], list[str], list[str]]:
        server = ScriptedServer(stored=[])
        server.send_answers = [None, None, {"type": "sent", "seq": 1}]  # the first send: both attempts lost
        client = Client(server, keepalive=None, ack_timeout=0.05, max_attempts=2)
        await client.start(pull=False)
        lost = await client.send("lost", conversation_id="c")
        with contextlib.suppress(ClientError):
            await asyncio.wait_for(lost.accepted, 30)
        stored = await client.send("stored", conversation_id="c")
        waiting = await client.send("waiting", conversation_id="c")  # one at a time: behind `stored`
        unsettled = [o.frame["text"] for o in client.unsettled()]
        await asyncio.wait_for(stored.accepted, 30)
        marks = [await client.mark_read("c", 4), await client.mark_read("c", 2)]
        await client.close()
        assert waiting.state != FAILED
        return marks, unsettled, [f["action"] for f in server.sent if f["action"] == "read"]

    marks, unsettled, reads = asyncio.run(scenario())
    assert unsettled == ["lost", "stored", "waiting"]
    assert marks == [4, 4] and reads == ["read", "read"]


def test_conversations_pages_pass_the_cursor() -> None:
    async def scenario() -> tuple[list[Frame], list[Frame]]:
        server = ScriptedServer(stored=[])
        server.conversation_pages = [
            {"type": "conversations", "conversations": [{"conversation_id": "c1"}], "more": True, "cursor": "k1"},
            {"type": "conversations", "conversations": [{"conversation_id": "c2"}], "more": False, "cursor": None},
        ]
        client = Client(server, keepalive=None)
        await client.start(pull=False)
        pages = [await client.conversations(limit=1)]
        pages.append(await client.conversations(cursor=pages[0]["cursor"], limit=1))
        await client.close()
        asked = [{k: v for k, v in f.items() if k != "id"} for f in server.sent if f["action"] == "conversations"]
        return pages, asked

    pages, asked = asyncio.run(scenario())
    assert pages == [{"conversations": [{"conversation_id": "c1"}], "more": True, "cursor": "k1"},
                     {"conversations": [{"conversation_id": "c2"}], "more": False, "cursor": None}]
    assert asked == [{"action": "conversations", "limit": 1}, {"action": "conversations", "cursor": "k1", "limit": 1}]


class ClosableServer(ScriptedServer):
    """A scripted server whose `close` ends `receive` (as a socket's close ends its reads)."""

    async def receive(self) -> Frame:
        frame = await self.frames.get()
        if frame.get("type") == "closed":
            raise ConnectionError("closed")
        return frame

    async def close(self) -> None:
        self.frames.put_nowait({"type": "closed"})


class ForgettingServer(ClosableServer):
    """Answers the first ping, then refuses pings with `connection_gone` until reopened (the
    server forgot the connection while the socket stayed up); close ends `receive`."""

    def __init__(self) -> None:
        super().__init__(stored=[])
        self.opens = 0
        self.pings_since_open = 0

    async def open(self) -> None:
        self.opens += 1
        self.pings_since_open = 0
        self.frames = asyncio.Queue()

    async def send(self, frame: Frame) -> None:
        if frame["action"] == "ping":
            self.pings_since_open += 1
            if self.pings_since_open > 1:
                self.sent.append(frame)
                await self.frames.put({"type": "error", "code": "connection_gone", "message": "gone",
                                       "ref": frame.get("id")})
                return
        await super().send(frame)



def test_a_refused_heartbeat_ping_reconnects() -> None:
    """A ping answered `connection_gone` means the server no longer knows this connection:
    the client closes it and reconnects (as the JS client does), instead of pinging forever."""
    async def scenario() -> int:
        server = ForgettingServer()
        client = Client(server, heartbeat=0.05, keepalive=None, reconnect=True, backoff=(0.01, 0.05))
        await client.start(pull=False)
        deadline = asyncio.get_running_loop().time() + 20
        while client.reconnects < 1:
            assert asyncio.get_running_loop().time() < deadline, "never reconnected"
            await asyncio.sleep(0.01)
        await client.close()
        return server.opens

    assert asyncio.run(scenario()) >= 2


class RefusingServer(ClosableServer):
    """Answers the first `refusals[action]` frames of an action `internal_error` (a function
    that failed on the server: the line stays up), then as ScriptedServer does."""

    def __init__(self, stored: list[Frame], refusals: dict[str, int]) -> None:
        super().__init__(stored=stored)
        self.refusals = dict(refusals)
        self.opens = 0

    async def open(self) -> None:
        self.opens += 1
        self.frames = asyncio.Queue()

    async def send(self, frame: Frame) -> None:
        if self.refusals.get(frame["action"], 0) > 0:
            self.refusals[frame["action"]] -= 1
            self.sent.append(frame)
            await self.frames.put({"type": "error", "code": "internal_error", "message": "injected",
                                   "ref": frame.get("id")})
            return
        await super().send(frame)


def test_a_refused_gap_pull_is_asked_again_until_it_goes_through() -> None:
    """Regression (the chaos run's lost group message): the pull a gap asked for was answered
    internal_error; nothing asked again (groups have no retransmission), so the gap stayed
    open for good. Now a refused pull is asked again, backing off, while the line is up."""
    async def scenario() -> tuple[list[int], int]:
        server = RefusingServer(stored=[message(1), message(2), message(3)], refusals={"sync": 2})
        client = Client(server, keepalive=None, gap_grace=0.05, backoff=(0.05, 0.2))
        await client.start(pull=False)
        await server.frames.put(message(1))
        await server.frames.put(message(3))  # seq 2 lost on the way
        shown = [(await asyncio.wait_for(client.inbox.get(), 10))["seq"] for _ in range(3)]
        await client.close()
        return shown, len([f for f in server.sent if f["action"] == "sync"])

    assert asyncio.run(scenario()) == ([1, 2, 3], 3)


def test_the_receipts_refresh_after_a_reconnect_is_asked_again_until_it_goes_through() -> None:
    """Regression (the chaos run's `delivered` never shown): the `conversations` a reconnect
    asks for the receipts pushed while away (§9h) was answered internal_error and never asked
    again. Now it is, backing off, until it goes through on the line."""
    async def scenario() -> str:
        server = RefusingServer(stored=[], refusals={"conversations": 2})
        server.send_answers = [{"type": "sent", "seq": 4}]
        server.conversation_pages = [{"type": "conversations", "more": False, "cursor": None, "conversations": [
            {"conversation_id": "c", "peer_acked_seq": 4}]}]
        client = Client(server, keepalive=None, reconnect=True, backoff=(0.05, 0.2))
        await client.start(pull=False)
        outgoing = await client.send("hi", to=BOB)
        await _until(lambda: outgoing.state == SENT)
        await client._transport.close()  # the line drops; the client reconnects
        await _until(lambda: outgoing.state == DELIVERED)
        await client.close()
        return outgoing.state

    assert asyncio.run(scenario()) == DELIVERED


def test_a_ban_stops_the_client_instead_of_reconnecting() -> None:
    """An operator's ban (docs/operator.md) pushes `banned` and closes the line; every new line
    is refused, so the client must not knock forever: it stops, says why, and opens no line."""
    async def scenario() -> tuple[Frame | None, int, bool]:
        server = RefusingServer(stored=[], refusals={})
        client = Client(server, keepalive=None, reconnect=True, backoff=(0.01, 0.05))
        await client.start(pull=False)
        await server.frames.put({"type": "error", "code": "banned", "message": "this identity is banned"})
        await asyncio.wait_for(client.closed.wait(), 10)  # the read loop ended without a reconnect
        return client.banned, server.opens, client.online

    banned, opens, online = asyncio.run(scenario())
    assert banned is not None and banned["code"] == "banned"
    assert (opens, online) == (1, False)


def test_a_group_we_are_removed_from_is_forgotten_until_we_are_added_again() -> None:
    """After the event removing us, the inbox neither acks nor pulls for the group (the server
    would refuse with not_member) and drops late copies; a `joined` naming us starts it again."""
    from tests.test_client_scenarios import FakeClock
    from webim_client.inbox import Inbox, InboxHooks

    clock, shown, acks = FakeClock(), [], []
    inbox = Inbox(clock, me=ALICE, hooks=InboxHooks(on_show=lambda m: shown.append(m["seq"]),
                                                    on_ack=lambda c, s: acks.append(s)))
    event = {"type": "message", "conversation_id": "g_x", "from": BOB, "text": "", "time": 1, "client_id": "e"}
    inbox.receive({**event, "seq": 1, "event": {"type": "created", "title": "t", "members": [BOB, ALICE]}})
    inbox.receive({**event, "seq": 2, "event": {"type": "removed", "member": ALICE}})
    inbox.receive({**message(1, "g_x")})  # a late copy
    clock.advance(10_000)
    assert (shown, acks, inbox.since(), inbox.gaps()) == ([1, 2], [], [], [])
    inbox.receive({**event, "seq": 9, "event": {"type": "joined", "members": [ALICE], "role": "member"}})
    inbox.receive(message(10, "g_x"))
    clock.advance(2000)
    assert (shown, acks) == ([1, 2, 9, 10], [10])


class LineServer(ClosableServer):
    """A scripted server whose line can die: `close` (or a client's reconnect) ends `receive`;
    `deaf` opens answer their first ping (the client's open) and nothing after it (the server
    forgot the connection and the socket stayed up); `refuse` maps an action to the error code it
    answers. `sends_by_open` records on which open each send went."""

    def __init__(self, stored: list[Frame] | None = None) -> None:
        super().__init__(stored=stored or [])
        self.opens = 0
        self.deaf: set[int] = set()
        self.refuse: dict[str, str] = {}
        self.sends_by_open: list[tuple[int, str]] = []
        self._answered_ping = False

    async def open(self) -> None:
        self.opens += 1
        self._answered_ping = False
        self.frames = asyncio.Queue()

    async def send(self, frame: Frame) -> None:
        if frame["action"] == "send":
            self.sends_by_open.append((self.opens, frame["id"]))
        if self.opens in self.deaf and self._answered_ping:
            self.sent.append(frame)
            return
        if frame["action"] == "ping":
            self._answered_ping = True
        code = self.refuse.get(frame["action"])
        if code is not None:
            self.sent.append(frame)
            await self.frames.put({"type": "error", "code": code, "message": code, "ref": frame["id"]})
            return
        await super().send(frame)



def test_connection_gone_answering_a_send_reconnects_at_once_and_the_send_goes_again() -> None:
    """`connection_gone` (the server forgot this connection, protocol.md §8) did nothing with the
    frame: the message is not failed, the client reconnects at once (no keepalive needed) and
    sends the same frame on the new connection."""
    async def scenario() -> tuple[str, int, list[tuple[int, str]], str]:
        server = LineServer()
        server.send_answers = [{"type": "error", "code": "connection_gone", "message": "gone"}]
        client = Client(server, keepalive=None, reconnect=True, backoff=(0.01, 0.05), ack_timeout=30)
        await client.start(pull=False)
        outgoing = await client.send("hi", to=BOB)
        await asyncio.wait_for(outgoing.accepted, 10)
        await client.close()
        return outgoing.state, server.opens, server.sends_by_open, outgoing.client_id

    state, opens, sends, client_id = asyncio.run(scenario())
    assert (state, opens) == (SENT, 2)
    assert sends == [(1, client_id), (2, client_id)]  # the same frame, on the new connection


def test_a_deaf_line_is_found_by_the_silence_ping_and_replaced() -> None:
    """Finding 12: the server dropped the connection's record while the socket stayed open, so
    nothing is answered. A send with no frame at all for `silence` seconds makes the client ping;
    the unanswered ping closes the line and the reconnect sends the message again (the keepalive,
    4 minutes away, is not waited for; the send's own retry, 30 s here, neither)."""
    async def scenario() -> tuple[str, int, list[tuple[int, str]]]:
        server = LineServer()
        server.deaf = {1}
        client = Client(server, keepalive=None, reconnect=True, backoff=(0.01, 0.05), ack_timeout=30,
                        silence=0.05, request_timeout=1.0)
        await client.start(pull=False)
        outgoing = await client.send("anyone there?", to=BOB)
        await asyncio.wait_for(outgoing.accepted, 20)
        await client.close()
        return outgoing.state, server.opens, server.sends_by_open

    state, opens, sends = asyncio.run(scenario())
    assert (state, opens) == (SENT, 2)
    assert [open_ for open_, _ in sends] == [1, 2]


def test_a_group_refused_not_member_is_dropped_and_never_retried() -> None:
    """Removed while away (protocol.md §13.8): the ack naming the group is refused `not_member`;
    the client drops the group (groups_gone hears it), acks and shows nothing more of it. A
    request naming another group refused the same way drops that one too."""
    created = {"type": "message", "conversation_id": "g_x", "seq": 1, "from": BOB, "text": "", "time": 1,
               "client_id": "e1", "event": {"type": "created", "title": "t", "members": [BOB, ALICE]}}

    async def scenario() -> tuple[list[Frame], list[Frame], list[int], Any]:
        server = LineServer()
        server.refuse = {"ack": "not_member"}
        client = Client(server, keepalive=None, group_ack=0.01, ack_delay=0.01, settle_check=0)
        await client.start(pull=False)
        await server.frames.put(created)
        gone = [await asyncio.wait_for(client.groups_gone.get(), 10)]
        await server.frames.put(message(2, "g_x"))  # a late push of the group
        await server.frames.put(message(1, "d_y"))
        shown = [await asyncio.wait_for(client.inbox.get(), 10) for _ in range(2)]
        await _until(lambda: len([f for f in server.sent if f["action"] == "ack"]) == 2)
        server.refuse = {"history": "not_member"}
        await server.frames.put({**created, "conversation_id": "g_z"})
        shown.append(await asyncio.wait_for(client.inbox.get(), 10))
        try:
            await client.history("g_z")
        except ClientError as error:
            refused = error.code
        gone.append(await asyncio.wait_for(client.groups_gone.get(), 10))
        await client.close()
        acks = [f for f in server.sent if f["action"] == "ack"]
        return gone, acks, [m["seq"] for m in shown], refused

    gone, acks, shown, refused = asyncio.run(scenario())
    assert gone == [{"conversation_id": "g_x", "code": "not_member"}, {"conversation_id": "g_z", "code": "not_member"}]
    assert [(a["conversation_id"], a["seq"]) for a in acks] == [("g_x", 1), ("d_y", 1)]  # none for g_x after
    assert shown == [1, 1, 1]  # g_x/1, d_y/1, g_z/1: the late g_x/2 is not shown
    assert refused == "not_member"


def test_a_lost_group_tail_is_found_by_the_settle_check_without_a_reconnect() -> None:
    """Finding 8: seq 3 of the group was lost (the gap's pull finds it) and so was seq 5, the
    last of the burst, stored just after that pull read. The burst showed a loss, so once the
    group has been quiet for `settle_check` seconds the client sends one ping with `groups: true`;
    its pong says the group is at 5, and one pull shows it, without a reconnect."""
    created = {"type": "message", "conversation_id": "g_x", "seq": 1, "from": BOB, "text": "", "time": 1,
               "client_id": "e1", "event": {"type": "created", "title": "t", "members": [BOB, ALICE]}}

    async def scenario() -> tuple[list[int], int, list[Frame], int]:
        server = LineServer(stored=[created, *(message(seq, "g_x") for seq in range(2, 5))])
        server.stored_after_sync = [message(5, "g_x")]
        # Q past the grace: the gap's pull reads before the settle check's ping goes
        client = Client(server, keepalive=None, reconnect=True, settle_check=0.2, gap_grace=0.05)
        await client.start(pull=False)
        for seq in (1, 2, 4):  # seq 3's and seq 5's pushes are lost
            await server.frames.put(created if seq == 1 else message(seq, "g_x"))
        shown = [(await asyncio.wait_for(client.inbox.get(), 10))["seq"] for _ in range(5)]
        await client.close()
        return shown, client.pulls, [f for f in server.sent if f["action"] == "ping"], server.opens

    shown, pulls, pings, opens = asyncio.run(scenario())
    assert shown == [1, 2, 3, 4, 5]
    assert [p.get("groups") for p in pings] == [None, True]  # the open's ping, then the settle check's
    assert (pulls, opens) == (2, 1)  # the gap's pull, the tail's pull; no reconnect


def test_a_group_message_whose_every_push_was_lost_is_found_by_the_heartbeat() -> None:
    """The conversation list names a group with nothing pushed since the connect; a message
    stored there whose push was lost is found by the next heartbeat: while a group is held the
    ping carries `groups: true`, and the pong's last seq past what we have is pulled."""
    async def scenario() -> tuple[int, int, list[Frame]]:
        server = LineServer()
        server.conversation_pages = [{"type": "conversations", "more": False, "cursor": None, "conversations": [
            {"conversation_id": "g_x", "group": {"title": "t", "members_count": 2, "role": "member"}}]}]
        client = Client(server, heartbeat=0.05, keepalive=None, settle_check=0, gap_grace=0.05)
        await client.start(pull=False)
        await client.conversations()
        server.stored.append(message(7, "g_x"))  # stored, never pushed
        shown = await asyncio.wait_for(client.inbox.get(), 10)
        await client.close()
        return shown["seq"], server.opens, [f for f in server.sent if f["action"] == "ping" and f.get("groups")]

    seq, opens, tail_pings = asyncio.run(scenario())
    assert (seq, opens) == (7, 1)
    assert tail_pings  # the heartbeat asked for the groups' last seqs


def test_frames_go_as_raw_utf8_not_escaped() -> None:
    """protocol.md §2: frames are UTF-8; `\\u` escapes would count 6-12 bytes a character against
    the 32 KB frame limit, and a 4,000-emoji text (16 KB raw) would be refused as too large."""
    from webim_client.transport import WebSocketTransport  # noqa: PLC0415

    class Socket:
        def __init__(self) -> None:
            self.sent: list[str] = []

        async def send(self, data: str) -> None:
            self.sent.append(data)

    transport = WebSocketTransport("ws://unused")
    socket = Socket()
    transport._ws = socket  # type: ignore[assignment]
    asyncio.run(transport.send({"action": "send", "text": "\U0001F600" * 4000}))
    assert len(socket.sent[0].encode("utf-8")) < 17_000 and "\\u" not in socket.sent[0]
