"""Routing over the connections table: register, look up, push, and forget on 410 Gone."""
from __future__ import annotations

import json
import os
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from chalicelib.errors import ConnectionGoneError
from chalicelib.principal import Identity
from chalicelib.routing.router import Router
from chalicelib.routing.sender import CallbackApiSender
from chalicelib.storage.connections import ConnectionRecord, ConnectionsTable
from tests.conftest import table
from tests.doubles import RecordingSender

ALICE = Identity("user", "alice")


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def connections(provisioned: dict[str, str]) -> Any:
    return table(provisioned["CONNECTIONS_TABLE"])


def test_register_then_lookup_and_list_by_user(connections: Any) -> None:
    clock = Clock()
    router = Router(ConnectionsTable(connections, clock), RecordingSender(), ttl_seconds=60, clock=clock)
    router.register("a1", ALICE, "http://e")
    router.register("a2", ALICE, "http://e")
    router.register("b1", Identity("user", "bob"), "http://e")
    router.register("v1", Identity("visitor", "alice"), "http://e")  # same id, other kind
    record = router.lookup("a1")
    assert record is not None and record.identity == ALICE and record.expires_at == 1_000_060
    table_ = ConnectionsTable(connections, clock)
    assert sorted(r.connection_id for r in table_.list_for(ALICE)) == ["a1", "a2"]
    assert [r.connection_id for r in table_.list_for(Identity("visitor", "alice"))] == ["v1"]


def test_expired_connections_are_ignored_at_read_time(connections: Any) -> None:
    clock = Clock()
    router = Router(ConnectionsTable(connections, clock), RecordingSender(), ttl_seconds=60, clock=clock)
    router.register("a1", ALICE, "http://e")
    clock.now += 61  # TTL has not deleted the items (it runs late), readers must not see them
    assert router.lookup("a1") is None
    assert ConnectionsTable(connections, clock).list_for(ALICE) == []


def test_push_to_user_reaches_every_connection(connections: Any) -> None:
    sender = RecordingSender()
    router = Router(ConnectionsTable(connections), sender, ttl_seconds=60)
    carol = Identity("user", "carol")
    for cid in ("t1", "t2", "t3"):
        router.register(cid, carol, "http://e")
    assert router.push_to(carol, {"type": "x"}) == 3
    assert sorted(cid for cid, _ in sender.sent) == ["t1", "t2", "t3"]
    assert {json.loads(data)["type"] for _, data in sender.sent} == {"x"}


def test_gone_connection_is_removed_from_routing(connections: Any) -> None:
    sender = RecordingSender()
    router = Router(ConnectionsTable(connections), sender, ttl_seconds=60)
    dan = Identity("user", "dan")
    router.register("live", dan, "http://e")
    dead = router.register("dead", dan, "http://e")
    sender.gone.add("dead")
    assert router.push(dead, {"type": "x"}) is False
    assert router.lookup("dead") is None
    assert router.push_to(dan, {"type": "y"}) == 1


def test_callback_sender_turns_410_into_connection_gone() -> None:
    client = boto3.client("apigatewaymanagementapi", endpoint_url="https://example.test/stage",
                          region_name="us-east-1")
    with Stubber(client) as stub:
        stub.add_client_error("post_to_connection", "GoneException", http_status_code=410)
        stub.add_response("post_to_connection", {})
        sender = CallbackApiSender(lambda endpoint: client)
        with pytest.raises(ConnectionGoneError):
            sender.send("https://example.test/stage", "c1", b"{}")
        sender.send("https://example.test/stage", "c1", b"{}")


def test_router_forgets_a_connection_the_real_callback_api_calls_gone(connections: Any, gateway: str) -> None:
    """The app's real boto3 code against the local callback API, which answers 410."""
    endpoint = os.environ["CALLBACK_URL"]
    session = boto3.session.Session()
    sender = CallbackApiSender(lambda url: session.client("apigatewaymanagementapi", endpoint_url=url))
    router = Router(ConnectionsTable(connections), sender, ttl_seconds=60)
    erin = Identity("user", "erin")
    record: ConnectionRecord = router.register("closed-long-ago", erin, endpoint)
    assert router.push(record, {"type": "x"}) is False
    assert router.lookup("closed-long-ago") is None
    assert ConnectionsTable(connections).list_for(erin) == []


def test_a_forgotten_connection_is_closed_too(connections: Any) -> None:
    """Regression (issue 21, finding 12): a 410 for a connection that is in fact open (API
    Gateway's false 410, a fault) deleted the record and left the socket open: deaf (pushes
    skip it) and mute (its frames found no record). Whoever drops a record now closes it."""
    clock = Clock()
    sender = RecordingSender()
    lp_sender = RecordingSender()
    router = Router(ConnectionsTable(connections, clock), sender, ttl_seconds=600, clock=clock,
                    long_poll_sender=lp_sender, handshake_grace_seconds=10)
    fay = Identity("user", "fay")
    ws = router.register("ws-1", fay, "http://e")
    lp = router.register("lp-1", fay, "mailbox", transport="lp")
    clock.now += 11  # past the handshake grace
    sender.gone.add("ws-1")
    lp_sender.gone.add("lp-1")
    assert router.push(ws, {"type": "x"}) is False
    assert router.push(lp, {"type": "x"}) is False
    assert sender.closed == ["ws-1"]  # DELETE @connections/ws-1
    assert lp_sender.closed == ["lp-1"]  # the mailbox and doorbell: the next poll is told
    assert router.lookup("ws-1") is None and router.lookup("lp-1") is None


def test_a_410_in_the_handshake_grace_neither_forgets_nor_closes(connections: Any) -> None:
    clock = Clock()
    sender = RecordingSender()
    router = Router(ConnectionsTable(connections, clock), sender, ttl_seconds=600, clock=clock,
                    handshake_grace_seconds=10)
    record = router.register("opening", Identity("user", "gus"), "http://e")
    sender.gone.add("opening")  # registered in $connect, not yet accepted by the gateway
    assert router.push(record, {"type": "x"}) is False
    assert sender.closed == [] and router.lookup("opening") is not None


def test_a_connection_without_a_record_is_told_and_closed(connections: Any) -> None:
    """A frame from a connection the server has no record of is answered `connection_gone`
    and the socket closed (it was answered nothing at all)."""
    sender = RecordingSender()
    router = Router(ConnectionsTable(connections), sender, ttl_seconds=60)
    router.refuse("http://e", "orphan", {"type": "error", "code": "connection_gone", "ref": "p-1"})
    assert [(cid, json.loads(data)["code"]) for cid, data in sender.sent] == [("orphan", "connection_gone")]
    assert sender.closed == ["orphan"]


def test_a_close_that_fails_keeps_the_record_for_the_next_410(connections: Any) -> None:
    """A record is dropped only once its connection is closed: were the close to fail after the
    record went, the socket would stay open, deaf and mute, with nothing left to retry it."""
    class CloseFails(RecordingSender):
        def close(self, endpoint: str, connection_id: str) -> None:
            raise RuntimeError("DELETE @connections failed after its retries")

    clock = Clock()
    sender = CloseFails()
    router = Router(ConnectionsTable(connections, clock), sender, ttl_seconds=600, clock=clock)
    record = router.register("stuck", Identity("user", "hal"), "http://e")
    sender.gone.add("stuck")
    assert router.push(record, {"type": "x"}) is False
    assert router.lookup("stuck") is not None  # kept: the next push meets the 410 and closes again
