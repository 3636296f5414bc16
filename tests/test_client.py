"""The Python client's receiving logic against a scripted server (no network)."""
from __future__ import annotations

import asyncio
from typing import Any

from webim_client import Client

Frame = dict[str, Any]
ALICE = {"kind": "user", "id": "alice"}
BOB = {"kind": "user", "id": "bob"}


class ScriptedServer:
    """A transport whose server answers ping and sync from a list of stored messages."""

    def __init__(self, stored: list[Frame]) -> None:
        self.stored = stored
        self.sent: list[Frame] = []
        self.frames: asyncio.Queue[Frame] = asyncio.Queue()

    async def open(self) -> None:
        pass

    async def send(self, frame: Frame) -> None:
        self.sent.append(frame)
        if frame["action"] == "ping":
            await self.frames.put({"type": "pong", "v": 1, "time": 1, "identity": ALICE, "ref": frame["id"]})
        elif frame["action"] == "sync":
            await self.frames.put({"type": "sync", "messages": self.stored, "more": False, "ref": frame["id"]})

    async def receive(self) -> Frame:
        return await self.frames.get()

    async def close(self) -> None:
        pass


def message(seq: int) -> Frame:
    return {"type": "message", "conversation_id": "c", "seq": seq, "from": BOB, "text": f"m{seq}", "time": seq,
            "client_id": f"b-{seq}"}


def test_a_push_into_an_unknown_conversation_is_shown_once_the_pull_brings_it_again() -> None:
    """Regression: the pull that tells where a conversation starts returns the very message that
    was pushed and is waiting; it must be released, not dropped as a duplicate."""
    async def scenario() -> list[int]:
        server = ScriptedServer(stored=[message(7)])  # the server's acked cursor is at 6
        client = Client(server, keepalive=None)
        await client.start(pull=False)
        await server.frames.put(message(7))  # pushed before this client knows the conversation
        shown = await asyncio.wait_for(client.inbox.get(), 5)
        await asyncio.sleep(0.05)
        await client.close()
        acks = [f["seq"] for f in server.sent if f["action"] == "ack"]
        return [shown["seq"], *acks]

    assert asyncio.run(scenario()) == [7, 7]
