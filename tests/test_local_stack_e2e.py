"""The whole local stack as `make run` starts it: a separate process, real HTTP and WebSocket."""
from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect

from tests.conftest import LocalStackProcess, free_port

pytestmark = pytest.mark.e2e


def test_serves_the_frontend_and_its_config(local_stack: LocalStackProcess) -> None:
    page = httpx.get(local_stack.base_url + "/")
    assert page.status_code == 200 and "<title>WebIM</title>" in page.text
    config = httpx.get(local_stack.base_url + "/config.json").json()
    assert config == {"websocketUrl": local_stack.ws_url, "apiUrl": local_stack.base_url + "/api", "devLogin": True,
                      "websocketLimits": {"idleSeconds": 600, "maxSeconds": 7200}}


def test_rest_api_is_served_under_the_api_prefix(local_stack: LocalStackProcess) -> None:
    assert httpx.get(local_stack.base_url + "/api/health").json() == {"ok": True}


def test_websocket_frames_reach_the_app_and_answers_come_back(local_stack: LocalStackProcess) -> None:
    async def scenario() -> list[dict[str, object]]:
        async with connect(local_stack.ws_url_as("alice")) as ws:
            answers = []
            for text in [json.dumps({"action": "ping", "id": "p1"}), "{oops", json.dumps({"action": "ping"})]:
                await ws.send(text)
                answers.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
            return answers

    pong, error, pong_again = asyncio.run(scenario())
    assert pong["type"] == "pong" and pong["ref"] == "p1"
    assert error["type"] == "error" and error["code"] == "malformed_json"
    assert pong_again["type"] == "pong"  # the connection stayed usable after bad input


# Warnings the session's tests provoke on purpose, whenever their background jobs end: a
# receiver that never acks (tests make deaf ones) exhausts its retransmissions (ack_check.py).
# Any other warning, and any traceback, in the shared stack's log is a finding.
PROVOKED_WARNINGS = ("retries_exhausted",)


def test_log_has_no_warnings_or_tracebacks(local_stack: LocalStackProcess) -> None:
    asyncio.run(_ping_once(local_stack.ws_url_as("bob")))
    output = local_stack.output()
    assert "ready at" in output
    warnings = [line for line in output.splitlines()
                if "warning" in line.lower() and not any(event in line for event in PROVOKED_WARNINGS)]
    assert warnings == [] and "Traceback" not in output


async def _ping_once(url: str) -> None:
    async with connect(url) as ws:
        await ws.send(json.dumps({"action": "ping"}))
        await asyncio.wait_for(ws.recv(), 10)


def test_ctrl_c_stops_the_stack_cleanly(tmp_path: Path) -> None:
    stack = LocalStackProcess(free_port(), local_dir=tmp_path)
    try:
        stack.wait_ready()
        asyncio.run(_ping_once(stack.ws_url_as("carol")))
        stack.process.send_signal(signal.SIGINT)
        assert stack.process.wait(timeout=20) == 0
        assert "WebIM local stack stopped" in stack.output()
        assert "Traceback" not in stack.output()
    finally:
        stack.stop()
