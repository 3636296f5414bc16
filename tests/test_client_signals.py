"""The Python SDK's typing, seen and settings (protocol.md §14.2, §14.3) against the real app
served in-process, on WebSocket and long poll: typing throttled to one frame per 3 s and shown
on the peer until its message; a message read by the peer becomes `seen` (pushed, and from the
conversation list after a reconnect); read receipts off: nothing."""
from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.test_chaos_soak import app_stack, dev_token
from webim_client import Client, FaultyTransport, LongPollTransport, WebSocketTransport

__all__ = ["app_stack"]
Frame = dict[str, Any]
WAIT = 60.0  # a bounded wait for one thing on a busy machine, never part of the proof


async def connect(http: httpx.AsyncClient, host: str, name: str, transport: str, sent: list[Frame]) -> Client:
    token = await dev_token(http, host, name)
    inner = (WebSocketTransport(f"ws://{host}/ws?token={token}") if transport == "ws"
             else LongPollTransport(f"http://{host}/api", token, wait=10))
    client = Client(FaultyTransport(inner, drop_out=lambda frame: sent.append(frame) or False), keepalive=None)
    await client.start()
    return client


@pytest.mark.parametrize("transport", ["ws", "lp"])
def test_typing_seen_and_settings_through_the_sdk(app_stack: str, transport: str) -> None:
    async def run() -> None:
        async with httpx.AsyncClient() as http:
            alice_sent: list[Frame] = []
            alice = await connect(http, app_stack, f"s-alice-{transport}", transport, alice_sent)
            bob = await connect(http, app_stack, f"s-bob-{transport}", transport, [])
            bob_id = {"kind": "user", "id": f"s-bob-{transport}"}
            first = await alice.send("hello", to=bob_id)
            await asyncio.wait_for(first.accepted, WAIT)
            cid = str(first.conversation_id)
            assert (await asyncio.wait_for(bob.inbox.get(), WAIT))["seq"] == 1
            assert await alice.settings() == {"read_receipts": True}  # the default

            # typing: a burst of keystrokes sends one frame; bob sees alice typing until her message
            assert [alice.typing(cid) for _ in range(5)] == [True, False, False, False, False]
            shown = await asyncio.wait_for(bob.typing_events.get(), WAIT)
            assert shown == {"conversation_id": cid, "typing": [alice.identity]}
            assert [f for f in alice_sent if f.get("action") == "typing"] == [
                {"action": "typing", "conversation_id": cid}]
            second = await alice.send("are you there?", conversation_id=cid)
            assert (await asyncio.wait_for(bob.inbox.get(), WAIT))["seq"] == 2
            assert bob.typing_now(cid) == []
            assert (await asyncio.wait_for(bob.typing_events.get(), WAIT))["typing"] == []

            # seen: bob reads 1, then 2; alice's messages become seen
            await bob.request("read", conversation_id=cid, seq=1)
            await asyncio.wait_for(first.seen, WAIT)
            assert first.state == "seen" and second.state != "seen"
            await bob.request("read", conversation_id=cid, seq=2)
            await asyncio.wait_for(second.seen, WAIT)

            # bob turns read receipts off: his next read is not seen, nor in the list
            assert await bob.settings(read_receipts=False) == {"read_receipts": False}
            third = await alice.send("third", conversation_id=cid)
            await asyncio.wait_for(third.delivered, WAIT)
            await bob.request("read", conversation_id=cid, seq=3)
            await alice.refresh_delivered()
            assert third.state == "delivered"
            listed = (await alice.conversations())["conversations"][0]
            assert "peer_read_seq" not in listed and listed["peer_acked_seq"] == 3

            # on again: the list's peer_read_seq marks it seen without a push (a reload)
            assert await bob.settings(read_receipts=True) == {"read_receipts": True}
            await alice.refresh_delivered()
            assert third.state == "seen"
            for client in (alice, bob):
                await client.close()

    asyncio.run(run())
