"""Throughput: the project's full exchanges against a naive one-way chat, on the same moto, in one run.

    make bench                         # or: .venv/bin/python -m bench.throughput --messages 20

For 1 pair and for 10 pairs, each with a fresh server: (a) the local stack, full six-packet
exchanges (msg:R, msg:A, msg:N, ack:R, ack:A, ack:N; the Python client acks by itself), each
pair's sender sending the next message after ack:N; (b) bench/naive_chat.py, one-way messages,
each pair's sender sending the next after the receiver got the previous. All pairs at once; two
warm-up messages per pair first, not counted; rates are messages over the wall time of the timed
part. Results go to docs/performance.md (section `throughput`); the target is project/naive >= 1.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import sys
import time
from dataclasses import dataclass

from websockets.asyncio.client import ClientConnection, connect

from bench.exchange import Stack
from bench.naive_chat import NaiveServer
from bench.report import machine, percentile, update_section
from bench.soak import Sample, close_pairs, connect_pairs, drive

WARM_UP = 2


@dataclass(frozen=True)
class Run:
    rate: float  # messages (or full exchanges) per second
    p50: float  # one-way latency, seconds


def timed(samples: list[Sample], started: float) -> Run:
    return Run(rate=len(samples) / (time.perf_counter() - started), p50=percentile([s.latency for s in samples], 50))


async def project(pairs: int, messages: int) -> Run:
    stack = Stack()
    try:
        connected = await connect_pairs(stack, pairs, prefix="tp")
        try:
            await drive(connected, [WARM_UP] * pairs, lambda _: None, "warm-up")
            samples: list[Sample] = []
            started = time.perf_counter()
            await drive(connected, [messages] * pairs, samples.append, "timed")
            return timed(samples, started)
        finally:
            await close_pairs(connected)
    finally:
        stack.stop()


async def naive(pairs: int, messages: int) -> Run:
    server = NaiveServer()
    try:
        sockets: list[tuple[ClientConnection, ClientConnection, str]] = []
        for i in range(pairs):
            sockets.append((await connect(server.ws_url(f"a{i}")), await connect(server.ws_url(f"b{i}")), f"b{i}"))
        samples: list[Sample] = []

        async def one(index: int, count: int, record: list[Sample] | None) -> None:
            alice, bob, bob_id = sockets[index]
            for i in range(count):
                started = time.perf_counter()
                await alice.send(json.dumps({"to": bob_id, "text": f"message {i}"}))
                await asyncio.wait_for(bob.recv(), 30)
                done = time.perf_counter()
                if record is not None:
                    record.append(Sample(latency=done - started, done=done))

        await asyncio.gather(*(one(i, WARM_UP, None) for i in range(pairs)))
        started = time.perf_counter()
        await asyncio.gather(*(one(i, messages, samples) for i in range(pairs)))
        result = timed(samples, started)
        for alice, bob, _ in sockets:
            await alice.close()
            await bob.close()
        return result
    finally:
        server.stop()


def row(pairs: int, messages: int, ours: Run, theirs: Run) -> str:
    ratio = ours.rate / theirs.rate
    return (f"| {pairs} x {messages} | {ours.rate:.1f} /s | {ours.p50 * 1000:.1f} ms | {theirs.rate:.1f} /s "
            f"| {theirs.p50 * 1000:.1f} ms | **{ratio:.2f}** {'(met)' if ratio >= 1 else '(not met)'} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, nargs="+", default=[1, 10], help="one row per value")
    parser.add_argument("--messages", type=int, default=40, help="per pair")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/performance.md")
    args = parser.parse_args()
    rows = []
    for pairs in args.pairs:
        ours = asyncio.run(project(pairs, args.messages))
        theirs = asyncio.run(naive(pairs, args.messages))
        rows.append(row(pairs, args.messages, ours, theirs))
        print(rows[-1], flush=True)
    command = " ".join([".venv/bin/python -m bench.throughput",
                        *map(shlex.quote, (a for a in sys.argv[1:] if a != "--no-write"))])
    body = "\n".join([
        f"`{command}` (one run, a fresh server per measurement; all pairs at once, each pair's sender sending "
        f"the next message when the previous one completed; {WARM_UP} warm-up messages per pair not counted; "
        f"clients and server on one machine: {machine()})",
        "",
        "| pairs x messages | project: full exchanges/s (msg:R .. ack:N) | project msg:R -> msg:N p50 "
        "| naive: one-way messages/s | naive one-way p50 | project / naive (target >= 1.0) |",
        "|---|---|---|---|---|---|",
        *rows,
    ])
    print(body)
    if not args.no_write:
        update_section("throughput", body)


if __name__ == "__main__":
    main()
