"""Typing (protocol.md §14.2) on moto, on both transports: pushed to the peer's open
connections, never stored, one push per interval per sender (the interval moved on with the
injected clock), refused for a non-member, and in a group fanned out to the online members
except the sending connection."""
from __future__ import annotations

from typing import Any

import pytest

from chalicelib.logic.fanout import GROUP_FANOUT
from chalicelib.logic.messaging import direct_conversation_id
from chalicelib.principal import Identity
from tests.signal_fixtures import TRANSPORTS, World

ALICE = Identity("user", "alice")
BOB = Identity("user", "bob")
CAROL = Identity("user", "carol")
EVE = Identity("user", "eve")  # never a member
CONV = direct_conversation_id(ALICE, BOB)
POST = "apigatewaymanagementapi.PostToConnection"


@pytest.fixture
def world(provisioned: dict[str, str]) -> World:
    return World(provisioned)


def talking(world: World, transport: str) -> tuple[str, list[str]]:
    """alice (one connection) and bob (two) on `transport`, in a conversation with one message."""
    alice = world.connect(transport, ALICE)
    bobs = [world.connect(transport, BOB), world.connect(transport, BOB)]
    assert world.ask(alice, action="send", to=BOB.to_json(), text="hello")["type"] == "sent"
    return alice, bobs


def typing_frames(world: World, connection: str) -> list[dict[str, Any]]:
    return world.received(connection, "typing")


def without_typing_at(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in item.items() if k != "typing_at"} for item in items]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_typing_reaches_every_connection_of_the_peer_and_stores_nothing(world: World, transport: str) -> None:
    alice, bobs = talking(world, transport)
    messages, members = world.stored()
    assert world.frame(alice, action="typing", conversation_id=CONV) == []  # no answer
    expected = {"type": "typing", "conversation_id": CONV, "from": ALICE.to_json()}
    for bob in bobs:
        assert typing_frames(world, bob) == [expected]
    assert typing_frames(world, alice) == []
    after_messages, after_members = world.stored()
    assert after_messages == messages  # no message, the head (seq, preview) unchanged
    # only alice's own membership changed, and only its typing_at
    assert without_typing_at(after_members) == without_typing_at(members)
    changed = [i for i in after_members if i not in members]
    assert [(i["pk"], i["sk"]) for i in changed] == [(ALICE.key, "C#" + CONV)]
    # the next message takes the next seq: typing took none
    assert world.ask(bobs[0], action="send", conversation_id=CONV, text="hi")["seq"] == 2


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_burst_inside_the_interval_pushes_once(world: World, transport: str) -> None:
    alice, bobs = talking(world, transport)
    for _ in range(10):
        assert world.frame(alice, action="typing", conversation_id=CONV) == []
    assert len(typing_frames(world, bobs[0])) == 1
    world.clock.now += 2.999  # still inside the 3 s interval
    world.frame(alice, action="typing", conversation_id=CONV)
    assert len(typing_frames(world, bobs[0])) == 1
    world.clock.now += 0.001  # the interval has passed
    for _ in range(5):
        world.frame(alice, action="typing", conversation_id=CONV)
    assert len(typing_frames(world, bobs[0])) == 2
    # each sender has its own interval: bob's typing goes through at once
    world.frame(bobs[1], action="typing", conversation_id=CONV)
    assert typing_frames(world, alice) == [{"type": "typing", "conversation_id": CONV, "from": BOB.to_json()}]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_non_member_is_refused_and_nothing_is_pushed_or_stored(world: World, transport: str) -> None:
    alice, bobs = talking(world, transport)
    eve = world.connect(transport, EVE)
    before = world.stored()
    refused = world.ask(eve, action="typing", conversation_id=CONV)
    assert refused["type"] == "error" and refused["code"] == "not_member"
    unknown = world.ask(alice, action="typing", conversation_id="d_no-such-conversation")
    assert unknown["type"] == "error" and unknown["code"] == "not_member"
    bad = world.ask(alice, action="typing")
    assert bad["type"] == "error" and bad["code"] == "invalid_field"
    assert world.stored() == before  # the failed condition created no membership
    for connection in (alice, *bobs):
        assert typing_frames(world, connection) == []


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_group_typing_reaches_online_members_except_the_sending_connection(world: World, transport: str) -> None:
    a1 = world.connect(transport, ALICE)
    a2 = world.connect(transport, ALICE)  # alice's other device
    b1 = world.connect(transport, BOB)
    e1 = world.connect(transport, EVE)  # online, never a member
    world.wrote_to(ALICE, BOB, CAROL)
    group = world.ask(a1, action="group_create", title="Bike parts",
                      members=[BOB.to_json(), CAROL.to_json()])["conversation_id"]  # carol is offline
    world.run_fanouts()
    messages, _ = world.stored()
    world.jobs.clear()
    world.h.log.calls.clear()
    assert world.frame(a1, action="typing", conversation_id=group) == []
    assert world.frame(a1, action="typing", conversation_id=group) == []  # inside the interval: dropped
    assert world.h.log.calls == ["dynamodb.UpdateItem", "sqs.SendMessage", "dynamodb.UpdateItem"]  # one job
    assert world.run_fanouts() == 1
    expected = [{"type": "typing", "conversation_id": group, "from": ALICE.to_json()}]
    assert typing_frames(world, b1) == expected
    assert typing_frames(world, a2) == expected  # her other device: only the sending connection is skipped
    assert typing_frames(world, a1) == []
    assert typing_frames(world, e1) == []
    assert world.stored()[0] == messages  # the group's messages and head unchanged
    # a non-member of the group is refused and starts no fan-out
    refused = world.ask(e1, action="typing", conversation_id=group)
    assert refused["code"] == "not_member"
    assert [j for j in world.jobs if j.get("kind") == GROUP_FANOUT] == []


def test_one_typing_frame_costs_one_write_one_lookup_and_the_pushes(world: World) -> None:
    """1:1, a warm container: UpdateItem (membership + rate), Query (bob's connections), a push each."""
    alice, bobs = talking(world, "ws")
    world.h.log.calls.clear()
    world.frame(alice, action="typing", conversation_id=CONV)
    assert world.h.log.calls == ["dynamodb.UpdateItem", "dynamodb.Query", POST, POST]
    world.h.log.calls.clear()
    world.frame(alice, action="typing", conversation_id=CONV)  # inside the interval
    assert world.h.log.calls == ["dynamodb.UpdateItem"]


def test_the_benchmark_counts_one_burst_and_one_read_with_seen(provisioned: dict[str, str]) -> None:
    """bench/typing_calls.py (docs/performance.md `typing`): the calls it prices."""
    from bench.typing_calls import GROUP_ONLINE, measure

    calls = {name: [r.call.split(".")[-1] for r in phase.records] for name, phase in measure(provisioned).items()}
    one_to_one, dropped, group, read = calls.values()
    assert one_to_one == ["UpdateItem", "Query", "PostToConnection"]
    assert dropped == ["UpdateItem"]
    # the frame: write + job; the job: roster page, presence with each member's routes, pushes (no Query per member)
    assert group[:2] == ["UpdateItem", "SendMessage"]
    assert sorted(group[2:]) == sorted(["Query", "BatchGetItem"] + ["PostToConnection"] * (GROUP_ONLINE - 1))
    assert read == ["UpdateItem", "BatchGetItem", "Query", "PostToConnection", "PostToConnection"]
