"""Authorization at every entry point of the running local stack, and the visitor journey."""
from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import jwt
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

import app as webim
from tests.conftest import LocalStackProcess

pytestmark = pytest.mark.e2e
EXPECTED_CODES = {"missing": "missing_credential", "expired": "expired_credential"}


def signing_secret(stack: LocalStackProcess) -> bytes:
    assert stack.local_dir is not None
    return (stack.local_dir / "signing-secret").read_text().strip().encode()


def bad_tokens(stack: LocalStackProcess) -> dict[str, str | None]:
    now = int(time.time())
    visitor = {"iss": "webim", "aud": "webim:visitor", "sub": "v-x", "iat": now - 100}
    return {
        "missing": None,
        "garbage": "not-a-token",
        "foreign": jwt.encode({**visitor, "exp": now + 600}, b"f" * 32, algorithm="HS256"),
        "expired": jwt.encode({**visitor, "exp": now - 100}, signing_secret(stack), algorithm="HS256"),
        "alg-none": jwt.encode({**visitor, "exp": now + 600}, None, algorithm="none"),
    }


def protected_routes() -> list[tuple[str, str]]:
    routes = [(method, path) for path, entries in webim.app.routes.items() for method in entries]
    protected = [r for r in routes if r not in webim.PUBLIC_ROUTES]
    assert len(protected) >= 4  # the list is real, not empty
    return protected


def call(stack: LocalStackProcess, method: str, path: str, token: str | None) -> httpx.Response:
    url = stack.base_url + "/api" + path.replace("{kind}", "user").replace("{peer_id}", "someone")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.request(method, url, headers=headers, json={})


def test_every_rest_route_but_the_public_ones_refuses_a_missing_or_bad_credential(
    local_stack: LocalStackProcess,
) -> None:
    for method, path in protected_routes():
        for name, token in bad_tokens(local_stack).items():
            response = call(local_stack, method, path, token)
            assert response.status_code == 401, (method, path, name, response.text)
            expected = EXPECTED_CODES.get(name, "invalid_credential")
            assert response.json()["error"]["code"] == expected, (method, path, name)
            assert response.headers["www-authenticate"] == "Bearer"


def test_a_non_bearer_authorization_scheme_is_a_missing_credential(local_stack: LocalStackProcess) -> None:
    token = local_stack.dev_login("dora")
    response = httpx.get(local_stack.base_url + "/api/identity/me", headers={"Authorization": f"Basic {token}"})
    assert response.status_code == 401 and response.json()["error"]["code"] == "missing_credential"


def test_the_websocket_handshake_refuses_a_missing_or_bad_credential(local_stack: LocalStackProcess) -> None:
    async def attempt(token: str | None) -> int:
        url = local_stack.ws_url + (f"?token={token}" if token else "")
        try:
            async with connect(url):
                return 101
        except InvalidStatus as refused:
            return refused.response.status_code

    for name, token in bad_tokens(local_stack).items():
        assert asyncio.run(attempt(token)) == 401, name


def test_a_visitor_is_minted_kept_and_recognised_on_return(local_stack: LocalStackProcess) -> None:
    issued = httpx.post(local_stack.base_url + "/api/identity/visitor")
    assert issued.status_code == 201
    visitor = issued.json()
    assert visitor["identity"]["kind"] == "visitor"
    token = visitor["token"]

    def me() -> dict[str, Any]:
        response = httpx.get(local_stack.base_url + "/api/identity/me", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200
        return dict(response.json())

    assert me()["identity"] == visitor["identity"]

    async def ping() -> dict[str, Any]:
        async with connect(f"{local_stack.ws_url}?token={token}") as ws:
            await ws.send(json.dumps({"action": "ping"}))
            return dict(json.loads(await asyncio.wait_for(ws.recv(), 10)))

    assert asyncio.run(ping())["type"] == "pong"
    assert me()["identity"] == visitor["identity"]  # the returning visitor, same id
    renewed = httpx.post(local_stack.base_url + "/api/identity/visitor/renew",
                         headers={"Authorization": f"Bearer {token}"}).json()
    assert renewed["identity"] == visitor["identity"]


def test_a_visitor_who_logs_in_is_linked_to_the_user(local_stack: LocalStackProcess) -> None:
    visitor = httpx.post(local_stack.base_url + "/api/identity/visitor").json()
    user_token = local_stack.dev_login("buyer-linking")
    headers = {"Authorization": f"Bearer {user_token}"}
    linked = httpx.post(local_stack.base_url + "/api/identity/link", headers=headers,
                        json={"visitor_token": visitor["token"]})
    assert linked.status_code == 200 and linked.json() == {"carried_over": []}
    me = httpx.get(local_stack.base_url + "/api/identity/me", headers=headers).json()
    assert me["linked_visitors"] == [visitor["identity"]]
    # a visitor credential cannot act as the user side of a link
    as_visitor = httpx.post(local_stack.base_url + "/api/identity/link",
                            headers={"Authorization": f"Bearer {visitor['token']}"},
                            json={"visitor_token": visitor["token"]})
    assert as_visitor.status_code == 403 and as_visitor.json()["error"]["code"] == "forbidden"
    # and another user cannot take the visitor over
    thief = httpx.post(local_stack.base_url + "/api/identity/link",
                       headers={"Authorization": f"Bearer {local_stack.dev_login('thief')}"},
                       json={"visitor_token": visitor["token"]})
    assert thief.status_code == 409 and thief.json()["error"]["code"] == "already_linked"


def test_bad_request_bodies_get_a_stable_error(local_stack: LocalStackProcess) -> None:
    url = local_stack.base_url + "/api/identity/dev-login"
    assert httpx.post(url, content=b"{nope").json()["error"]["code"] == "malformed_json"
    assert httpx.post(url, json=[1]).json()["error"]["code"] == "malformed_json"
    missing = httpx.post(url, json={})
    assert missing.status_code == 400 and missing.json()["error"]["code"] == "invalid_field"


def test_tokens_never_reach_the_log(local_stack: LocalStackProcess) -> None:
    tokens = [t for t in bad_tokens(local_stack).values() if t]
    good = local_stack.dev_login("logged")

    async def use(token: str) -> None:
        try:
            async with connect(f"{local_stack.ws_url}?token={token}") as ws:
                await ws.send(json.dumps({"action": "ping"}))
                await asyncio.wait_for(ws.recv(), 10)
        except InvalidStatus:
            pass

    for token in [*tokens, good]:
        asyncio.run(use(token))
        httpx.get(local_stack.base_url + "/api/identity/me", headers={"Authorization": f"Bearer {token}"})
    output = local_stack.output()
    assert '"event":"handshake_refused"' in output  # refusals are logged, by code only
    for token in [*tokens, good]:
        assert token not in output
        signature = token.split(".")[-1]
        assert not signature or signature not in output
