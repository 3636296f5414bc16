"""Writes racing a close (issue 11, finding 2): an update must never re-create an item that a
`$disconnect` or `lp/close` just deleted, and readers skip an item that is not a whole
connection. Each race is injected deterministically: the racing write runs with the record a
container cached before the close."""
from __future__ import annotations

from typing import Any

import boto3
import pytest

from chalicelib.errors import LongPollGoneError
from chalicelib.logic.frames import Release
from chalicelib.principal import Identity
from chalicelib.storage.connections import ConnectionsTable
from chalicelib.storage.presence import PresenceTable
from tests.messaging_fixtures import Harness, build_harness

ALICE = Identity("user", "alice")
BOB = Identity("user", "bob")


@pytest.fixture
def harness(provisioned: dict[str, str]) -> Harness:
    h = build_harness(provisioned)
    h.connect("a1", ALICE)
    return h


def connections(env: dict[str, str]) -> Any:
    return boto3.resource("dynamodb").Table(env["CONNECTIONS_TABLE"])


def stored_items(env: dict[str, str], connection_id: str, identity: Identity = BOB) -> list[dict[str, Any]]:
    """The connection's own item and its routing item, whatever they hold."""
    table = connections(env)
    keys = [{"pk": f"C#{connection_id}", "sk": "#"}, {"pk": f"U#{identity.key}", "sk": f"C#{connection_id}"}]
    return [item for key in keys if (item := table.get_item(Key=key, ConsistentRead=True).get("Item"))]


def sends_to_bob_still_work(h: Harness, connection: str, client_id: str) -> None:
    h.frame("a1", action="send", id=client_id, text="still there?", to=BOB.to_json())
    assert [f["ref"] for f in h.frames_to("a1", "sent")][-1] == client_id
    assert not h.frames_to("a1", "error")
    assert h.frames_to(connection, "message")[-1]["client_id"] == client_id


def test_a_ping_racing_a_disconnect_recreates_nothing(harness: Harness, provisioned: dict[str, str]) -> None:
    harness.connect("b1", BOB)
    cached = harness.services.router.lookup("b1")  # the ping's container knows the connection
    assert cached is not None
    harness.services.sessions.close("b1")  # `$disconnect`, handled first
    harness.services.router.cache.put(cached)
    harness.frame("b1", action="ping", id="p")
    assert stored_items(provisioned, "b1") == []  # before: a routing item holding only live_until
    assert harness.frames_to("b1", "error")[-1]["code"] == "connection_gone"
    assert harness.services.router.lookup("b1") is None  # forgotten by that container too
    # the identity is not poisoned: sends and presence work
    harness.connect("b2", BOB)
    sends_to_bob_still_work(harness, "b2", "m1")
    harness.services.presence.settle({"identity": BOB.key})
    assert harness.services.presence.batch([BOB])[0]["online"] is True


def test_a_heartbeat_on_a_deleted_connection_changes_nothing(harness: Harness,
                                                             provisioned: dict[str, str]) -> None:
    harness.connect("b1", BOB)
    record = harness.services.router.lookup("b1")
    assert record is not None
    table = ConnectionsTable(connections(provisioned))
    table.delete(record)
    assert table.touch(record, record.live_until + 60) is False
    assert stored_items(provisioned, "b1") == []


def test_a_long_poll_refresh_racing_its_close_recreates_nothing(harness: Harness,
                                                                provisioned: dict[str, str]) -> None:
    connection = harness.services.long_poll.open(BOB)["connection_id"]
    cached = harness.services.router.lookup(connection)  # the poll's container knows it
    assert cached is not None
    harness.services.long_poll.close(BOB, connection)
    assert harness.services.router.refresh(cached, 30) is None
    assert stored_items(provisioned, connection) == []  # before: both items put back whole
    harness.services.router.cache.put(cached)
    with pytest.raises(LongPollGoneError):
        harness.services.long_poll.poll(BOB, connection, Release(0, 1))
    assert stored_items(provisioned, connection) == []
    # bob is offline (nothing connected), and a later connection gets sends as usual
    harness.services.presence.settle({"identity": BOB.key})
    assert harness.services.presence.batch([BOB])[0]["online"] is False
    harness.connect("b2", BOB)
    sends_to_bob_still_work(harness, "b2", "m1")


def test_an_item_without_expires_at_is_skipped_by_every_reader(harness: Harness,
                                                               provisioned: dict[str, str]) -> None:
    """What the old race left behind (it never expires): sends and presence must work anyway."""
    connections(provisioned).put_item(Item={"pk": f"U#{BOB.key}", "sk": "C#ghost", "live_until": 2**40})
    assert harness.services.router.connections_of(BOB) == []
    harness.services.presence.settle({"identity": BOB.key})  # before: KeyError 'expires_at'
    harness.connect("b1", BOB)
    sends_to_bob_still_work(harness, "b1", "m1")
    harness.services.presence.settle({"identity": BOB.key})
    assert harness.services.presence.batch([BOB])[0]["online"] is True
    harness.services.sessions.close("b1")
    harness.services.presence.settle({"identity": BOB.key})
    assert harness.services.presence.batch([BOB])[0]["online"] is False  # the ghost is no device


def test_presence_updates_never_create_the_item(provisioned: dict[str, str]) -> None:
    table = connections(provisioned)
    presence = PresenceTable(table)
    nobody = Identity("user", "nobody")
    assert presence.settle(nobody, online_until=5, last_seen_ms=5, version=0) is False
    assert presence.announce(nobody, "online", version=0) is False
    assert presence.read(nobody) == (None, [])
