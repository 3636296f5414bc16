"""The Python SDK's long-poll transport (protocol version 4, §2b) over the running local stack:
the wait at wait_url, lost wait and poll answers recovered by the poll, the release, and a
connection gone. The network under it loses what a test chooses (tests/lossy_http.py)."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from tests.conftest import LocalStackProcess
from tests.lossy_http import AnswerRule, LossyHttp, lose_first_wait_with_rings
from webim_client import Client, LongPollTransport, WebSocketTransport

pytestmark = pytest.mark.e2e


def api(stack: LocalStackProcess) -> str:
    return stack.base_url + "/api"


def lossy_transport(stack: LocalStackProcess, name: str,
                    lose_answer: AnswerRule) -> tuple[LongPollTransport, LossyHttp]:
    network = LossyHttp(lose_answer=lose_answer)
    transport = LongPollTransport(api(stack), stack.dev_login(name),
                                  http=lambda: httpx.AsyncClient(transport=network.fresh()))
    return transport, network


async def send_from_websocket(stack: LocalStackProcess, sender: str, receiver: str, text: str) -> None:
    client = Client(WebSocketTransport(stack.ws_url_as(sender)), keepalive=None)
    await client.start(pull=False)
    sent = await client.send(text, to={"kind": "user", "id": receiver})
    await asyncio.wait_for(sent.accepted, 10)
    await client.close()


async def until(condition: Callable[[], bool], what: str, seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_a_lost_wait_answer_is_returned_by_the_poll_that_follows_it(local_stack: LocalStackProcess) -> None:
    """SQS handed the ring out and will not again: the transport polls after the failed wait
    (before waiting again), and the poll returns the frame, numbered 1 (not a retransmission)."""
    async def scenario() -> None:
        transport, network = lossy_transport(local_stack, "lw-bob", lose_first_wait_with_rings())
        await transport.open()
        try:
            await send_from_websocket(local_stack, "lw-alice", "lw-bob", "through a lost answer")
            frame = await asyncio.wait_for(transport.receive(), 15)
            assert (frame["type"], frame["text"]) == ("message", "through a lost answer")
            assert transport.cursor >= 1
            lost = next(i for i, exchange in enumerate(network.log) if exchange.status is None)
            assert network.log[lost].kind == "wait" and network.log[lost].rings >= 1
            assert (network.log[lost + 1].kind, network.log[lost + 1].status) == ("poll", 200), network.log
        finally:
            await transport.close()

    run(scenario)


def test_a_lost_poll_answer_is_returned_by_the_next_poll(local_stack: LocalStackProcess) -> None:
    lost_wait = lose_first_wait_with_rings()
    polls_lost = [0]

    def rule(kind: str, response: httpx.Response) -> bool:
        if lost_wait(kind, response):
            return True
        if kind == "poll" and polls_lost[0] == 0 and response.json()["frames"]:
            polls_lost[0] += 1  # the mailbox keeps them until released: the retry returns them
            return True
        return False

    async def scenario() -> None:
        transport, network = lossy_transport(local_stack, "lpl-bob", rule)
        await transport.open()
        try:
            await send_from_websocket(local_stack, "lpl-alice", "lpl-bob", "twice lost, once shown")
            frame = await asyncio.wait_for(transport.receive(), 15)
            assert frame["text"] == "twice lost, once shown"
            assert network.lost == {"wait answer": 1, "poll answer": 1}
        finally:
            await transport.close()

    run(scenario)


def test_what_a_client_processed_is_released(local_stack: LocalStackProcess) -> None:
    """No send follows: the release is a poll within about a second; afterwards the mailbox
    holds nothing of it (a poll from where the client started returns nothing numbered 1)."""
    async def scenario() -> None:
        token = local_stack.dev_login("rel-bob")
        transport = LongPollTransport(api(local_stack), token)
        client = Client(transport, keepalive=None)
        await client.start(pull=False)
        try:
            await send_from_websocket(local_stack, "rel-alice", "rel-bob", "release me")
            assert (await asyncio.wait_for(client.inbox.get(), 15))["text"] == "release me"
            processed = transport.cursor
            async with httpx.AsyncClient() as http:
                async def left() -> Any:
                    answer = await http.post(api(local_stack) + "/lp/poll",
                                             headers={"Authorization": f"Bearer {token}"},
                                             json={"connection_id": transport.connection_id, "cursor": 0, "base": 1})
                    return answer.json()

                deadline = time.monotonic() + 15
                while (answer := await left())["base"] <= processed:
                    assert time.monotonic() < deadline, f"never released: {answer}"
                    await asyncio.sleep(0.1)
        finally:
            await client.close()

    run(scenario)


def test_a_connection_closed_elsewhere_ends_the_line(local_stack: LocalStackProcess) -> None:
    """lp/close (or a lapsed deadline) deletes the queue: the held wait fails, the poll after it
    answers 410, and `receive` raises: the client reconnects and syncs."""
    async def scenario() -> None:
        token = local_stack.dev_login("gone-bob")
        transport = LongPollTransport(api(local_stack), token)
        await transport.open()
        try:
            async with httpx.AsyncClient() as http:
                closed = await http.post(api(local_stack) + "/lp/close", headers={"Authorization": f"Bearer {token}"},
                                         json={"connection_id": transport.connection_id})
                assert closed.status_code == 200
            with pytest.raises(ConnectionError):
                await asyncio.wait_for(transport.receive(), 15)
        finally:
            await transport.close()

    run(scenario)


def test_a_client_on_a_lossy_long_poll_reconnects_and_gets_every_message(local_stack: LocalStackProcess) -> None:
    """Every third wait answer, poll answer and send answer lost: each message shown once, in
    order, every send accepted."""
    count = [0]

    def every_third(kind: str, response: httpx.Response) -> bool:
        if kind not in ("wait", "poll", "send"):
            return False
        count[0] += 1
        return count[0] % 3 == 0

    async def scenario() -> None:
        transport, network = lossy_transport(local_stack, "lossy-bob", every_third)
        bob = Client(transport, keepalive=None, ack_timeout=1.0, max_attempts=100, gap_grace=0.3, request_timeout=2.0,
                     reconnect=True, backoff=(0.05, 0.5))
        alice = Client(WebSocketTransport(local_stack.ws_url_as("lossy-alice")), keepalive=None)
        await bob.start()
        await alice.start()
        try:
            for i in range(12):
                await alice.send(f"a{i}", to={"kind": "user", "id": "lossy-bob"})
            replies = [await bob.send(f"b{i}", to={"kind": "user", "id": "lossy-alice"}) for i in range(6)]
            shown = [(await asyncio.wait_for(bob.inbox.get(), 30))["text"] for _ in range(12)]
            assert shown == [f"a{i}" for i in range(12)]
            await asyncio.wait_for(asyncio.gather(*(r.accepted for r in replies)), 30)
            got = [(await asyncio.wait_for(alice.inbox.get(), 30))["text"] for _ in range(6)]
            assert got == [f"b{i}" for i in range(6)]
            assert network.lost["wait answer"] and network.lost["send answer"], network.lost
        finally:
            await bob.close()
            await alice.close()

    run(scenario)
