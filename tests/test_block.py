"""Block (protocol.md §15, issue 26 point 1): the blocked peer tries every action and signal and
none gets through; unblock restores them; a block racing sends; bad input.

BOB blocks PAUL after they wrote to each other. Everything PAUL could use to write to BOB, or to
learn what BOB does (presence pushed and pulled, typing, `delivered` from an ack or from the
ack check, `seen`, the list's cursors, putting BOB in a group), and everything BOB would tell
PAUL, is counted: 0. Both transports.
"""
from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import httpx
import pytest

from chalicelib.logic.frames import BlockRequest, SendRequest
from chalicelib.logic.messaging import direct_conversation_id
from chalicelib.principal import Identity
from tests.signal_fixtures import TRANSPORTS, World
from tests.test_chaos_soak import app_stack
from tests.test_client_signals import WAIT, connect
from webim_client.client import Client, ClientError

__all__ = ["app_stack"]

BOB = Identity("user", "bob-blocks")
PAUL = Identity("user", "paul-pest")
CONV = direct_conversation_id(BOB, PAUL)
# every frame that tells its receiver something the other did (or that it is around)
ABOUT_THE_OTHER = ("message", "delivered", "seen", "typing", "presence", "group_event", "group_message")

Frame = dict[str, Any]


@pytest.fixture
def world(provisioned: dict[str, str]) -> World:
    return World(provisioned)


def send(world: World, sender: Identity, to: Identity, text: str) -> Frame:
    """A send through the service itself (no connection: the sender may be offline)."""
    request = SendRequest.parse({"id": f"{sender.id}-{text}", "text": text, "to": to.to_json()})
    return world.services.messaging.send(sender, request)


def block(world: World, who: Identity, on: bool = True) -> Frame:
    return world.services.messaging.block(who, BlockRequest(CONV), on=on)


def about(world: World, connection: str, other: Identity) -> list[Frame]:
    """What `connection` got that tells it about `other` (a message, a signal, presence)."""
    def concerns(frame: Frame) -> bool:
        return other.to_json() in (frame.get("from"), frame.get("by"), frame.get("identity"))
    return [f for f in world.received(connection) if f.get("type") in ABOUT_THE_OTHER and concerns(f)]


def run_jobs(world: World, kind: str) -> int:
    pending = [j for j in world.jobs if j.get("kind") == kind]
    world.jobs[:] = [j for j in world.jobs if j.get("kind") != kind]
    for job in pending:
        world.services.jobs.run(json.dumps(job))
    return len(pending)


def pulled(world: World, caller: Identity, of: Identity) -> Frame:
    answer, = world.services.presence.batch([of], caller=caller)
    return answer


def entry(world: World, connection: str, **fields: Any) -> Frame | None:
    listed = world.ask(connection, action="conversations", **fields)["conversations"]
    found = [c for c in listed if c["conversation_id"] == CONV]
    return found[0] if found else None


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_the_blocked_peer_gets_nothing_through_and_learns_nothing(world: World, transport: str) -> None:
    assert send(world, PAUL, BOB, "hello")["seq"] == 1
    assert send(world, BOB, PAUL, "hi")["seq"] == 2
    assert block(world, BOB) == {"type": "blocked", "conversation_id": CONV, "peer": PAUL.to_json()}
    messages_before, _ = world.stored()

    paul = world.connect(transport, PAUL)
    bob = world.connect(transport, BOB)  # BOB comes online: told to nobody blocked
    # PAUL tries every action
    refused = [world.ask(paul, action="send", to=BOB.to_json(), text="let me in"),
               world.ask(paul, action="send", conversation_id=CONV, text="please")]
    assert [r.get("code") for r in refused] == ["recipient_unavailable"] * 2
    assert world.frame(paul, action="typing", conversation_id=CONV) == []
    assert world.ask(paul, action="ack", conversation_id=CONV, seq=2)["seq"] == 2
    assert world.ask(paul, action="read", conversation_id=CONV, seq=2)["seq"] == 2
    world.wrote_to(PAUL, Identity("user", "paul-friend"))
    created = world.ask(paul, action="group_create", title="trap", members=[BOB.to_json()])
    assert created.get("code") == "cannot_add"
    group = world.ask(paul, action="group_create", title="later", members=[])
    added = world.ask(paul, action="group_add", conversation_id=group["conversation_id"], members=[BOB.to_json()])
    assert added.get("code") == "cannot_add"
    assert pulled(world, PAUL, BOB) == {"identity": BOB.to_json(), "online": False, "last_seen": None}
    # and BOB, going about its day, tells PAUL nothing either (its read: the next test)
    assert world.ask(bob, action="ack", conversation_id=CONV, seq=1)["seq"] == 1
    assert world.frame(bob, action="typing", conversation_id=CONV) == []
    run_jobs(world, "ack_check")
    run_jobs(world, "presence_settle")
    world.run_fanouts()

    assert about(world, paul, BOB) == []
    assert about(world, bob, PAUL) == []
    assert entry(world, paul)["peer_acked_seq"] == 0  # type: ignore[index]
    assert entry(world, bob)["peer_acked_seq"] == 0  # type: ignore[index]
    messages_after, _ = world.stored()  # nothing of PAUL's stored in the conversation
    assert [m for m in messages_after if m["pk"] == CONV] == [m for m in messages_before if m["pk"] == CONV]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_the_blockers_read_ack_and_typing_tell_the_blocked_peer_nothing(world: World, transport: str) -> None:
    send(world, BOB, PAUL, "hi")
    send(world, PAUL, BOB, "hello")  # BOB has not read it yet (a sender reads only its own)
    block(world, BOB)
    paul = world.connect(transport, PAUL)
    bob = world.connect(transport, BOB)
    assert world.ask(paul, action="ack", conversation_id=CONV, seq=2)["seq"] == 2  # no retransmission of 1
    assert world.ask(bob, action="ack", conversation_id=CONV, seq=2)["seq"] == 2
    assert world.ask(bob, action="read", conversation_id=CONV, seq=2)["seq"] == 2
    assert world.frame(bob, action="typing", conversation_id=CONV) == []
    run_jobs(world, "ack_check")
    assert about(world, paul, BOB) == []
    assert entry(world, paul)["peer_acked_seq"] == 0  # type: ignore[index]
    assert "peer_read_seq" not in entry(world, paul) or entry(world, paul)["peer_read_seq"] == 0  # type: ignore[index,operator]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_unblock_restores_every_signal(world: World, transport: str) -> None:
    send(world, PAUL, BOB, "hello")
    send(world, BOB, PAUL, "hi")
    block(world, BOB)
    assert block(world, BOB, on=False) == {"type": "unblocked", "conversation_id": CONV, "peer": PAUL.to_json()}
    paul = world.connect(transport, PAUL)
    bob = world.connect(transport, BOB)
    assert world.ask(paul, action="send", conversation_id=CONV, text="thanks")["seq"] == 3
    assert world.ask(bob, action="ack", conversation_id=CONV, seq=3)["seq"] == 3
    assert world.ask(bob, action="read", conversation_id=CONV, seq=3)["seq"] == 3
    assert world.frame(bob, action="typing", conversation_id=CONV) == []
    assert [f["type"] for f in about(world, paul, BOB)] == ["presence", "delivered", "seen", "typing"]
    assert [f["type"] for f in about(world, bob, PAUL)] == ["message"]
    assert pulled(world, PAUL, BOB)["online"] is True
    group = world.ask(paul, action="group_create", title="ok now", members=[BOB.to_json()])
    assert group["type"] == "group", group


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_block_by_frame_is_idempotent_and_the_blocker_sees_it_and_may_hide_it(world: World, transport: str) -> None:
    send(world, PAUL, BOB, "hello")
    bob = world.connect(transport, BOB)
    paul = world.connect(transport, PAUL)
    for _ in range(2):
        answer = world.ask(bob, action="block", conversation_id=CONV)
        assert {k: v for k, v in answer.items() if k != "ref"} == {
            "type": "blocked", "conversation_id": CONV, "peer": PAUL.to_json()}
    assert entry(world, bob)["blocked"] is True  # type: ignore[index]
    assert entry(world, bob, hide_blocked=True) is None
    assert "blocked" not in entry(world, paul)  # type: ignore[operator]  # the blocked peer is told nothing
    assert entry(world, paul, hide_blocked=True) is not None
    # the blocker cannot write while it blocks; it is told why
    assert world.ask(bob, action="send", conversation_id=CONV, text="one more thing")["code"] == "blocked"
    for _ in range(2):
        assert world.ask(bob, action="unblock", conversation_id=CONV)["type"] == "unblocked"
    assert "blocked" not in entry(world, bob, hide_blocked=True)  # type: ignore[operator]
    assert world.ask(bob, action="send", conversation_id=CONV, text="one more thing")["seq"] == 2


def test_bad_block_frames_get_documented_codes_and_change_nothing(world: World) -> None:
    send(world, PAUL, BOB, "hello")
    bob = world.connect("ws", BOB)
    stranger = world.connect("ws", Identity("user", "nosy"))
    group = world.ask(bob, action="group_create", title="mine", members=[])["conversation_id"]
    _, before = world.stored()
    for action in ("block", "unblock"):
        assert world.ask(bob, action=action)["code"] == "invalid_field"
        assert world.ask(bob, action=action, conversation_id=7)["code"] == "invalid_field"
        assert world.ask(bob, action=action, conversation_id=group)["code"] == "invalid_field"
        assert world.ask(stranger, action=action, conversation_id=CONV)["code"] == "not_member"
        assert world.ask(bob, action=action, conversation_id="d_nothing_here")["code"] == "not_member"
    assert world.ask(bob, action="conversations", hide_blocked="yes")["code"] == "invalid_field"
    _, after = world.stored()
    assert after == before


def test_a_block_racing_sends_orders_them(world: World) -> None:
    """Sends from PAUL while BOB blocks: each is either stored and answered `sent` (before the
    block) or refused with nothing stored (after it); every send after the block's answer is refused."""
    send(world, PAUL, BOB, "hello")
    answers: list[Frame] = []
    start = threading.Barrier(5)

    def sending(n: int) -> None:
        start.wait()
        for i in range(4):
            request = SendRequest.parse({"id": f"race-{n}-{i}", "text": f"{n}.{i}", "conversation_id": CONV})
            try:
                answers.append(world.services.messaging.send(PAUL, request))
            except Exception as error:  # a refusal is a WebimError: its frame, as a client gets it
                answers.append(error.to_frame())  # type: ignore[attr-defined]

    def blocking() -> None:
        start.wait()
        block(world, BOB)

    threads = [threading.Thread(target=sending, args=(n,)) for n in range(4)] + [threading.Thread(target=blocking)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    sent = sorted(a["seq"] for a in answers if a["type"] == "sent")
    assert {a.get("code") for a in answers if a["type"] != "sent"} <= {"recipient_unavailable"}
    messages, _ = world.stored()
    stored = sorted(int(m["sk"]) for m in messages if m["pk"] == CONV and int(m["sk"]) > 0)
    assert stored == [1, *sent] == list(range(1, len(sent) + 2))  # gap-free, and nothing else stored
    paul_after = world.connect("ws", PAUL)
    assert world.ask(paul_after, action="send", conversation_id=CONV, text="after")["code"] == "recipient_unavailable"


@pytest.mark.parametrize("transport", ["ws", "lp"])
def test_block_and_unblock_through_the_sdk(app_stack: str, transport: str) -> None:
    """The Python SDK's `block` / `unblock` and `conversations(hide_blocked=)` against the real
    app served in-process: the blocked peer's message fails `recipient_unavailable`, never
    reaches the blocker; after `unblock` it goes through."""
    async def run() -> None:
        async with httpx.AsyncClient() as http:
            pest = await connect(http, app_stack, f"b-pest-{transport}", transport, [])
            bob = await connect(http, app_stack, f"b-bob-{transport}", transport, [])
            try:
                await exchange(pest, bob)
            finally:
                for client in (pest, bob):
                    await client.close()

    async def exchange(pest: Client, bob: Client) -> None:
        if True:
            first = await pest.send("buy now", to={"kind": "user", "id": f"b-bob-{transport}"})
            await asyncio.wait_for(first.accepted, WAIT)
            cid = str(first.conversation_id)
            assert (await asyncio.wait_for(bob.inbox.get(), WAIT))["seq"] == 1

            answer = await bob.block(cid)
            assert (answer["type"], answer["peer"]) == ("blocked", pest.identity)
            assert (await bob.conversations(hide_blocked=True))["conversations"] == []
            assert (await bob.conversations())["conversations"][0]["blocked"] is True
            refused = await pest.send("buy now!!", conversation_id=cid)
            with pytest.raises(ClientError) as raised:
                await asyncio.wait_for(refused.accepted, WAIT)
            assert refused.state == "failed" and raised.value.frame["message"] == "recipient_unavailable"

            assert (await bob.unblock(cid))["type"] == "unblocked"
            again = await pest.send("sorry", conversation_id=cid)
            await asyncio.wait_for(again.accepted, WAIT)
            # what bob gets next is the message after the block: the refused one never came
            assert (await asyncio.wait_for(bob.inbox.get(), WAIT))["text"] == "sorry"

    asyncio.run(run())


def test_the_benchmark_counts_a_block_a_refused_send_and_an_unblock(provisioned: dict[str, str]) -> None:
    """bench/block_calls.py (docs/performance.md `block`): the calls it prices."""
    from bench.block_calls import measure

    calls = {name: [r.call.split(".")[-1] for r in phase.records] for name, phase in measure(provisioned).items()}
    block, refused, unblock = calls.values()
    assert block == unblock == ["GetItem", "TransactWriteItems", "PostToConnection"]  # the answer is the push
    assert refused == ["TransactWriteItems", "PostToConnection"]  # no check scheduled, nothing pushed to the blocker
