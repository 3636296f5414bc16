"""`ping` with `groups: true` (protocol.md §13.8): the keepalive also answers each of the
caller's groups' last seq, so a member that lost every push of a burst learns of it on its next
keepalive, in the same invocation; only the caller's own groups; one Query and one BatchGetItem."""
from __future__ import annotations

import pytest

from chalicelib.principal import Identity
from tests.signal_fixtures import TRANSPORTS, World

ALICE = Identity("user", "alice")
BOB = Identity("user", "bob")
EVE = Identity("user", "eve")


@pytest.fixture
def world(provisioned: dict[str, str]) -> World:
    return World(provisioned)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_the_pong_tells_the_last_seq_of_each_group_of_the_caller(world: World, transport: str) -> None:
    alice = world.connect(transport, ALICE)
    bob = world.connect(transport, BOB)
    eve = world.connect(transport, EVE)
    world.wrote_to(ALICE, BOB)
    ours = world.ask(alice, action="group_create", title="ours", members=[BOB.to_json()])["conversation_id"]
    hers = world.ask(eve, action="group_create", title="hers", members=[])["conversation_id"]
    for n in range(3):
        world.ask(alice, action="send", conversation_id=ours, text=f"m{n}")  # pushes lost or not: stored
    assert world.ask(bob, action="ping", groups=True)["groups"] == {ours: 4}  # the created event is seq 1
    assert world.ask(eve, action="ping", groups=True)["groups"] == {hers: 1}
    assert "groups" not in world.ask(bob, action="ping")  # a plain keepalive reads nothing more


def test_the_tails_cost_one_query_and_one_batch_read(world: World) -> None:
    bob = world.connect("ws", BOB)
    world.wrote_to(ALICE, BOB)
    alice = world.connect("ws", ALICE)
    for title in ("a", "b", "c"):
        world.ask(alice, action="group_create", title=title, members=[BOB.to_json()])
    world.h.log.calls.clear()
    world.ask(bob, action="ping")
    plain = list(world.h.log.calls)
    world.h.log.calls.clear()
    assert len(world.ask(bob, action="ping", groups=True)["groups"]) == 3
    extra = list(world.h.log.calls)
    # the keepalive's own calls (connection, heartbeat, the pong); the heartbeat's deadline is in
    # whole seconds, so one of the two pings may extend it (and schedule its check) and not the other
    heartbeat = {"dynamodb.UpdateItem", "sqs.SendMessage"}
    for call in [c for c in plain if c not in heartbeat]:
        extra.remove(call)
    assert sorted(c for c in extra if c not in heartbeat) == ["dynamodb.BatchGetItem", "dynamodb.Query"]


@pytest.mark.parametrize("value", ["yes", 1, [], {}])
def test_a_groups_field_that_is_not_a_boolean_is_invalid(world: World, value: object) -> None:
    bob = world.connect("ws", BOB)
    answer = world.ask(bob, action="ping", groups=value)
    assert answer["type"] == "error" and answer["code"] == "invalid_field"
    assert world.ask(bob, action="ping")["type"] == "pong"  # the connection stays usable
