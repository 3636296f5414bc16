"""A WebSocket text frame that is not valid UTF-8 (issue 21, finding 9): the local gateway
fails the connection with 1007 (RFC 6455 §8.1) without invoking `$default`, and logs one
line, not a traceback (uvicorn logged one per such frame: a client could fill the log)."""
from __future__ import annotations

import asyncio
import json
import logging

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests import recording_app


async def _wait_for_disconnect(timeout: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not any(name == "disconnect" for name, _ in recording_app.events):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("no $disconnect")
        await asyncio.sleep(0.02)


def test_a_text_frame_that_is_not_utf8_closes_with_1007_and_logs_no_traceback(
        gateway: str, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> int | None:
        async with connect(f"ws://{gateway}/ws?token=abc") as ws:
            await ws.send(b'{"action":"ping","text":"\xff\xfe"}', text=True)  # a text frame, bad bytes
            try:
                await asyncio.wait_for(ws.recv(), timeout=30)
            except ConnectionClosed as closed:
                code = closed.rcvd.code if closed.rcvd else None
        await _wait_for_disconnect()
        return code

    with caplog.at_level(logging.INFO):
        assert asyncio.run(scenario()) == 1007
    assert [name for name, _ in recording_app.events if name == "message"] == []  # never invoked
    disconnect, = [event for name, event in recording_app.events if name == "disconnect"]
    assert disconnect["requestContext"]["disconnectStatusCode"] == 1007
    assert not [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
    assert any("not UTF-8" in r.getMessage() for r in caplog.records)


def test_valid_text_frames_still_pass(gateway: str) -> None:
    async def scenario() -> str | bytes:
        async with connect(f"ws://{gateway}/ws?token=abc") as ws:
            await ws.send("h\u00e9llo \U0001F600".encode(), text=True)
            return await ws.recv()

    assert json.loads(asyncio.run(scenario()))["echo"] == "h\u00e9llo \U0001F600"
