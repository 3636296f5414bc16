"""Routing over the connections table: register, look up, push, and forget on 410 Gone."""
from __future__ import annotations

import json
import os
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from chalicelib.errors import ConnectionGoneError
from chalicelib.routing.router import Router
from chalicelib.routing.sender import CallbackApiSender, RecordingSender
from chalicelib.storage.connections import ConnectionRecord, ConnectionsTable
from tests.conftest import table


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
    router.register("a1", "http://e", user_id="alice")
    router.register("a2", "http://e", user_id="alice")
    router.register("b1", "http://e", user_id="bob")
    router.register("anon", "http://e")
    record = router.lookup("a1")
    assert record is not None and record.user_id == "alice" and record.expires_at == 1_000_060
    table_ = ConnectionsTable(connections, clock)
    assert sorted(r.connection_id for r in table_.list_for_user("alice")) == ["a1", "a2"]
    assert router.lookup("anon") is not None


def test_expired_connections_are_ignored_at_read_time(connections: Any) -> None:
    clock = Clock()
    router = Router(ConnectionsTable(connections, clock), RecordingSender(), ttl_seconds=60, clock=clock)
    router.register("a1", "http://e", user_id="alice")
    clock.now += 61  # TTL has not deleted the items (it runs late), readers must not see them
    assert router.lookup("a1") is None
    assert ConnectionsTable(connections, clock).list_for_user("alice") == []


def test_push_to_user_reaches_every_connection(connections: Any) -> None:
    sender = RecordingSender()
    router = Router(ConnectionsTable(connections), sender, ttl_seconds=60)
    for cid in ("t1", "t2", "t3"):
        router.register(cid, "http://e", user_id="carol")
    assert router.push_to_user("carol", {"type": "x"}) == 3
    assert sorted(cid for cid, _ in sender.sent) == ["t1", "t2", "t3"]
    assert {json.loads(data)["type"] for _, data in sender.sent} == {"x"}


def test_gone_connection_is_removed_from_routing(connections: Any) -> None:
    sender = RecordingSender()
    router = Router(ConnectionsTable(connections), sender, ttl_seconds=60)
    router.register("live", "http://e", user_id="dan")
    dead = router.register("dead", "http://e", user_id="dan")
    sender.gone.add("dead")
    assert router.push(dead, {"type": "x"}) is False
    assert router.lookup("dead") is None
    assert router.push_to_user("dan", {"type": "y"}) == 1


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
    record: ConnectionRecord = router.register("closed-long-ago", endpoint, user_id="erin")
    assert router.push(record, {"type": "x"}) is False
    assert router.lookup("closed-long-ago") is None
    assert ConnectionsTable(connections).list_for_user("erin") == []
