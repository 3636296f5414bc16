"""Long polling end to end over the running local stack: real HTTP, the real app."""
from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from tests.conftest import LocalStackProcess
from webim_client import Client, LongPollTransport, WebSocketTransport

pytestmark = pytest.mark.e2e


def api(stack: LocalStackProcess) -> str:
    return stack.base_url + "/api"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def opened_lp(stack: LocalStackProcess, token: str) -> dict[str, Any]:
    response = httpx.post(api(stack) + "/lp/open", headers=bearer(token))
    assert response.status_code == 201
    return dict(response.json())


def poll(stack: LocalStackProcess, token: str, connection: str, cursor: int = 0, base: int = 1) -> httpx.Response:
    return httpx.post(api(stack) + "/lp/poll", headers=bearer(token), timeout=40,
                      json={"connection_id": connection, "cursor": cursor, "base": base})


def wait(opened: dict[str, Any], token: str | None = None) -> httpx.Response:
    """One wait at the wait API (API Gateway's on AWS), as the clients wait."""
    return httpx.post(opened["wait_url"], headers=bearer(opened["wait_token"] if token is None else token), timeout=40)


def rings(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    result = response.json()["ReceiveMessageResponse"]["ReceiveMessageResult"]
    found = [json.loads(m["Body"]) for m in result["messages"] or []]
    return sorted(found, key=lambda ring: ring["n"])


def texts_of(found: list[dict[str, Any]]) -> list[str]:
    return [json.loads(ring["f"])["text"] for ring in found]


def send_ws(stack: LocalStackProcess, sender: str, receiver: str, text: str) -> None:
    async def go() -> None:
        client = Client(WebSocketTransport(stack.ws_url_as(sender)))
        await client.start(pull=False)
        sent = await client.send(text, to={"kind": "user", "id": receiver})
        await asyncio.wait_for(sent.accepted, 10)
        await client.close()

    asyncio.run(go())


def test_a_held_wait_returns_on_arrival_well_before_its_timeout(local_stack: LocalStackProcess) -> None:
    token = local_stack.dev_login("lp-held-bob")
    opened = opened_lp(local_stack, token)

    async def scenario() -> httpx.Response:
        # the wait goes out first; the send needs a login, a handshake and a round trip after it
        held = asyncio.create_task(asyncio.to_thread(wait, opened))
        await asyncio.to_thread(send_ws, local_stack, "lp-held-alice", "lp-held-bob", "now")
        # returned with the message, not at its 20 s end (which would fail this wait)
        return await asyncio.wait_for(held, 15)

    found = rings(asyncio.run(scenario()))
    assert [ring["n"] for ring in found] == [1] and texts_of(found) == ["now"]


def test_frames_pooled_while_no_wait_is_open_come_back_at_once(local_stack: LocalStackProcess) -> None:
    token = local_stack.dev_login("lp-pool-bob")
    opened = opened_lp(local_stack, token)
    send_ws(local_stack, "lp-pool-alice", "lp-pool-bob", "first")
    send_ws(local_stack, "lp-pool-alice", "lp-pool-bob", "second")
    started = time.monotonic()
    assert texts_of(rings(wait(opened))) == ["first", "second"]
    assert time.monotonic() - started < 10


def test_a_lost_wait_answer_is_returned_by_the_poll(local_stack: LocalStackProcess) -> None:
    token = local_stack.dev_login("lp-lost-bob")
    opened = opened_lp(local_stack, token)
    connection = opened["connection_id"]
    send_ws(local_stack, "lp-lost-alice", "lp-lost-bob", "keep me")
    assert texts_of(rings(wait(opened))) == ["keep me"]  # this answer "never arrives"
    again = poll(local_stack, token, connection).json()
    assert [f["text"] for f in again["frames"]] == ["keep me"] and again["cursor"] == 1
    released = poll(local_stack, token, connection, cursor=again["cursor"], base=again["base"]).json()
    assert released["frames"] == [] and released["base"] == 2


def test_a_wait_reads_its_own_connections_queue_only(local_stack: LocalStackProcess) -> None:
    bob, mallory = local_stack.dev_login("lp-auth-bob"), local_stack.dev_login("lp-auth-mallory")
    bobs, mallorys = opened_lp(local_stack, bob), opened_lp(local_stack, mallory)
    send_ws(local_stack, "lp-auth-alice", "lp-auth-bob", "private")
    send_ws(local_stack, "lp-auth-alice", "lp-auth-mallory", "hers")
    assert texts_of(rings(wait(mallorys))) == ["hers"]  # her own token: her queue, never bob's
    assert wait(bobs, token=mallory).status_code == 403  # an identity's token is no wait token
    assert wait(bobs, token=mallorys["wait_token"][:-2] + "xx").status_code == 403  # forged
    assert httpx.post(bobs["wait_url"], timeout=10).status_code == 401  # none at all
    assert texts_of(rings(wait(bobs))) == ["private"]
    # a wait token is not a credential of any REST route either
    assert httpx.get(api(local_stack) + "/identity/me", headers=bearer(bobs["wait_token"])).status_code == 401


def test_a_poll_returns_only_the_callers_frames(local_stack: LocalStackProcess) -> None:
    bob = local_stack.dev_login("lp-poll-bob")
    connection = opened_lp(local_stack, bob)["connection_id"]
    send_ws(local_stack, "lp-poll-alice", "lp-poll-bob", "private")
    mallory = local_stack.dev_login("lp-poll-mallory")
    stolen = poll(local_stack, mallory, connection)
    assert stolen.status_code == 403 and stolen.json()["error"]["code"] == "forbidden"
    assert poll(local_stack, "", connection).status_code == 401
    unknown = poll(local_stack, bob, "lp-never-opened")
    assert unknown.status_code == 410 and unknown.json()["error"]["code"] == "connection_gone"
    sent = httpx.post(api(local_stack) + "/lp/send", headers=bearer(mallory), params={"connection_id": connection},
                      content=b'{"action": "sync"}')
    assert sent.status_code == 403
    # only bob's own message; a busy machine may let the 1 s ack check retransmit it (same seq)
    frames = poll(local_stack, bob, connection).json()["frames"]
    assert {(f["type"], f["seq"], f["text"]) for f in frames} == {("message", 1, "private")}


def run_clients(stack: LocalStackProcess, scenario: Callable[[Callable[..., Awaitable[Client]]], Awaitable[None]]
                ) -> None:
    async def main() -> None:
        made: list[Client] = []

        async def client(name: str, transport: str) -> Client:
            if transport == "ws":
                chosen: Any = WebSocketTransport(stack.ws_url_as(name))
            else:
                chosen = LongPollTransport(api(stack), stack.dev_login(name), wait=10)
            new = Client(chosen)
            made.append(new)
            await new.start()
            return new

        try:
            await asyncio.wait_for(scenario(client), 60)
        finally:
            for c in made:
                await c.close()

    asyncio.run(main())


def test_websocket_and_long_poll_users_chat_both_ways(local_stack: LocalStackProcess) -> None:
    async def scenario(client: Callable[..., Awaitable[Client]]) -> None:
        alice, bob = await client("mix-alice", "ws"), await client("mix-bob", "lp")
        hello = await alice.send("hello from a socket", to={"kind": "user", "id": "mix-bob"})
        received = await asyncio.wait_for(bob.inbox.get(), 10)
        assert received["text"] == "hello from a socket"
        await asyncio.wait_for(hello.delivered, 10)
        reply = await bob.send("hello from a long poll", conversation_id=received["conversation_id"])
        assert (await asyncio.wait_for(alice.inbox.get(), 10))["text"] == "hello from a long poll"
        await asyncio.wait_for(reply.delivered, 10)

    run_clients(local_stack, scenario)


def test_one_user_on_both_transports_gets_every_frame_on_both(local_stack: LocalStackProcess) -> None:
    async def scenario(client: Callable[..., Awaitable[Client]]) -> None:
        phone, laptop = await client("both-bob", "ws"), await client("both-bob", "lp")
        alice = await client("both-alice", "lp")
        sent = await alice.send("to every device", to={"kind": "user", "id": "both-bob"})
        assert (await asyncio.wait_for(phone.inbox.get(), 10))["text"] == "to every device"
        assert (await asyncio.wait_for(laptop.inbox.get(), 10))["text"] == "to every device"
        await asyncio.wait_for(sent.delivered, 10)

    run_clients(local_stack, scenario)
