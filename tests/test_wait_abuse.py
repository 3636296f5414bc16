"""1,000 idle held waits (one script holding as many waits as it likes on one wait token) leave
every other REST route and WebSocket traffic answering, hold no function and no handler thread,
and leave nothing behind when they go (issue 23, point 5). How long a send takes beside them,
and the stack's memory, are measured by `bench.held_waits` (docs/performance.md), not here."""
from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx

from devstack.wait_api import queue_signals
from tests.wait_fixtures import CountingInvoker, login, stack
from webim_client import Client, WebSocketTransport

__all__ = ["stack"]  # the fixture
HELD = 1000


def test_a_thousand_held_waits_leave_the_rest_answering(stack: tuple[str, CountingInvoker]) -> None:
    base, invoker = stack
    host = base.removeprefix("http://")
    mallory = login(base, "mallory")
    opened = httpx.post(base + "/api/lp/open", headers={"Authorization": f"Bearer {mallory}"}).json()
    signals = queue_signals()
    listening_before = signals.listening()

    async def scenario() -> None:
        limits = httpx.Limits(max_connections=HELD + 10, max_keepalive_connections=HELD + 10)
        rings: list[Any] = []
        stop = asyncio.Event()
        async with httpx.AsyncClient(timeout=60, limits=limits) as http:
            async def waiter() -> None:  # a script re-issuing its wait the moment one ends, forever
                while not stop.is_set():
                    answer = await http.post(opened["wait_url"],
                                             headers={"Authorization": f"Bearer {opened['wait_token']}"})
                    assert answer.status_code == 200, answer.text
                    rings.extend(answer.json()["ReceiveMessageResponse"]["ReceiveMessageResult"]["messages"] or [])

            waiters = [asyncio.create_task(waiter()) for _ in range(HELD)]
            while signals.listening() < listening_before + HELD:  # all held at once
                assert not any(w.done() for w in waiters)
                await asyncio.sleep(0.05)
            await others_answer(http, base, host)
            assert not any(w.done() for w in waiters) and rings == []
            assert invoker.calls["lp_wait_authorizer"] == 1  # one token: one run, then its cache
            # a frame for mallory's connection wakes exactly one of them, with it
            await websocket_exchange(host, base, to="mallory")
            while not rings:
                await asyncio.sleep(0.05)
            stop.set()
            for w in waiters:
                w.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)
        assert [json.loads(ring["Body"])["n"] for ring in rings] == [1]
        # gone with their clients: nothing of them stays in the stack
        while signals.listening() > listening_before:
            await asyncio.sleep(0.05)

    asyncio.run(asyncio.wait_for(scenario(), 240))


async def others_answer(http: httpx.AsyncClient, base: str, host: str) -> None:
    """The REST routes and a WebSocket exchange, each answering as it does without the waits."""
    assert (await http.get(base + "/api/health")).json() == {"ok": True}
    visitor = await http.post(base + "/api/identity/visitor")
    assert visitor.status_code == 201
    bob = login(base, "bob")
    auth = {"Authorization": f"Bearer {bob}"}
    bobs = (await http.post(base + "/api/lp/open", headers=auth)).json()
    polled = await http.post(base + "/api/lp/poll", headers=auth, json={"connection_id": bobs["connection_id"]})
    assert polled.status_code == 200 and polled.json()["frames"] == []
    presence = await http.post(base + "/api/presence", headers=auth,
                               json={"identities": [{"kind": "user", "id": "mallory"}]})
    assert presence.status_code == 200
    await websocket_exchange(host, base)


async def websocket_exchange(host: str, base: str, to: str = "carol") -> None:
    """alice sends to `to` over WebSocket: carol receives it on WebSocket; for mallory, only
    its being stored is waited for here (her waits get its ring)."""
    alice = Client(WebSocketTransport(f"ws://{host}/ws?token={login(base, 'alice')}"))
    receiver = Client(WebSocketTransport(f"ws://{host}/ws?token={login(base, to)}")) if to == "carol" else None
    for client in (alice, receiver):
        if client is not None:
            await client.start(pull=False)
    try:
        sent = await alice.send("beside the waits", to={"kind": "user", "id": to})
        await asyncio.wait_for(sent.accepted, 30)
        if receiver is not None:
            got: Any = await asyncio.wait_for(receiver.inbox.get(), 30)
            assert got["text"] == "beside the waits"
            await asyncio.wait_for(sent.delivered, 30)
    finally:
        await alice.close()
        if receiver is not None:
            await receiver.close()
