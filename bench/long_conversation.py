"""Benchmark: one conversation, 10,000 messages: does the local stack stay as fast at the end?

    .venv/bin/python -m bench.long_conversation --messages 10000 --window 1000

A fresh local stack (`python -m devstack`); one pair over WebSocket (the Python client); the
sender sends one message at a time, the next after ack:N, all in one conversation. Measured per
message: one-way latency msg:R -> msg:N (the receiver's `message`). Reported: p50/p99 of the
first `--window` messages and of the last, their ratio (issue 24's target: the last within 1.2x
of the first), the stack process's resident memory (VmRSS) at the start and the end (target: at
most +50 MB), and the machine's load average at both ends (a busier machine in the second half
would bias the ratio). Results go to docs/performance.md (section `long-conversation`).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import time

from bench.exchange import Stack, ms
from bench.held_waits import rss_mb
from bench.report import machine, percentile, update_section
from webim_client import Client, WebSocketTransport

LATENCY_TARGET = 1.2
RSS_TARGET_MB = 50.0


async def run(stack: Stack, messages: int) -> tuple[list[float], float, float]:
    alice = Client(WebSocketTransport(stack.ws_url("lc-alice")))
    bob = Client(WebSocketTransport(stack.ws_url("lc-bob")))
    for client in (alice, bob):
        await client.start(pull=False)
    rss_start = rss_mb(stack.process.pid)
    latencies: list[float] = []
    try:
        for i in range(messages):
            started = time.perf_counter()
            sent = await alice.send(f"m{i}", to={"kind": "user", "id": "lc-bob"})
            await asyncio.wait_for(bob.inbox.get(), 30)
            latencies.append(time.perf_counter() - started)
            await asyncio.wait_for(sent.delivered, 30)
    finally:
        await alice.close()
        await bob.close()
    return latencies, rss_start, rss_mb(stack.process.pid)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--window", type=int, default=1_000)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    load_start = os.getloadavg()[0]
    stack = Stack({"SEND_LIMIT": "0"})  # one sender far above a person's rate
    try:
        latencies, rss_start, rss_end = asyncio.run(run(stack, args.messages))
    finally:
        stack.stop()
    load_end = os.getloadavg()[0]
    first, last = latencies[: args.window], latencies[-args.window:]
    ratio = percentile(last, 50) / percentile(first, 50)
    growth = rss_end - rss_start
    flat = ratio <= LATENCY_TARGET and growth <= RSS_TARGET_MB
    body = "\n".join([
        f"`.venv/bin/python -m bench.long_conversation --messages {args.messages} --window {args.window}` (a fresh "
        f"local stack, one pair over WebSocket, one conversation, each message after the previous one's ack:N; "
        f"{machine()}; load average {load_start:.1f} at the start, {load_end:.1f} at the end)",
        "",
        "| messages | msg:R -> msg:N p50 | p99 |",
        "|---|---|---|",
        f"| first {args.window:,} | **{ms(percentile(first, 50))}** | {ms(percentile(first, 99))} |",
        f"| last {args.window:,} (of {args.messages:,}) | **{ms(percentile(last, 50))}** | "
        f"{ms(percentile(last, 99))} |",
        "",
        f"**{'flat' if flat else 'NOT flat'}**: last / first p50 = **{ratio:.2f}x** (target <= {LATENCY_TARGET}x); "
        f"the stack's RSS {rss_start:.0f} -> {rss_end:.0f} MB = **{growth:+.1f} MB** "
        f"(target <= +{RSS_TARGET_MB:.0f} MB).",
    ])
    print(body)
    if not args.no_write:
        update_section("long-conversation", body)


if __name__ == "__main__":
    main()
