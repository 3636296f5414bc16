"""A refused or failed WebSocket handshake leaves nothing behind (issue 11, finding 6).

API Gateway sends no `$disconnect` for a handshake it did not complete, so whatever `$connect`
registered before failing would show the identity online, and receive pushes, with nothing
connected. Two ways to get there: the app's `$connect` fails after registering (a store or
queue call failing mid-way), and the client leaving while `$connect` runs (the local gateway
then could not accept, and told the app nothing).
"""
from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import pytest
from chalice import Chalice
from chalice.app import WebsocketEvent

import app as webim
from chalicelib.principal import Identity
from chalicelib.wiring import Services, install_services
from devstack.connections import ConnectionRegistry
from devstack.events import WebSocketPeer, ws_connect_event
from devstack.invoker import LambdaInvoker
from devstack.server import build_asgi
from tests.conftest import free_port, table
from tests.doubles import RecordingSender
from tests.harness import serve_in_thread


class FailingCalls:
    """botocore hook: the named operation fails (as one throttled past its retries would) while armed."""

    def __init__(self) -> None:
        self.operation: str | None = None

    def hook(self, event_name: str, **_: Any) -> None:
        if self.operation is not None and event_name.split(".")[2] == self.operation:
            raise RuntimeError(f"injected failure of {self.operation}")


@pytest.fixture
def failing(provisioned: dict[str, str]) -> Iterator[tuple[Services, FailingCalls]]:
    calls = FailingCalls()
    session = boto3.session.Session()
    session.events.register("before-call.*.*", calls.hook)
    env = {**provisioned, "WEBIM_DEV_LOGIN": "1"}
    services = Services.from_env(env, session=session, sender=RecordingSender())
    install_services(services)
    yield services, calls
    install_services(None)


def connect(connection_id: str, token: str) -> int:
    """`$connect` through the app's handler, as the local gateway invokes it; its status."""
    peer = WebSocketPeer(connection_id, "127.0.0.1:8000", "local", "127.0.0.1", query={"token": [token]})
    return LambdaInvoker(webim.app).websocket("$connect", ws_connect_event(peer))


def stored_connection_items(env: dict[str, str], connection_id: str, identity: Identity) -> list[dict[str, Any]]:
    items = table(env["CONNECTIONS_TABLE"]).scan()["Items"]
    return [i for i in items if i["pk"] == f"C#{connection_id}" or i["sk"] == f"C#{connection_id}"]


@pytest.mark.parametrize("operation", ["SendMessage", "UpdateItem"])
def test_a_handshake_failing_after_registration_leaves_no_connection_and_no_presence(
    failing: tuple[Services, FailingCalls], provisioned: dict[str, str], operation: str,
) -> None:
    services, calls = failing
    issued = services.authenticator.dev_login("seller")  # a user: presence public to anyone
    calls.operation = operation  # the presence deadline's check (SQS) or its write fails
    assert connect("c1", issued.token) == 500  # the handshake is refused
    calls.operation = None
    assert stored_connection_items(provisioned, "c1", issued.identity) == []
    assert services.router.lookup("c1") is None
    assert services.router.connections_of(issued.identity) == []
    assert services.presence.batch([issued.identity], caller=issued.identity)[0]["online"] is False
    # and the identity can connect normally afterwards
    assert connect("c2", issued.token) == 200
    assert [c.connection_id for c in services.router.connections_of(issued.identity)] == ["c2"]
    assert services.presence.batch([issued.identity], caller=issued.identity)[0]["online"] is True


@pytest.mark.parametrize("operation", ["PutItem", "SendMessage"])
def test_a_long_poll_open_failing_mid_way_leaves_no_connection_no_mailbox_and_no_presence(
    failing: tuple[Services, FailingCalls], provisioned: dict[str, str], operation: str,
) -> None:
    """The long-poll twin: the mailbox write or the presence check fails after registration."""
    services, calls = failing
    issued = services.authenticator.dev_login("seller")
    calls.operation = operation
    with pytest.raises(RuntimeError, match="injected"):
        services.long_poll.open(issued.identity)
    calls.operation = None
    assert table(provisioned["CONNECTIONS_TABLE"]).scan()["Items"] == [
        i for i in table(provisioned["CONNECTIONS_TABLE"]).scan()["Items"] if i["sk"] == "#presence"
    ]
    assert services.router.connections_of(issued.identity) == []
    assert services.presence.batch([issued.identity], caller=issued.identity)[0]["online"] is False
    opened = services.long_poll.open(issued.identity)  # and a normal open afterwards
    assert [c.connection_id for c in services.router.connections_of(issued.identity)] == [opened["connection_id"]]


def test_a_refused_credential_writes_nothing(failing: tuple[Services, FailingCalls],
                                            provisioned: dict[str, str]) -> None:
    assert connect("c1", "not-a-token") == 401
    assert table(provisioned["CONNECTIONS_TABLE"]).scan()["Items"] == []


# -- the local gateway: a client that leaves while `$connect` runs ------------------------------
gateway_app = Chalice(app_name="handshake")
gateway_app.experimental_feature_flags.update(["WEBSOCKETS"])
gateway_app.websocket_api.session = boto3.session.Session(region_name="us-east-1")
events: list[str] = []
client_left = threading.Event()


@gateway_app.on_ws_connect()
def slow_connect(event: WebsocketEvent) -> None:
    events.append("connect")
    client_left.wait(timeout=30)  # `$connect` is still running when the client goes


@gateway_app.on_ws_message()
def message(event: WebsocketEvent) -> None:
    events.append("message")


@gateway_app.on_ws_disconnect()
def disconnect(event: WebsocketEvent) -> None:
    events.append("disconnect")


HANDSHAKE = (b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


def wait_for(condition: Any, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_client_leaving_during_connect_gets_its_disconnect() -> None:
    """The app registered the connection in `$connect`; it must hear that it is gone."""
    events.clear()
    client_left.clear()
    port = free_port()
    executor = ThreadPoolExecutor(max_workers=4)
    asgi = build_asgi(LambdaInvoker(gateway_app), ConnectionRegistry(), executor, frontend=None)
    with serve_in_thread(asgi, port):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(HANDSHAKE)
        wait_for(lambda: "connect" in events)
        sock.close()
        # let the server see the close before `$connect` returns: a later request on a new
        # socket is answered after the close was read (one event loop, in order)
        with socket.create_connection(("127.0.0.1", port)) as probe:
            probe.sendall(b"GET /config.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert probe.recv(64).startswith(b"HTTP/1.1 200")
        client_left.set()
        wait_for(lambda: "disconnect" in events)
    executor.shutdown(wait=True)
    assert events == ["connect", "disconnect"]
