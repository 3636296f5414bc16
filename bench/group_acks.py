"""Benchmark: how many acks a group member sends for a burst of messages (issue 13).

    .venv/bin/python -m bench.group_acks [--messages 1000]   # writes the `group-acks` section

Starts the local stack (`python -m devstack`, as `make run` does, with the send limit off),
makes a group of three with the Python SDK and has its owner send a burst of messages, one
after another as fast as `sent` comes back (protocol.md §9b). The two other members, one on
WebSocket and one on long poll, are SDK clients with the default batched acks (§13.5: at most
every T = 2 s, at once on the K = 20th new message, flushed on close); every frame they send is
recorded. Reported per member: the acks sent for the burst against the bound
messages / K + duration / T (+1 for the flush on close), and against one ack per message.
"""
from __future__ import annotations

import argparse
import asyncio
import math
import time
from typing import Any

from bench.exchange import Stack
from bench.report import machine, update_section
from webim_client import Client, FaultyTransport, LongPollTransport, WebSocketTransport

Frame = dict[str, Any]
K, T = 20, 2.0  # the clients' defaults (webim_client Client, frontend/lib/inbox.js)
WAIT = 600.0


class Member:
    def __init__(self, name: str, client: Client, sent: list[Frame]) -> None:
        self.name, self.client, self.sent = name, client, sent
        self.first: float | None = None
        self.last: float | None = None

    def acks(self, conversation_id: str, since: int) -> list[Frame]:
        return [f for f in self.sent[since:]
                if f.get("action") == "ack" and f.get("conversation_id") == conversation_id]

    async def receive(self, conversation_id: str, count: int) -> None:
        got = 0
        while got < count:
            message = await asyncio.wait_for(self.client.inbox.get(), WAIT)
            if message.get("conversation_id") == conversation_id and not message.get("event"):
                got += 1
                self.first = self.first or time.monotonic()
                self.last = time.monotonic()


def recording(transport: Any, sent: list[Frame]) -> FaultyTransport:
    def record(frame: Frame) -> bool:
        sent.append(frame)
        return False  # never dropped: only recorded

    return FaultyTransport(transport, drop_out=record)


async def measure(stack: Stack, messages: int) -> list[dict[str, Any]]:
    alice = Client(WebSocketTransport(stack.ws_url("burst-alice")), keepalive=None)
    bob_sent: list[Frame] = []
    carol_sent: list[Frame] = []
    bob = Member("WebSocket", Client(recording(WebSocketTransport(stack.ws_url("burst-bob")), bob_sent),
                                     keepalive=None), bob_sent)
    carol = Member("long poll", Client(recording(LongPollTransport(stack.base + "/api", stack.token("burst-carol")),
                                                 carol_sent), keepalive=None), carol_sent)
    for client in (alice, bob.client, carol.client):
        await client.start()
    for member in (bob, carol):  # whoever is added has written to the adder (protocol.md §13.2)
        await asyncio.wait_for((await member.client.send("hi", to={"kind": "user", "id": "burst-alice"})).accepted,
                               WAIT)
    group = await alice.create_group("burst", [{"kind": "user", "id": "burst-bob"},
                                               {"kind": "user", "id": "burst-carol"}])
    conversation_id = str(group["conversation_id"])
    for member in (bob, carol):  # the created event reaches both before the burst starts
        event = await asyncio.wait_for(member.client.inbox.get(), WAIT)
        assert event.get("event", {}).get("type") == "created", event
    marks = {m.name: len(m.sent) for m in (bob, carol)}
    receiving = [asyncio.create_task(m.receive(conversation_id, messages)) for m in (bob, carol)]
    last = None
    for i in range(messages):
        last = await alice.send(text=f"burst {i}", conversation_id=conversation_id)
    assert last is not None
    await asyncio.wait_for(last.accepted, WAIT)
    await asyncio.wait_for(asyncio.gather(*receiving), WAIT)
    rows = []
    for member in (bob, carol):
        await member.client.close()  # flushes the pending ack (§13.5)
        assert member.first is not None and member.last is not None
        duration = member.last - member.first
        acks = member.acks(conversation_id, marks[member.name])
        rows.append({"member": member.name, "duration": duration, "acks": len(acks),
                     "bound": math.ceil(messages / K) + math.ceil(duration / T) + 1,
                     "last_ack": max((int(a["seq"]) for a in acks), default=0),
                     "quiet": all(a.get("quiet") is True for a in acks)})
    await alice.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1000)
    args = parser.parse_args()
    stack = Stack({"SEND_LIMIT": "0"})
    try:
        rows = asyncio.run(measure(stack, args.messages))
    finally:
        stack.stop()
    lines = [
        f"`.venv/bin/python -m bench.group_acks --messages {args.messages}` (the local stack, a group of three; "
        f"the owner sends {args.messages} messages one after another; the other two members use the Python SDK's "
        f"default batched acks, K = {K}, T = {T:g} s; {machine()})",
        "",
        "| member's transport | burst received in | acks sent (all quiet) | bound: messages/K + duration/T + 1 "
        "| one ack per message | last ack covers seq |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(f"| {row['member']} | {row['duration']:.1f} s | **{row['acks']}**"
                     f"{'' if row['quiet'] else ' (not all quiet!)'} | {row['bound']} | {args.messages} "
                     f"| {row['last_ack']} |")
    update_section("group-acks", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
