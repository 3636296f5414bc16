"""Benchmark: how fast a group message reaches the other members on the local stack (issue 24).

    .venv/bin/python -m bench.group_latency [--seconds 120]   # writes the `group-latency` section

Starts a fresh local stack (`python -m devstack`, as `make run` does, default settings), makes a
group of 20 members with the Python SDK (15 on WebSocket, 5 on long poll: protocol 4, the SDK's
LongPollTransport), and has 5 of them (4 on WebSocket, 1 on long poll) each send 1 message a
second for `--seconds`. Every member takes every other sender's message; measured per
(member, message): the time from the sender's msg:R (the SDK's `send`) to the member's
`message` (the SDK's inbox), and whether it came by push (a `message` frame the transport
received: the WebSocket, or the long poll's wait or poll answer) or by a pull (`sync`, asked
after a gap). Targets (issue 24): p50 <= 300 ms, p99 <= 2 s, >= 99 % by push. Also recorded:
the machine's load (os.getloadavg), the stack process's CPU over the run, the pulls the clients
sent (`client.pulls`, beyond the one on connect).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.exchange import Stack
from bench.report import machine, percentile, update_section
from webim_client import Client, FaultyTransport, LongPollTransport, WebSocketTransport

Frame = dict[str, Any]
MEMBERS, LONG_POLL, SENDERS = 20, 5, 5
WAIT = 120.0  # the longest any one step may take before the run is called failed
TARGET_P50, TARGET_P99, TARGET_PUSH = 0.300, 2.0, 0.99


@dataclass
class Member:
    name: str
    transport: str  # "WebSocket" / "long poll"
    client: Client
    pushed: set[tuple[str, int]] = field(default_factory=set)  # (conversation, seq) seen as a pushed frame
    # client_id -> (latency in s, came by push)
    got: dict[str, tuple[float, bool]] = field(default_factory=dict)
    pulls_at_start: int = 0


def watched(transport: Any, member: list[Member]) -> FaultyTransport:
    """The transport, with every incoming `message` frame noted before the client takes it (a
    message inside a `sync` answer is not one: that is a pull)."""
    def note(frame: Frame) -> bool:
        if frame.get("type") == "message" and member:
            member[0].pushed.add((str(frame.get("conversation_id")), int(frame.get("seq", 0))))
        return False  # never dropped

    return FaultyTransport(transport, drop_in=note)


async def _receive(member: Member, conversation_id: str, sent_at: dict[str, float]) -> None:
    while True:
        message = await member.client.inbox.get()
        if message.get("conversation_id") != conversation_id or message.get("event"):
            continue
        client_id = str(message.get("client_id"))
        if client_id in sent_at and client_id not in member.got:
            by_push = (conversation_id, int(message["seq"])) in member.pushed
            member.got[client_id] = (time.perf_counter() - sent_at[client_id], by_push)


@dataclass
class Sent:
    at: dict[str, float] = field(default_factory=dict)  # client id -> msg:R time
    by: dict[str, str] = field(default_factory=dict)  # client id -> its sender's name
    accepted: list[Any] = field(default_factory=list)  # their `sent` futures


async def _sender(member: Member, conversation_id: str, seconds: float, rate: float, start: float,
                  sent: Sent) -> None:
    for number in range(int(seconds * rate)):
        delay = start + number / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        at = time.perf_counter()
        # `send` queues the frame and returns without yielding: no answer can come before this
        outgoing = await member.client.send(f"{member.name} {number}", conversation_id=conversation_id)
        sent.at[outgoing.client_id], sent.by[outgoing.client_id] = at, member.name
        sent.accepted.append(outgoing.accepted)


def _cpu_seconds(pid: int) -> float:
    """The process's user + system CPU time so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(stack: Stack, seconds: float, rate: float) -> dict[str, Any]:
    tag = f"gl{time.monotonic_ns() % 10**8}"
    names = [f"{tag}-m{number:02d}" for number in range(MEMBERS)]
    members: list[Member] = []
    for number, name in enumerate(names):
        holder: list[Member] = []
        if number >= MEMBERS - LONG_POLL:
            kind, transport = "long poll", watched(LongPollTransport(stack.base + "/api", stack.token(name)), holder)
        else:
            kind, transport = "WebSocket", watched(WebSocketTransport(stack.ws_url(name)), holder)
        member = Member(name, kind, Client(transport))
        holder.append(member)
        members.append(member)
    await asyncio.gather(*(m.client.start() for m in members))
    owner = members[0]
    # whoever is added has written to the adder (protocol.md §13.2)
    hellos = [await m.client.send("hi", to={"kind": "user", "id": owner.name}) for m in members[1:]]
    await asyncio.wait_for(asyncio.gather(*(h.accepted for h in hellos)), WAIT)
    group = await owner.client.create_group("latency", [{"kind": "user", "id": m.name} for m in members[1:]])
    conversation_id = str(group["conversation_id"])
    for member in members[1:]:  # the `created` event reached everyone before the clock starts
        while True:
            event = await asyncio.wait_for(member.client.inbox.get(), WAIT)
            if event.get("conversation_id") == conversation_id:
                break
    senders = members[:SENDERS - 1] + members[-1:]  # 4 on WebSocket, 1 on long poll
    for member in members:
        member.pulls_at_start = member.client.pulls
    sent = Sent()
    sent_at, own = sent.at, sent.by
    receivers = [asyncio.create_task(_receive(m, conversation_id, sent_at)) for m in members]
    load_before = os.getloadavg()
    cpu_before, wall_before = _cpu_seconds(stack.process.pid), time.perf_counter()
    start = time.perf_counter() + 0.5
    await asyncio.gather(*(_sender(m, conversation_id, seconds, rate, start + i / (rate * SENDERS), sent)
                           for i, m in enumerate(senders)))
    # a message never accepted is reported (and counted as never arrived), not waited for forever
    await asyncio.wait(sent.accepted, timeout=WAIT)
    unaccepted = {m.name: [o.state for o in m.client.outgoing.values() if o.client_id in sent.at
                           and not o.accepted.done()] for m in senders}
    deadline = time.perf_counter() + WAIT
    while time.perf_counter() < deadline:
        missing = sum(1 for m in members for c in sent_at if own[c] != m.name and c not in m.got)
        if not missing:
            break
        await asyncio.sleep(0.2)
    wall = time.perf_counter() - wall_before
    cpu = _cpu_seconds(stack.process.pid) - cpu_before
    load_after = os.getloadavg()
    for task in receivers:
        task.cancel()
    await asyncio.wait_for(asyncio.gather(*(m.client.close() for m in members), return_exceptions=True), WAIT)
    return {"members": members, "sent": len(sent_at), "own": own, "load_before": load_before,
            "unaccepted": {n: states for n, states in unaccepted.items() if states},
            "reconnects": {m.name: m.client.reconnects for m in members if m.client.reconnects},
            "offline": [f"{m.name} ({m.transport}, background errors {m.client.background_errors}, last connect "
                        f"error {m.client.last_connect_error})" for m in members if not m.client.online],
            "stored": {c for m in senders for c, o in m.client.outgoing.items() if c in sent.at and o.accepted.done()},
            "load_after": load_after, "cpu_share": cpu / wall, "wall": wall}


def summarise(result: dict[str, Any]) -> dict[str, Any]:
    members: list[Member] = result["members"]
    # only messages the server stored (answered `sent`) can reach anyone; the others are told apart
    own: dict[str, str] = {c: name for c, name in result["own"].items() if c in result["stored"]}
    rows: dict[str, dict[str, Any]] = {}
    for kind in ("WebSocket", "long poll", "all"):
        chosen = [m for m in members if kind in ("all", m.transport)]
        got = [m.got[c] for m in chosen for c in own if own[c] != m.name and c in m.got]
        lost = sum(1 for m in chosen for c in own if own[c] != m.name and c not in m.got)
        latencies = [g[0] for g in got]
        rows[kind] = {"members": len(chosen), "deliveries": len(got), "missing": lost,
                      "p50": percentile(latencies, 50), "p99": percentile(latencies, 99),
                      "max": max(latencies, default=float("nan")),
                      "push": sum(1 for g in got if g[1]) / len(got) if got else float("nan"),
                      "pulls": sum(m.client.pulls - m.pulls_at_start for m in chosen)}
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120.0, help="how long the 5 senders send")
    parser.add_argument("--rate", type=float, default=1.0, help="messages a second per sender")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/performance.md")
    parser.add_argument("--log", type=Path, help="keep the stack's log here")
    args = parser.parse_args()
    stack = Stack()
    try:
        result = asyncio.run(measure(stack, args.seconds, args.rate))
    finally:
        if args.log:
            args.log.write_text(Path(stack.log.name).read_text())
        stack.stop()
    rows = summarise(result)
    overall = rows["all"]
    met = (overall["p50"] <= TARGET_P50 and overall["p99"] <= TARGET_P99 and overall["push"] >= TARGET_PUSH
           and overall["missing"] == 0 and not result["unaccepted"])
    load_b, load_a = result["load_before"], result["load_after"]
    lines = [
        f"`.venv/bin/python -m bench.group_latency --seconds {args.seconds:g}` (a fresh local stack, "
        f"`python -m devstack` with its default settings; a group of {MEMBERS} members, {MEMBERS - LONG_POLL} on "
        f"WebSocket and {LONG_POLL} on long poll (protocol 4, the SDK's LongPollTransport); {SENDERS} senders "
        f"(4 WebSocket, 1 long poll) at {args.rate:g} message/s each for {args.seconds:g} s: "
        f"{result['sent']} messages ({len(result['stored'])} stored), each to the {MEMBERS - 1} other members; "
        f"{machine()}; load average "
        f"(1/5/15 min) {load_b[0]:.2f}/{load_b[1]:.2f}/{load_b[2]:.2f} before, "
        f"{load_a[0]:.2f}/{load_a[1]:.2f}/{load_a[2]:.2f} after; the stack process used "
        f"{result['cpu_share'] * 100:.0f} % of a core over the run)",
        "",
        "| members | deliveries | msg:R -> `message` p50 | p99 | max | by push | pulls (beyond connect) "
        "| never arrived |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for kind, row in rows.items():
        label = f"{'all' if kind == 'all' else kind} ({row['members']})"
        lines.append(f"| {label} | {row['deliveries']} | {row['p50'] * 1000:.0f} ms | {row['p99'] * 1000:.0f} ms "
                     f"| {row['max'] * 1000:.0f} ms | {row['push'] * 100:.2f} % | {row['pulls']} | {row['missing']} |")
    if result["unaccepted"] or result["reconnects"] or result["offline"]:
        unaccepted = {name: len(states) for name, states in result["unaccepted"].items()}
        lines += ["", f"Sends never answered `sent` (left out above, by sender): {unaccepted or 'none'}; clients "
                      f"offline at the end: {result['offline'] or 'none'}; clients that reconnected: "
                      f"{result['reconnects'] or 'none'}."]
    lines += [
        "",
        f"Targets (issue 24): p50 <= {TARGET_P50 * 1000:.0f} ms, p99 <= {TARGET_P99:g} s, >= "
        f"{TARGET_PUSH * 100:.0f} % by push: **{'met' if met else 'NOT met'}**.",
    ]
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        update_section("group-latency", body)


if __name__ == "__main__":
    main()
