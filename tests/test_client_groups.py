"""The Python SDK's group calls (docs/protocol.md §13) against the real app in-process (the
local stack's gateway emulation and SQS source, on moto; the fan-out runs as SQS jobs), and the
chaos run of issue 13: a 50-member group, 10 senders, 20 % of frames dropped both ways on every
member's transport; at the end every member has every message exactly once, in seq order.

No timed assertions: every wait is for a condition, bounded by a generous deadline.

Whoever is added to a group has first written to the adder in their 1:1 conversation (§13.2):
`introduce` does that before the scenario's own clients connect."""
from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.test_chaos_soak import DROP, app_stack, dev_token, start, wait_until
from webim_client import Client, ClientError, FaultyTransport, WebSocketTransport
from webim_client.transport import drop_first

__all__ = ["app_stack"]  # the fixture, shared with the 1:1 chaos soak

Frame = dict[str, Any]
WAIT = 60.0  # a bounded wait for one thing on a busy machine: generous, never part of the proof


def user(name: str) -> Frame:
    return {"kind": "user", "id": name}


async def connect(http: httpx.AsyncClient, host: str, name: str, record: list[Frame] | None = None,
                  drop_in: Callable[[Frame], bool] | None = None, **settings: Any) -> Client:
    """A connected SDK client; `record` collects every frame it sends, `drop_in` loses frames to it."""
    token = await dev_token(http, host, name)

    def recorded(frame: Frame) -> bool:
        if record is not None:
            record.append(frame)
        return False

    transport = FaultyTransport(WebSocketTransport(f"ws://{host}/ws?token={token}"), drop_in=drop_in,
                                drop_out=recorded)
    client = Client(transport, **{"keepalive": None, **settings})
    await client.start()
    return client


async def introduce(http: httpx.AsyncClient, host: str, adder: str, *writers: str) -> None:
    """Each writer sends `adder` one 1:1 message (what lets the adder add it to a group, §13.2)
    from a client of its own; writer and adder both ack it, so no later pull brings it back."""
    async def write(name: str) -> tuple[str, int]:
        writer = await connect(http, host, name)
        try:
            sent = await (await writer.send("hi", to=user(adder))).accepted
            assert sent.conversation_id is not None and sent.seq is not None
            await writer.request("ack", conversation_id=sent.conversation_id, seq=sent.seq)
            return sent.conversation_id, sent.seq
        finally:
            await writer.close()

    written = await asyncio.gather(*(write(name) for name in writers))
    reader = await connect(http, host, adder)
    try:
        for conversation_id, seq in written:
            await reader.request("ack", conversation_id=conversation_id, seq=seq)
    finally:
        await reader.close()


async def next_message(client: Client) -> Frame:
    return await asyncio.wait_for(client.inbox.get(), WAIT)


async def refused(call: Any) -> str | None:
    """The error code a call is refused with."""
    try:
        await call
    except ClientError as error:
        return str(error.code)
    return None


async def wait_for(check: Any, what: str) -> Any:
    """Call the coroutine function `check` until it returns something true (bounded)."""
    deadline = time.monotonic() + WAIT
    while True:
        result = await check()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def remove_and_leave(cid: str, alice: Client, bob: Client, carol: Client, dave: Client) -> None:
    """alice (owner) removes carol, who can no longer send or list; dave leaves; bob sees both."""
    assert (await alice.remove_member(cid, user("g-carol")))["seq"] == 6
    removed = await next_message(carol)
    assert (removed["seq"], removed["event"]["type"], removed["event"]["member"]) == (6, "removed", user("g-carol"))
    late = await carol.send("still here?", conversation_id=cid)
    with pytest.raises(ClientError):
        await late.accepted
    assert late.state == "failed"
    assert await refused(carol.group_members(cid)) == "not_member"

    assert await refused(alice.leave_group(cid)) == "owner_must_stay"
    assert (await dave.leave_group(cid))["seq"] == 7
    seen = [await next_message(bob) for _ in range(3)]  # 5 is its own rename: not on its inbox
    assert [(m["seq"], m["event"]["type"], m["from"]["id"]) for m in seen] == [
        (4, "role", "g-alice"), (6, "removed", "g-alice"), (7, "left", "g-dave")]
    assert bob.inbox.empty() and bob.duplicates == 0


def test_group_calls_through_the_sdk(app_stack: str) -> None:
    """create, send, add (the added member starts at its joined event), roles, rename, members
    (paged), receipts, remove (the removed member can no longer send) and leave, each as the
    other members see it: event messages in the group's seq, in order."""
    async def scenario() -> None:
        async with httpx.AsyncClient() as http:
            await introduce(http, app_stack, "g-alice", "g-bob", "g-carol", "g-dave")
            alice, bob, carol, dave = [await connect(http, app_stack, name)
                                       for name in ("g-alice", "g-bob", "g-carol", "g-dave")]
        try:
            group = await alice.create_group("Bikes", [user("g-bob"), user("g-carol")])
            cid = group["conversation_id"]
            assert (group["type"], group["seq"], group["role"], group["members_count"]) == ("group", 1, "owner", 3)
            assert cid.startswith("g_")
            for member in (bob, carol):
                created = await next_message(member)
                assert (created["seq"], created["text"], created["event"]["type"]) == (1, "", "created")
                assert created["from"] == user("g-alice")

            hello = await (await alice.send("hello", conversation_id=cid)).accepted
            assert hello.seq == 2
            for member in (bob, carol):
                assert [(m["seq"], m["text"]) for m in [await next_message(member)]] == [(2, "hello")]

            assert await refused(bob.add_members(cid, [user("g-dave")])) == "not_allowed"  # a plain member
            added = await alice.add_members(cid, [user("g-dave")])
            assert (added["type"], added["seq"]) == ("group_changed", 3)
            joined = await next_message(dave)  # dave learns of the group by this push
            assert (joined["seq"], joined["event"]["type"]) == (3, "joined")
            assert joined["event"]["members"] == [user("g-dave")]
            assert dave.pulls == 1  # no pull needed to know where the group starts for it: only the one on connect
            for member in (bob, carol):
                assert (await next_message(member))["event"]["type"] == "joined"
            assert (await alice.add_members(cid, [user("g-dave")]))["seq"] is None  # already in: nothing changes

            assert (await alice.set_role(cid, user("g-bob"), "admin"))["seq"] == 4
            assert (await bob.rename_group(cid, "Bike parts"))["seq"] == 5
            for member in (carol, dave):
                seen = [await next_message(member), await next_message(member)]
                assert [(m["seq"], m["event"]["type"]) for m in seen] == [(4, "role"), (5, "renamed")]
            assert [m["seq"] for m in (await dave.history(cid))["messages"]] == [3, 4, 5]  # from its joined seq

            first = await carol.group_members(cid, limit=2)
            assert (first["members_count"], first["more"], len(first["members"])) == (4, True, 2)
            rest = await carol.group_members(cid, cursor=first["cursor"], limit=2)
            assert (rest["more"], rest["cursor"]) == (False, None)
            roles = {m["member"]["id"]: m["role"] for m in first["members"] + rest["members"]}
            assert roles == {"g-alice": "owner", "g-bob": "admin", "g-carol": "member", "g-dave": "member"}

            # receipts: the batched acks (2 s) are sent at once by flush_acks()
            for member in (alice, carol, dave):
                await member.flush_acks()

            async def all_acked() -> bool:
                receipts = await alice.receipts(cid, 5)
                return bool(receipts["acked"] == 3 and receipts["members_count"] == 4)  # all but bob, its sender

            await wait_for(all_acked, "everyone's ack in the receipts")
            await remove_and_leave(cid, alice, bob, carol, dave)
        finally:
            for client in (alice, bob, carol, dave):
                await client.close()

    asyncio.run(scenario())


def test_a_group_change_whose_answer_is_lost_is_sent_again_and_stored_once(app_stack: str) -> None:
    """The change frames are idempotent by their id (§13.2), which the SDK keeps across retries:
    a lost `group` / `group_changed` answer costs a retry, never a second group or event; an
    explicit repeat with the same client id gets the original answer."""
    async def scenario() -> None:
        lose = drop_first(lambda frame: frame.get("type") in ("group", "group_changed"), count=2)
        async with httpx.AsyncClient() as http:
            await introduce(http, app_stack, "i-alice", "i-bob", "i-carol")
            alice = await connect(http, app_stack, "i-alice", drop_in=lose, ack_timeout=0.5)
        try:
            group = await alice.create_group("Once", [user("i-bob")], client_id="i-create")
            cid = group["conversation_id"]
            again = await alice.create_group("Once", [user("i-bob")], client_id="i-create")
            assert (again["conversation_id"], again["seq"]) == (cid, 1)
            added = await alice.add_members(cid, [user("i-carol")])
            assert added["seq"] == 2
            history = await alice.history(cid)
            assert [(m["seq"], m["event"]["type"]) for m in history["messages"]] == [(1, "created"), (2, "joined")]
            listed = await alice.conversations()
            groups = [c["conversation_id"] for c in listed["conversations"] if "group" in c]
            assert groups == [cid]  # one group, not two
        finally:
            await alice.close()

    asyncio.run(scenario())


def test_group_acks_are_batched_quiet_and_flushed_on_close(app_stack: str) -> None:
    """At once on the K-th new message, otherwise held (T here: 60 s, never reached), and sent
    by close(): the server's cursor is where the last ack put it, so a new connection's pull
    brings nothing of the group."""
    async def scenario() -> None:
        frames: list[Frame] = []
        async with httpx.AsyncClient() as http:
            await introduce(http, app_stack, "b-alice", "b-bob")
            alice = await connect(http, app_stack, "b-alice")
            bob = await connect(http, app_stack, "b-bob", record=frames, group_ack=60.0, group_ack_messages=5)
            cid = (await alice.create_group("Acks", [user("b-bob")]))["conversation_id"]
            for i in range(7):
                await (await alice.send(f"m{i}", conversation_id=cid)).accepted
            assert [(await next_message(bob))["seq"] for _ in range(8)] == list(range(1, 9))

            def acks() -> list[tuple[int, bool]]:
                return [(f["seq"], f.get("quiet", False)) for f in frames if f["action"] == "ack"]

            await wait_until(lambda: acks() == [(5, True)], time.monotonic() + WAIT, "the K-th message's ack", acks)
            await bob.close()
            # the rest, sent by close(), answered: a quiet ack racing the close could be lost unseen
            assert acks() == [(5, True), (8, False)]

            async def bob_acked() -> bool:
                return bool((await alice.receipts(cid, 8))["acked"] == 1)

            await wait_for(bob_acked, "bob's ack in the receipts")
            again = await connect(http, app_stack, "b-bob")
            try:
                assert again.pulls == 1 and again.inbox.empty()  # the connect's pull: nothing left of the group
            finally:
                await again.close()
                await alice.close()

    asyncio.run(scenario())


def test_a_burst_whose_every_push_was_lost_shows_after_the_next_heartbeat(app_stack: str) -> None:
    """Finding 8: every push of a burst to bob is lost and nothing follows it. While bob holds
    the group its heartbeat ping carries `groups: true`; the pong's last seq is past what bob has,
    so bob pulls and shows the burst, without reconnecting (protocol.md §13.8)."""
    async def scenario() -> None:
        frames: list[Frame] = []

        def burst_push(frame: Frame) -> bool:  # every group push after the `created` event
            return bool(frame.get("type") == "message" and str(frame.get("conversation_id", "")).startswith("g_")
                        and int(frame.get("seq", 0)) >= 2)

        async with httpx.AsyncClient() as http:
            await introduce(http, app_stack, "t-alice", "t-bob")
            alice = await connect(http, app_stack, "t-alice")
            bob = await connect(http, app_stack, "t-bob", record=frames, drop_in=burst_push,
                                heartbeat=0.5, settle_check=0)
        try:
            cid = (await alice.create_group("Tails", [user("t-bob")]))["conversation_id"]
            assert (await next_message(bob))["seq"] == 1  # bob holds the group
            for i in range(3):
                await (await alice.send(f"t{i}", conversation_id=cid)).accepted
            shown = [await next_message(bob) for _ in range(3)]
            assert [(m["seq"], m["text"]) for m in shown] == [(2, "t0"), (3, "t1"), (4, "t2")]
            assert bob.reconnects == 0 and bob.online
            assert any(f["action"] == "ping" and f.get("groups") is True for f in frames)
        finally:
            await alice.close()
            await bob.close()

    asyncio.run(scenario())


# -- the chaos run -------------------------------------------------------------------------
MEMBERS, SENDERS, PER_SENDER = (int(os.environ.get(f"GROUP_CHAOS_{name}", default))
                                for name, default in (("MEMBERS", 50), ("SENDERS", 10), ("PER_SENDER", 2)))
CHAOS_DEADLINE = 240.0  # the whole run, bounded; it takes far less (the report prints it)


@dataclass
class Member:
    name: str
    client: Client
    transport: FaultyTransport
    received: list[Frame] = field(default_factory=list)
    own: dict[int, str] = field(default_factory=dict)  # seq -> text of what this member stored


async def collect(member: Member) -> None:
    while True:
        member.received.append(await member.client.inbox.get())


async def report_progress(members: list[Member], state: dict[str, Any]) -> None:
    """With GROUP_CHAOS_PROGRESS=1 (a run by hand): where the members are, every 5 s."""
    begun = time.monotonic()
    while True:
        await asyncio.sleep(5)
        cid = state.get("cid", "")
        haves = sorted(m.client._inbox.have(cid) or 0 for m in members)
        print(f"{time.monotonic() - begun:5.0f} s {state.get('phase')}: have min/median/max {haves[0]}/"
              f"{haves[len(haves) // 2]}/{haves[-1]}, sent {sum(len(m.own) for m in members)}, "
              f"pulls {sum(m.client.pulls for m in members)}, online {sum(m.client.online for m in members)}, "
              f"errors {sum(m.client.background_errors for m in members)}", flush=True)
        if os.environ.get("GROUP_CHAOS_PROGRESS") == "2":
            for m in members:
                inbox = m.client._inbox
                print(f"  {m.name} have {inbox.have(cid)} gaps {inbox.gaps()} got {len(m.received)} "
                      f"own {len(m.own)} pulls {m.client.pulls} dropped {len(m.transport.dropped)} "
                      f"online {m.client.online}", flush=True)


def chaos_transport(host: str, token: str, rng: random.Random, faults_on: list[bool]) -> FaultyTransport:
    """20 % of frames dropped each way once `faults_on[0]` (connecting through drops is the 1:1
    soak's part; here 50 handshakes would only wait out their ping timeouts)."""
    def drop(frame: Frame) -> bool:
        return faults_on[0] and rng.random() < DROP

    return FaultyTransport(WebSocketTransport(f"ws://{host}/ws?token={token}"), drop_in=drop, drop_out=drop)


async def chaos(host: str, rng: random.Random) -> dict[str, Any]:
    deadline = time.monotonic() + CHAOS_DEADLINE
    members: list[Member] = []
    state: dict[str, Any] = {"phase": "connect"}
    faults_on = [False]
    async with httpx.AsyncClient() as http:
        await introduce(http, host, "chaos-00", *(f"chaos-{i:02d}" for i in range(1, MEMBERS)))
        for i in range(MEMBERS):
            name = f"chaos-{i:02d}"
            transport = chaos_transport(host, await dev_token(http, host, name), rng, faults_on)
            # fan-out to 50 members takes seconds on a busy local stack: a short request timeout
            # would only pile retried pulls onto the server
            client = Client(transport, ack_timeout=1.0, max_attempts=1000, keepalive=None, gap_grace=1.0,
                            request_timeout=5.0, reconnect=True, backoff=(0.05, 0.5), sync_limit=100)
            members.append(Member(name, client, transport))
    collectors = [asyncio.create_task(collect(m)) for m in members]
    if os.environ.get("GROUP_CHAOS_PROGRESS"):
        collectors.append(asyncio.create_task(report_progress(members, state)))
    await asyncio.gather(*(start(m, deadline) for m in members))
    faults_on[0] = True
    state["phase"] = "create"
    owner, others = members[0], members[1:]
    try:
        # 50 members: create with 20, then add 20 and 9 (at most 20 identities per frame)
        group = await owner.client.create_group("Chaos", [user(m.name) for m in others[:20]])
        cid = state["cid"] = group["conversation_id"]
        joined = {m.name: 1 for m in [owner, *others[:20]]}
        for batch in [b for b in (others[20:40], others[40:]) if b]:
            seq = (await owner.client.add_members(cid, [user(m.name) for m in batch]))["seq"]
            joined.update({m.name: seq for m in batch})

        async def send_all(member: Member) -> None:
            for i in range(PER_SENDER):
                sent = await (await member.client.send(f"{member.name}:{i}", conversation_id=cid)).accepted
                assert sent.seq is not None
                member.own[sent.seq] = f"{member.name}:{i}"
                await asyncio.sleep(rng.uniform(0, 0.2))

        senders = members[::MEMBERS // SENDERS]
        state["phase"] = "send"
        await asyncio.gather(*(send_all(m) for m in senders))
        last = max(seq for m in senders for seq in m.own)
        events = max(joined.values())  # created, then one joined per added batch
        assert last == events + SENDERS * PER_SENDER  # every send stored once: a gap-free log

        def has_all(member: Member) -> bool:
            return (member.client._inbox.have(cid) or 0) >= last

        state["phase"] = "catch up"
        # the last messages' pushes may have been dropped with nothing after them to reveal the
        # gap: a member catches up by its pull (as on a reconnect or a `resync`)
        while not all(has_all(m) for m in members):
            assert time.monotonic() < deadline, f"members behind: {[m.name for m in members if not has_all(m)]}"
            await asyncio.gather(*(m.client.pull() for m in members if not has_all(m)))
            await asyncio.sleep(0.5)  # a pull that failed (dropped): the next round asks again
        await wait_until(lambda: all(len(m.received) + len(m.own) + (m is owner) * events >= last - joined[m.name] + 1
                                     for m in members), deadline, "every message on every inbox",
                         lambda: [m.name for m in members])
    finally:
        for task in collectors:
            task.cancel()
        await asyncio.gather(*(m.client.close() for m in members))
    texts = {seq: text for m in senders for seq, text in m.own.items()}
    return {"cid": cid, "last": last, "events": events, "joined": joined, "texts": texts, "members": members,
            "owner": owner}


def jobs_drained() -> None:
    """Wait until the jobs queue is empty: fan-out jobs of the last messages may still run after
    every member caught up by its pulls (the local SQS source should stop idle)."""
    import boto3

    sqs = boto3.client("sqs")
    deadline = time.monotonic() + CHAOS_DEADLINE
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    while True:
        attributes = sqs.get_queue_attributes(QueueUrl=os.environ["JOBS_QUEUE_URL"],
                                              AttributeNames=names)["Attributes"]
        if all(attributes.get(name) == "0" for name in names):
            return
        assert time.monotonic() < deadline, f"jobs still queued: {attributes}"
        time.sleep(0.2)


@pytest.mark.timeout(CHAOS_DEADLINE + 120)
def test_chaos_fifty_members_ten_senders_twenty_percent_dropped(app_stack: str) -> None:
    started = time.monotonic()
    result = asyncio.run(chaos(app_stack, random.Random(13)))
    jobs_drained()
    members: list[Member] = result["members"]
    last, texts = result["last"], result["texts"]
    dropped = sum(len(m.transport.dropped) for m in members)
    pulls = sum(m.client.pulls for m in members)
    print(f"\ngroup chaos: {MEMBERS} members, {len(texts)} messages, {time.monotonic() - started:.1f} s, "
          f"frames dropped {dropped}, pulls {pulls}, duplicates dropped {sum(m.client.duplicates for m in members)}")
    assert dropped > 0
    for member in members:
        start_seq = result["joined"][member.name]
        got = [m["seq"] for m in member.received]
        assert got == sorted(set(got)), f"{member.name}: not in seq order, or twice"
        own = set(member.own) | (set(range(1, result["events"] + 1)) if member is result["owner"] else set())
        assert not own & set(got), f"{member.name}: its own message came back on its inbox"
        assert sorted(own | set(got)) == list(range(start_seq, last + 1)), f"{member.name}: a message is missing"
        for message in member.received:
            seq = message["seq"]
            if seq in texts:
                assert message["text"] == texts[seq]
            else:
                assert message["text"] == "" and message["event"]["type"] in ("created", "joined")
