"""The byte-bounded long-poll mailbox over the running local stack (issue 21, finding 6): 30
messages of 4,000 emoji to a long-poll receiver that holds no wait. Before, the pushes past
the item's size failed with a traceback each ("Item size ... exceeded"; moto counts a list it
replaces twice, so ~13 fitted). Now the receiver's poll ends with `resync` and its `sync`
brings all 30."""
from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from tests.conftest import LocalStackProcess
from tests.test_long_poll_e2e import api, bearer, opened_lp, poll

pytestmark = pytest.mark.e2e

BIG = "\U0001F600" * 4000
COUNT = 30


def lp_send(stack: LocalStackProcess, token: str, connection: str, frame: dict[str, Any]) -> list[dict[str, Any]]:
    response = httpx.post(api(stack) + "/lp/send", headers=bearer(token), params={"connection_id": connection},
                          content=json.dumps(frame, ensure_ascii=False).encode(), timeout=30)
    assert response.status_code == 200, response.text
    frames: list[dict[str, Any]] = response.json()["frames"]
    return frames


def test_a_long_poll_receiver_of_30_large_messages_gets_resync_then_all_of_them(
        local_stack: LocalStackProcess) -> None:
    token = local_stack.dev_login("mbx-bob")
    connection = opened_lp(local_stack, token)["connection_id"]

    async def send_all() -> None:
        # raw frames, UTF-8 as protocol.md §2 asks (16 KB each; \u-escaped they would pass 32 KB)
        async with connect(local_stack.ws_url_as("mbx-alice")) as ws:
            for number in range(COUNT):
                await ws.send(json.dumps({"action": "send", "id": f"big-{number}", "text": BIG,
                                          "to": {"kind": "user", "id": "mbx-bob"}}, ensure_ascii=False))
                while (answer := json.loads(await asyncio.wait_for(ws.recv(), 30))).get("ref") != f"big-{number}":
                    pass
                assert answer["type"] == "sent", answer

    asyncio.run(send_all())
    answer = poll(local_stack, token, connection).json()
    assert answer["frames"][-1] == {"type": "resync"}
    messages = [f for f in answer["frames"] if f["type"] == "message"]
    assert 0 < len(messages) < COUNT and all(m["text"] == BIG for m in messages)
    conversation = messages[0]["conversation_id"]
    seqs: list[int] = []
    since: dict[str, int] = {}
    for number in range(10):
        frame: dict[str, Any] = {"action": "sync", "id": f"s{number}", "limit": 100}
        if since:
            frame["since"] = since
        synced, = lp_send(local_stack, token, connection, frame)
        got = [m["seq"] for m in synced["messages"] if m["conversation_id"] == conversation]
        seqs += got
        if got:
            since = {conversation: got[-1]}
        if not synced.get("more"):
            break
    assert seqs == list(range(1, COUNT + 1))
    assert "Item size" not in local_stack.output()  # no push failed for the item's size
