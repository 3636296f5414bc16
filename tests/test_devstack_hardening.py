"""The local stack's own attack surface (issue 11, finding 8): handshakes it cannot parse are
answered and closed, and the `@connections` callback API on the public port accepts only the
app's own signed calls."""
from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import boto3
import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from websockets.asyncio.client import connect

from tests import recording_app
from tests.conftest import LocalStackProcess

HANDSHAKE_TAIL = ("Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                  "Sec-WebSocket-Version: 13\r\n\r\n")
# a bound for a failing test only (before the fix the socket was never answered nor closed)
NEVER = 20.0


def raw_exchange(host: str, request: bytes) -> tuple[bytes, bool]:
    """Send `request` on a fresh socket; return everything answered and whether it was closed."""
    address, port = host.split(":")
    with socket.create_connection((address, int(port)), timeout=NEVER) as sock:
        sock.sendall(request)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except TimeoutError:
            return answer, False
        return answer, True


def test_handshake_with_a_request_line_over_8kb_is_answered_414_and_closed(gateway: str) -> None:
    request = f"GET /ws?token={'a' * 9000} HTTP/1.1\r\nHost: {gateway}\r\n{HANDSHAKE_TAIL}".encode()
    answer, closed = raw_exchange(gateway, request)
    assert answer.startswith(b"HTTP/1.1 414 "), answer[:100]
    assert closed
    assert not any(name == "connect" for name, _ in recording_app.events)  # never reached $connect


def test_handshake_with_a_header_over_8kb_is_answered_431_and_closed(gateway: str) -> None:
    request = f"GET /ws HTTP/1.1\r\nHost: {gateway}\r\nCookie: {'c' * 9000}\r\n{HANDSHAKE_TAIL}".encode()
    answer, closed = raw_exchange(gateway, request)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:100]
    assert closed


def test_many_oversize_handshakes_leave_nothing_open_and_the_gateway_serves(gateway: str) -> None:
    request = f"GET /ws?token={'a' * 20000} HTTP/1.1\r\nHost: {gateway}\r\n{HANDSHAKE_TAIL}".encode()
    for _ in range(30):
        answer, closed = raw_exchange(gateway, request)
        assert closed and answer.startswith(b"HTTP/1.1 414 ")

    async def echo() -> Any:
        async with connect(f"ws://{gateway}/ws?token=abc") as ws:
            await ws.send("still here")
            return json.loads(await ws.recv())

    assert asyncio.run(echo())["echo"] == "still here"


def signed(method: str, url: str, body: bytes, credentials: Credentials) -> dict[str, str]:
    request = AWSRequest(method=method, url=url, data=body)
    SigV4Auth(credentials, "execute-api", "us-east-1").add_auth(request)
    return dict(request.headers.items())


def own_credentials() -> Credentials:
    found = boto3.session.Session().get_credentials()
    assert found is not None
    return Credentials(found.access_key, found.secret_key, found.token)


def test_callback_api_refuses_unsigned_and_foreign_calls_but_takes_the_apps_own(gateway: str) -> None:
    async def scenario() -> None:
        async with connect(f"ws://{gateway}/ws?token=abc") as ws:
            await ws.send("who am I")
            connection_id = json.loads(await ws.recv())["connection_id"]
            url = f"http://{gateway}/@connections/{connection_id}"
            async with httpx.AsyncClient() as http:
                unsigned = await http.post(url, content=b"unsigned")
                foreign = await http.post(url, content=b"foreign", headers=signed(
                    "POST", url, b"foreign", Credentials("testing", "testing", "testing")))
                headers = signed("POST", url, b"original", own_credentials())
                tampered = await http.post(url, content=b"tampered", headers=headers)
                described = await http.get(url)
                closed = await http.delete(url)
                for refused in (unsigned, foreign, tampered, described, closed):
                    assert refused.status_code == 403, (refused.request.method, refused.text)
                    assert refused.headers["x-amzn-ErrorType"] == "ForbiddenException"
                # the app's own boto3 push still goes through, and it is the first frame since:
                # none of the refused posts reached the socket
                recording_app.callback_client().post_to_connection(ConnectionId=connection_id, Data=b"own")
                assert await ws.recv() == "own"
                # a gone id is no oracle either: refused before the id is looked at
                assert (await http.post(f"http://{gateway}/@connections/nobody", content=b"x")).status_code == 403

    asyncio.run(scenario())


@pytest.mark.e2e
def test_make_run_stack_answers_oversize_handshakes_and_refuses_well_known_credentials(
        local_stack: LocalStackProcess) -> None:
    stack = local_stack
    host = f"127.0.0.1:{stack.port}"
    answer, closed = raw_exchange(host, f"GET /ws?token={'a' * 9000} HTTP/1.1\r\nHost: {host}\r\n{HANDSHAKE_TAIL}"
                                  .encode())
    assert answer.startswith(b"HTTP/1.1 414 ") and closed
    url = f"{stack.base_url}/@connections/any"
    assert httpx.post(url, content=b"x").status_code == 403
    # moto's customary "testing" keys are not the stack's: it mints its own at each start
    well_known = signed("POST", url, b"x", Credentials("testing", "testing", "testing"))
    assert httpx.post(url, content=b"x", headers=well_known).status_code == 403


@pytest.mark.e2e
def test_config_json_gives_the_gateway_limits_as_integers(local_stack: LocalStackProcess) -> None:
    text = httpx.get(f"{local_stack.base_url}/config.json").text
    assert '"websocketLimits":{"idleSeconds":600,"maxSeconds":7200}' in text.replace(" ", "")
    limits = json.loads(text)["websocketLimits"]
    assert all(type(value) is int for value in limits.values()), limits
