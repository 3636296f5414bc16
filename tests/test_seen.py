"""Seen and the read-receipts setting (protocol.md §14.3) on moto, on both transports: a 1:1
`read` that moves pushes `seen` to the peer once, only when both have read receipts on; the
state survives a reload as `peer_read_seq` in the conversation list; the `settings` frame."""
from __future__ import annotations

from typing import Any

import pytest

from chalicelib.logic.messaging import direct_conversation_id
from chalicelib.principal import Identity
from tests.signal_fixtures import TRANSPORTS, World

ALICE = Identity("user", "alice")
BOB = Identity("user", "bob")
CAROL = Identity("user", "carol")
EVE = Identity("user", "eve")
CONV = direct_conversation_id(ALICE, BOB)
POST = "apigatewaymanagementapi.PostToConnection"


@pytest.fixture
def world(provisioned: dict[str, str]) -> World:
    return World(provisioned)


def chat(world: World, transport: str, messages: int = 2) -> tuple[list[str], str]:
    """alice (two connections) has sent bob (one) `messages` messages."""
    alices = [world.connect(transport, ALICE), world.connect(transport, ALICE)]
    bob = world.connect(transport, BOB)
    for number in range(messages):
        assert world.ask(alices[0], action="send", to=BOB.to_json(), text=f"m{number}")["type"] == "sent"
    return alices, bob


def seen(seq: int, by: Identity = BOB) -> dict[str, Any]:
    return {"type": "seen", "conversation_id": CONV, "seq": seq, "by": by.to_json()}


def entry(world: World, connection: str, conversation_id: str = CONV) -> dict[str, Any]:
    listed = world.ask(connection, action="conversations")["conversations"]
    found, = [c for c in listed if c["conversation_id"] == conversation_id]
    return found


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_seen_is_pushed_to_every_connection_of_the_peer_once_per_move(world: World, transport: str) -> None:
    alices, bob = chat(world, transport)
    assert world.ask(bob, action="read", conversation_id=CONV, seq=1)["seq"] == 1
    for alice in alices:
        assert world.received(alice, "seen") == [seen(1)]
    assert world.ask(bob, action="read", conversation_id=CONV, seq=1)["seq"] == 1  # did not move
    assert world.ask(bob, action="read", conversation_id=CONV, seq=2)["seq"] == 2
    assert world.ask(bob, action="read", conversation_id=CONV, seq=1)["seq"] == 2  # never back
    for alice in alices:
        assert world.received(alice, "seen") == [seen(1), seen(2)]
    assert world.received(bob, "seen") == []


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("off", ["reader", "peer"])
def test_no_seen_and_no_peer_read_seq_when_either_side_has_receipts_off(world: World, transport: str,
                                                                        off: str) -> None:
    alices, bob = chat(world, transport)
    who = bob if off == "reader" else alices[1]
    assert world.ask(who, action="settings", read_receipts=False)["read_receipts"] is False
    world.ask(bob, action="ack", conversation_id=CONV, seq=2)  # a client reads what it has received
    world.ask(bob, action="read", conversation_id=CONV, seq=1)
    assert world.received(alices[0], "seen") == []
    assert "peer_read_seq" not in entry(world, alices[0])
    assert "peer_read_seq" not in entry(world, bob)
    # on again: the next move is pushed, and the list shows it
    assert world.ask(who, action="settings", read_receipts=True)["read_receipts"] is True
    world.ask(bob, action="read", conversation_id=CONV, seq=2)
    assert world.received(alices[0], "seen") == [seen(2)]
    assert entry(world, alices[0])["peer_read_seq"] == 2


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_seen_survives_a_reload_as_peer_read_seq(world: World, transport: str) -> None:
    alices, bob = chat(world, transport)
    assert entry(world, alices[0])["peer_read_seq"] == 0  # bob has read nothing yet
    world.ask(bob, action="ack", conversation_id=CONV, seq=2)
    world.ask(bob, action="read", conversation_id=CONV, seq=2)
    reloaded = world.connect(transport, ALICE)  # a new page: the pushed `seen` is gone
    listed = entry(world, reloaded)
    assert listed["peer_read_seq"] == 2 and listed["peer_acked_seq"] == 2


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_peer_read_seq_never_passes_what_the_peer_received(world: World, transport: str) -> None:
    # bob has received only alice's first message (the second was lost on its way) and replies:
    # his own send moves his read mark to his reply, past alice's second message he never got
    alices, bob = chat(world, transport)
    world.ask(bob, action="ack", conversation_id=CONV, seq=1)
    assert world.ask(bob, action="send", to=ALICE.to_json(), text="reply")["seq"] == 3
    assert entry(world, alices[0])["peer_read_seq"] == 1  # seen: only what bob has
    world.ask(bob, action="ack", conversation_id=CONV, seq=3)  # the pull brought the second
    assert entry(world, alices[0])["peer_read_seq"] == 3


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_the_settings_frame_round_trips_and_defaults_on(world: World, transport: str) -> None:
    alice = world.connect(transport, ALICE)
    other = world.connect(transport, ALICE)
    first = world.ask(alice, action="settings")
    assert first == {"type": "settings", "ref": first["ref"], "read_receipts": True}
    _, members = world.stored()
    assert [i for i in members if i["sk"] == "S#"] == []  # reading the default stores nothing
    assert world.ask(alice, action="settings", read_receipts=False)["read_receipts"] is False
    assert world.ask(other, action="settings")["read_receipts"] is False  # stored, not per connection
    assert world.ask(alice, action="settings", read_receipts=None)["read_receipts"] is False  # null = just read


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_bad_input_gets_the_documented_error_and_stores_nothing(world: World, transport: str) -> None:
    alices, bob = chat(world, transport)
    before = world.stored()
    for value in ("no", 0, 1, [], {}):
        refused = world.ask(bob, action="settings", read_receipts=value)
        assert refused["type"] == "error" and refused["code"] == "invalid_field", value
    eve = world.connect(transport, EVE)
    unknown = world.ask(eve, action="read", conversation_id=CONV, seq=1)
    assert unknown["type"] == "error" and unknown["code"] == "not_member"
    unknown = world.ask(bob, action="read", conversation_id="d_no-such-conversation", seq=1)
    assert unknown["type"] == "error" and unknown["code"] == "not_member"
    assert world.stored() == before
    assert world.received(alices[0], "seen") == []


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_group_read_pushes_no_seen(world: World, transport: str) -> None:
    alice = world.connect(transport, ALICE)
    bob = world.connect(transport, BOB)
    world.wrote_to(ALICE, BOB, CAROL)
    group = world.ask(alice, action="group_create", title="g", members=[BOB.to_json(), CAROL.to_json()])
    world.ask(alice, action="send", conversation_id=group["conversation_id"], text="hi")
    world.run_fanouts()
    assert world.ask(bob, action="read", conversation_id=group["conversation_id"], seq=2)["seq"] == 2
    world.run_fanouts()
    assert world.received(alice, "seen") == []
    assert "peer_read_seq" not in entry(world, alice, group["conversation_id"])


def test_calls_of_a_read_with_seen_and_of_the_list(world: World) -> None:
    """A read that moves: its write, one BatchGetItem of both settings, the peer's connections,
    a push to each; one that does not move: the write only. The list reads the peers' cursors
    and both settings in the BatchGetItem it already made."""
    alices, bob = chat(world, "ws")
    world.h.log.calls.clear()
    world.frame(bob, action="read", id="r1", conversation_id=CONV, seq=1)
    assert world.h.log.calls == ["dynamodb.UpdateItem", "dynamodb.BatchGetItem", "dynamodb.Query", POST, POST, POST]
    world.h.log.calls.clear()
    world.frame(bob, action="read", id="r2", conversation_id=CONV, seq=1)
    assert world.h.log.calls == ["dynamodb.UpdateItem", POST]  # the answer only
    world.h.log.calls.clear()
    world.frame(alices[0], action="conversations", id="l1")
    assert world.h.log.calls == ["dynamodb.Query", "dynamodb.Query", "dynamodb.BatchGetItem", POST]
