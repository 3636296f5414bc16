"""Every signal about a person passes one privacy rule (logic/privacy.py; issue 21, findings 1-2).

A stranger writes once to visitor V; V never answers. Neither V (acking, reading, typing) nor
the user U that V later becomes may tell the stranger anything through `delivered`, `seen`,
`typing` or the list's `peer_acked_seq` / `peer_read_seq`: those would show that V came online,
or who V became. Once V (or U as V) writes there, the signals flow as usual. Both transports.
"""
from __future__ import annotations

import json

import pytest

from chalicelib.logic.messaging import direct_conversation_id
from chalicelib.principal import Identity
from tests.signal_fixtures import TRANSPORTS, World

VISITOR = Identity("visitor", "v-watched")
USER = Identity("user", "u-became")
STRANGER = Identity("user", "cold-caller")
CONV = direct_conversation_id(STRANGER, VISITOR)
SIGNALS = ("delivered", "seen", "typing")


@pytest.fixture
def world(provisioned: dict[str, str]) -> World:
    return World(provisioned)


def signals(world: World, connection: str) -> list[dict[str, object]]:
    return [f for f in world.received(connection) if f.get("type") in SIGNALS]


def peer_cursors(world: World, connection: str) -> tuple[object, object]:
    listed = world.ask(connection, action="conversations")["conversations"]
    entry, = [c for c in listed if c["conversation_id"] == CONV]
    return entry["peer_acked_seq"], entry.get("peer_read_seq")


def act(world: World, connection: str, seq: int) -> None:
    """What any client does with a message it shows: ack it, read it, start typing a reply."""
    assert world.ask(connection, action="ack", conversation_id=CONV, seq=seq)["type"] == "acked"
    assert world.ask(connection, action="read", conversation_id=CONV, seq=seq)["type"] == "read"
    assert world.frame(connection, action="typing", conversation_id=CONV) == []


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_visitor_that_never_wrote_gives_the_stranger_no_signal(world: World, transport: str) -> None:
    stranger = world.connect(transport, STRANGER)
    assert world.ask(stranger, action="send", to=VISITOR.to_json(), text="hello")["seq"] == 1
    visitor = world.connect(transport, VISITOR)
    act(world, visitor, 1)
    assert signals(world, stranger) == []
    assert peer_cursors(world, stranger) == (0, 0)
    # the ack check finds the message acked and tells nobody (it never retransmits either)
    checks = [j for j in world.jobs if j.get("kind") == "ack_check"]
    for job in checks:
        world.services.jobs.run(json.dumps(job))
    assert signals(world, stranger) == []


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_the_user_a_visitor_became_gives_the_stranger_no_signal(world: World, transport: str) -> None:
    """The black-box reproduction: 3 of 3 rounds leaked `delivered`, `seen` and `typing` by U."""
    stranger = world.connect(transport, STRANGER)
    for round_ in range(3):
        assert world.ask(stranger, action="send", to=VISITOR.to_json(), text=f"r{round_}")["seq"] == round_ + 1
    world.services.linking.link(USER, VISITOR)
    user = world.connect(transport, USER)
    for seq in (1, 2, 3):
        act(world, user, seq)
    assert signals(world, stranger) == []
    assert peer_cursors(world, stranger) == (0, 0)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_once_the_visitor_writes_its_signals_flow(world: World, transport: str) -> None:
    stranger = world.connect(transport, STRANGER)
    world.ask(stranger, action="send", to=VISITOR.to_json(), text="hello")
    visitor = world.connect(transport, VISITOR)
    assert world.ask(visitor, action="send", to=STRANGER.to_json(), text="hi, who is this?")["seq"] == 2
    assert world.ask(stranger, action="send", to=VISITOR.to_json(), text="a seller")["seq"] == 3
    act(world, visitor, 3)
    kinds = [f["type"] for f in signals(world, stranger)]
    assert kinds == ["delivered", "seen", "typing"]
    assert peer_cursors(world, stranger) == (3, 3)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_user_in_its_own_conversation_is_not_hidden(world: World, transport: str) -> None:
    """A user's presence is public: writing to a user and getting `delivered` is the norm."""
    buyer = Identity("user", "buyer")
    conversation = direct_conversation_id(STRANGER, buyer)
    stranger = world.connect(transport, STRANGER)
    world.ask(stranger, action="send", to=buyer.to_json(), text="hello")
    user = world.connect(transport, buyer)
    assert world.ask(user, action="ack", conversation_id=conversation, seq=1)["seq"] == 1
    assert [f["type"] for f in signals(world, stranger)] == ["delivered"]
