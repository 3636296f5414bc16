"""Benchmark: msg:R -> the receiver's msg:N over WebSocket and over long poll, in one run.

    .venv/bin/python -m bench.transports --messages 40

One local stack; a sender on WebSocket sends to two receivers in turn, one holding a WebSocket
and one holding a long poll (protocol 4: its wait held by the wait API on the connection's SQS
queue, no function running), and the time from `send` to the message arriving in each
receiver's client is measured. Results go to docs/performance.md.
"""
from __future__ import annotations

import argparse
import asyncio
import time

from bench.exchange import Stack, ms
from bench.report import machine, percentile, update_section
from webim_client import Client, LongPollTransport, WebSocketTransport


async def run(stack: Stack, messages: int) -> dict[str, list[float]]:
    sender = Client(WebSocketTransport(stack.ws_url("tx-alice")))
    receivers = {
        "WebSocket": Client(WebSocketTransport(stack.ws_url("tx-bob-ws"))),
        "long poll": Client(LongPollTransport(stack.base + "/api", stack.token("tx-bob-lp"))),
    }
    names = {"WebSocket": "tx-bob-ws", "long poll": "tx-bob-lp"}
    for client in [sender, *receivers.values()]:
        await client.start(pull=False)
    delays: dict[str, list[float]] = {name: [] for name in receivers}
    try:
        for i in range(messages):
            for name, receiver in receivers.items():
                started = time.perf_counter()
                sent = await sender.send(f"m{i}", to={"kind": "user", "id": names[name]})
                await asyncio.wait_for(receiver.inbox.get(), 30)
                delays[name].append(time.perf_counter() - started)
                await asyncio.wait_for(sent.delivered, 30)
                await asyncio.sleep(0.05)  # let the receiver's wait be re-issued and held again
    finally:
        for client in [sender, *receivers.values()]:
            await client.close()
    return delays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=40)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    stack = Stack()
    try:
        delays = asyncio.run(run(stack, args.messages))
    finally:
        stack.stop()
    ws, lp = percentile(delays["WebSocket"], 50), percentile(delays["long poll"], 50)
    body = "\n".join([
        f"`.venv/bin/python -m bench.transports --messages {args.messages}` "
        f"(one stack, one sender on WebSocket, receivers on each transport in turn; the long poll's wait is "
        f"the local wait API's, run from infra/template.yaml; {machine()})",
        "",
        "| receiver's transport | msg:R -> msg:N p50 | p90 | p99 |",
        "|---|---|---|---|",
        *(f"| {name} | **{ms(percentile(values, 50))}** | {ms(percentile(values, 90))} | "
          f"{ms(percentile(values, 99))} |" for name, values in delays.items()),
        "",
        f"Long poll p50 / WebSocket p50 = **{lp / ws:.2f}x** (target: at most 1.5x).",
    ])
    print(body)
    if not args.no_write:
        update_section("transports", body)


if __name__ == "__main__":
    main()
