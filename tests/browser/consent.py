"""Introductions before a group is made in the page: nobody is added to a group by a stranger
(protocol.md §13.2), so whoever a test's owner adds has first written to it in their 1:1
conversation. Done with the Python SDK, before the pages open, and read by the adder, so the
pages start with no unread count and nothing to notify."""
from __future__ import annotations

import asyncio

import httpx

from tests.browser.support import run_async
from webim_client import Client, WebSocketTransport


def introduce(base_url: str, adder: str, *writers: str, text: str = "hi") -> None:
    """Each writer (a development-login name) sends `adder` one 1:1 message `text`; the writer
    acks its own copy and the adder acks and reads it, so no page's pull brings it back."""
    run_async(_introduce(base_url, adder, writers, text))


async def _client(http: httpx.AsyncClient, base_url: str, name: str) -> Client:
    issued = (await http.post(f"{base_url}/api/identity/dev-login", json={"name": name})).raise_for_status()
    ws = base_url.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
    client = Client(WebSocketTransport(f"{ws}/ws?token={issued.json()['token']}"), keepalive=None)
    await client.start()
    return client


async def _introduce(base_url: str, adder: str, writers: tuple[str, ...], text: str) -> None:
    written: list[tuple[str, int]] = []
    async with httpx.AsyncClient() as http:
        for name in writers:
            writer = await _client(http, base_url, name)
            try:
                sent = await asyncio.wait_for((await writer.send(text, to={"kind": "user", "id": adder})).accepted, 30)
                assert sent.conversation_id is not None and sent.seq is not None
                await writer.request("ack", conversation_id=sent.conversation_id, seq=sent.seq)
                written.append((sent.conversation_id, sent.seq))
            finally:
                await writer.close()
        reader = await _client(http, base_url, adder)
        try:
            for conversation_id, seq in written:
                await reader.request("ack", conversation_id=conversation_id, seq=seq)
                await reader.request("read", conversation_id=conversation_id, seq=seq)
        finally:
            await reader.close()
