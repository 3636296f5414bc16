"""The group fan-out reads the online members' connections from their presence items (issue 24,
point 1): each open connection's route (`r#<conn>`: endpoint, transport, opened at) rides on
the identity's presence item, so a page of 100 members costs one BatchGetItem, not one Query
per online member. The routes must stay right under the races: connect, disconnect, a
connection that vanished without `$disconnect` (a push meets 410), one whose routing item
expired (presence's settle prunes it), a long poll opened and closed.
"""
from __future__ import annotations

import json
import time

import boto3

from chalicelib.logic.frames import Release
from chalicelib.principal import Identity
from tests.test_groups_messaging import ALICE, BOB, CAROL, POST, World, world  # noqa: F401 - the fixture

__all__ = ["world"]


def routes(world: World, identity: Identity) -> dict[str, str]:
    """The connections the presence item carries: id -> transport."""
    found = world.h.services.presence._table.batch([identity], consistent=True)  # noqa: SLF001 - what the fan-out reads
    presence = found.get(identity)
    return {} if presence is None else {c.connection_id: c.transport for c in presence.connections}


def run_fanouts(world: World) -> int:
    """World.run_fanouts, leaving out what a long poll's doorbell rang (a SendMessage too)."""
    ran = 0
    while True:
        world.jobs[:] = [j for j in world.jobs if "kind" in j]
        pending = world.fanout_jobs()
        if not pending:
            return ran
        for job in pending:
            world.h.services.jobs.run(json.dumps(job))
            ran += 1


def closes_of(world: World, connection: str) -> int:
    """How many times the router closed `connection` (each push that met 410 closes it)."""
    return world.h.sender.closed.count(connection)


def test_the_presence_item_carries_each_open_connection_until_it_closes(world: World) -> None:
    world.connect("a1", ALICE)
    world.connect("a2", ALICE)
    lp = world.h.services.long_poll.open(ALICE)["connection_id"]
    assert routes(world, ALICE) == {"a1": "ws", "a2": "ws", lp: "lp"}

    world.h.services.sessions.close("a1")  # $disconnect
    world.h.services.long_poll.close(ALICE, lp)  # lp/close
    assert routes(world, ALICE) == {"a2": "ws"}


def test_one_fan_out_page_pushes_to_every_open_connection_with_no_query_per_member(world: World) -> None:
    group = world.create([ALICE, BOB, CAROL])
    world.connect("a1", ALICE)
    world.connect("b1", BOB)
    world.connect("b2", BOB)
    lp = world.h.services.long_poll.open(CAROL)["connection_id"]
    sent = world.send("a1", group, "hello")
    world.h.log.calls.clear()
    assert run_fanouts(world) == 1
    calls = world.h.log.calls
    # the roster page, the presence page; then the pushes: 2 WebSocket, 1 long poll (its mailbox
    # and doorbell)
    assert calls.count("dynamodb.Query") == 1 and calls.count("dynamodb.BatchGetItem") == 1
    assert sorted(calls) == sorted(["dynamodb.Query", "dynamodb.BatchGetItem", POST, POST,
                                    "dynamodb.UpdateItem", "sqs.SendMessage"])
    assert [m["seq"] for m in world.messages_to("b1", group)] == [sent["seq"]]
    assert [m["seq"] for m in world.messages_to("b2", group)] == [sent["seq"]]
    polled = world.h.services.long_poll.poll(CAROL, lp, Release(0, 1))
    assert [f["seq"] for f in polled["frames"] if f.get("type") == "message"] == [sent["seq"]]


def test_a_connection_gone_without_disconnect_meets_410_once_and_its_route_goes(world: World) -> None:
    """A stale route never makes a push go nowhere silently: the push meets 410, the router
    forgets the connection and its route, and later fan-outs no longer try it."""
    group = world.create([ALICE, BOB])
    world.connect("a1", ALICE)
    world.connect("b1", BOB)
    world.connect("b2", BOB)
    world.h.sender.gone.add("b2")  # the phone lost its network: no $disconnect (yet)
    world.send("a1", group, "first")
    run_fanouts(world)
    assert len(world.messages_to("b1", group)) == 1
    assert closes_of(world, "b2") == 1  # tried: 410, forgotten
    assert routes(world, BOB) == {"b1": "ws"}
    assert world.h.services.router.lookup("b2") is None  # forgotten

    world.send("a1", group, "second")
    run_fanouts(world)
    assert len(world.messages_to("b1", group)) == 2
    assert closes_of(world, "b2") == 1  # not tried again


def test_settle_prunes_the_route_of_a_connection_whose_routing_item_expired(world: World) -> None:
    """A lost `$disconnect` of a connection whose record expired: presence's settle (scheduled
    at its deadline) takes its route off the presence item, so the fan-out stops trying it."""
    group = world.create([ALICE, BOB])
    world.connect("a1", ALICE)
    world.connect("b1", BOB)
    world.connect("b2", BOB)
    table = boto3.resource("dynamodb").Table(world.env["CONNECTIONS_TABLE"])
    past = int(time.time()) - 1
    table.update_item(Key={"pk": f"U#{BOB.key}", "sk": "C#b2"}, UpdateExpression="SET expires_at = :p",
                      ExpressionAttributeValues={":p": past})
    world.h.services.jobs.run(json.dumps({"kind": "presence_settle", "identity": BOB.key}))
    assert routes(world, BOB) == {"b1": "ws"}

    world.send("a1", group, "hello")
    run_fanouts(world)
    assert len(world.messages_to("b1", group)) == 1
    assert world.messages_to("b2", group) == []


def test_a_route_written_after_its_connection_closed_is_pruned_by_settle(world: World) -> None:
    """A `$disconnect` handled before its `$connect` finished (another container): the route
    outlives the routing items; the settle the disconnect scheduled removes it."""
    world.connect("b1", BOB)
    world.connect("b2", BOB)
    record = world.h.services.router.lookup("b2")
    assert record is not None
    world.h.services.router.unregister(record)
    table = boto3.resource("dynamodb").Table(world.env["CONNECTIONS_TABLE"])
    table.update_item(Key={"pk": f"U#{BOB.key}", "sk": "#presence"}, UpdateExpression="SET #r = :r",
                      ExpressionAttributeNames={"#r": "r#b2"},
                      ExpressionAttributeValues={":r": {"endpoint": "http://recorded", "transport": "ws",
                                                        "connected_at": str(time.time()),
                                                        "expires_at": int(time.time()) + 600}})
    assert routes(world, BOB) == {"b1": "ws", "b2": "ws"}
    world.h.services.jobs.run(json.dumps({"kind": "presence_settle", "identity": BOB.key}))
    assert routes(world, BOB) == {"b1": "ws"}
