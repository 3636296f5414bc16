"""Soak benchmark: does the local stack stay fast and small as messages pile up?

    make bench                         # or: .venv/bin/python -m bench.soak --messages 2000 --block 200

Starts a fresh local stack (`python -m devstack`, as bench/exchange.py does), connects 20 pairs
with the Python client over WebSocket, and first sends a short baseline (200 messages, the store
nearly empty), then 10,000 messages across the pairs: each pair's sender one message at a time
(the next after ack:N), all pairs at once. Per message: one-way latency msg:R -> msg:N (the
receiver's `message` frame). Reported by block of 1,000 messages in completion order: p50, p99,
exchanges per second in the block, and the stack process's RSS (its /proc VmRSS) at the block's
end. Results go to docs/performance.md (section `soak`).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.exchange import Stack
from bench.report import machine, percentile, update_section
from webim_client import Client, WebSocketTransport

# Targets from issue 12: p50 with 10,000 stored within 1.2x of p50 with none; RSS growth < 50 MB.
LATENCY_TARGET = 1.2
RSS_TARGET_MB = 50.0


def rss_mb(pid: int) -> float:
    """Resident set size of process `pid` in MB (VmRSS, reported by the kernel in kB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


@dataclass(frozen=True)
class Sample:
    """One message: its one-way latency and when its exchange completed (ack:N at the sender)."""

    latency: float  # msg:R -> msg:N, seconds
    done: float  # perf_counter at ack:N


@dataclass(frozen=True)
class Block:
    index: int  # 1-based
    count: int
    p50: float
    p99: float
    rate: float  # exchanges per second within the block
    rss_mb: float  # the stack's RSS when the block's last exchange completed


def blocks_of(samples: list[Sample], size: int, started: float, rss: list[float]) -> list[Block]:
    """Split samples (in completion order) into blocks of `size` (the last may be shorter).

    A block's rate is its count over the time from the previous block's last completion (for
    the first block: `started`) to its own last completion; `rss[i]` is block i's RSS reading.
    """
    result = []
    previous_end = started
    for i, start in enumerate(range(0, len(samples), size)):
        chunk = samples[start:start + size]
        end = chunk[-1].done
        latencies = [s.latency for s in chunk]
        elapsed = end - previous_end
        result.append(Block(index=i + 1, count=len(chunk), p50=percentile(latencies, 50),
                            p99=percentile(latencies, 99), rate=len(chunk) / elapsed if elapsed > 0 else float("inf"),
                            rss_mb=rss[i]))
        previous_end = end
    return result


@dataclass(frozen=True)
class Verdict:
    empty_p50: float  # the baseline's p50 (store nearly empty)
    first_p50: float
    last_p50: float
    rss_start_mb: float  # after the baseline, before the soak's first message
    rss_first_mb: float  # at the end of the first block
    rss_last_mb: float  # at the end of the last block

    @property
    def last_over_empty(self) -> float:
        return self.last_p50 / self.empty_p50

    @property
    def last_over_first(self) -> float:
        return self.last_p50 / self.first_p50

    @property
    def rss_growth_mb(self) -> float:
        """Over the whole soak: from before its first message to the end of its last block."""
        return self.rss_last_mb - self.rss_start_mb

    @property
    def rss_growth_blocks_mb(self) -> float:
        return self.rss_last_mb - self.rss_first_mb

    @property
    def flat(self) -> bool:
        return self.last_over_empty <= LATENCY_TARGET and self.rss_growth_mb < RSS_TARGET_MB

    def line(self, stored: int) -> str:
        return (
            f"**{'flat' if self.flat else 'NOT flat'}**: last block p50 / empty-store p50 = "
            f"**{self.last_over_empty:.2f}x** (target <= {LATENCY_TARGET}x; last / first block "
            f"{self.last_over_first:.2f}x); RSS {self.rss_start_mb:.0f} -> {self.rss_last_mb:.0f} MB over the "
            f"{stored:,} messages = **{self.rss_growth_mb:+.1f} MB** (target < {RSS_TARGET_MB:.0f} MB; first -> "
            f"last block {self.rss_growth_blocks_mb:+.1f} MB)"
        )


def verdict(baseline: list[float], blocks: list[Block], rss_start_mb: float) -> Verdict:
    return Verdict(empty_p50=percentile(baseline, 50), first_p50=blocks[0].p50, last_p50=blocks[-1].p50,
                   rss_start_mb=rss_start_mb, rss_first_mb=blocks[0].rss_mb, rss_last_mb=blocks[-1].rss_mb)


def shares(total: int, parts: int) -> list[int]:
    """`total` split over `parts` as evenly as possible (the first ones get the remainder)."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


# --- driving the stack (bench/throughput.py uses these too) ------------------------------------

Pair = tuple[Client, Client, str]  # sender, receiver, receiver's user id


async def connect_pairs(stack: Stack, pairs: int, prefix: str = "soak") -> list[Pair]:
    result = []
    for i in range(pairs):
        alice = Client(WebSocketTransport(stack.ws_url(f"{prefix}-a{i}")), ack_timeout=10)
        bob = Client(WebSocketTransport(stack.ws_url(f"{prefix}-b{i}")), ack_timeout=10)
        await alice.start(pull=False)
        await bob.start(pull=False)
        result.append((alice, bob, f"{prefix}-b{i}"))
    return result


async def close_pairs(pairs: list[Pair]) -> None:
    for alice, bob, _ in pairs:
        await alice.close()
        await bob.close()


async def exchange(pair: Pair, text: str) -> Sample:
    """One message, msg:R through ack:N; the receiver's client answers ack:R itself."""
    alice, bob, bob_id = pair
    started = time.perf_counter()
    sent = await alice.send(text, to={"kind": "user", "id": bob_id})
    await asyncio.wait_for(bob.inbox.get(), 30)
    latency = time.perf_counter() - started
    await asyncio.wait_for(sent.delivered, 30)
    return Sample(latency=latency, done=time.perf_counter())


async def drive(pairs: list[Pair], per_pair: list[int], record: Callable[[Sample], None], label: str,
                failures: list[str] | None = None) -> None:
    """Each pair sends its share one message after another; all pairs at once. With `failures`,
    an exchange not complete within 30 s is noted there and the pair goes on (a long run keeps
    its results); without, it ends the run."""

    async def one(index: int) -> None:
        for i in range(per_pair[index]):
            try:
                record(await exchange(pairs[index], f"{label} {i}"))
            except TimeoutError:
                if failures is None:
                    raise
                failures.append(f"pair {index}, message {i}")
                print(f"TIMEOUT: pair {index}, message {i} (not complete in 30 s)", flush=True)

    await asyncio.gather(*(one(i) for i in range(len(pairs))))


@dataclass
class SoakResult:
    baseline: list[float]
    blocks: list[Block]
    rss_start_mb: float
    wall: float
    load: tuple[float, float]  # the machine's 1-minute load average at the soak's start and end
    failures: list[str]  # exchanges not complete within 30 s (counted in no block)


async def soak(stack: Stack, pairs: int, messages: int, block: int, baseline: int) -> SoakResult:
    pid = stack.process.pid
    connected = await connect_pairs(stack, pairs)
    try:
        # warm-up (one per pair, not reported): first sends fill per-container caches
        await drive(connected, [1] * pairs, lambda _: None, "warm-up")
        base: list[Sample] = []
        await drive(connected, shares(baseline, pairs), base.append, "baseline")
        rss_start = rss_mb(pid)
        samples: list[Sample] = []
        rss: list[float] = []
        failures: list[str] = []

        def record(sample: Sample) -> None:
            samples.append(sample)
            if len(samples) % block == 0 or len(samples) + len(failures) == messages:
                rss.append(rss_mb(pid))  # read now: the stack keeps serving the other pairs
                latest = [s.latency for s in samples[-block:]]
                print(f"block {len(rss)}: {len(samples)} messages, p50 {ms(percentile(latest, 50))}, "
                      f"p99 {ms(percentile(latest, 99))}, RSS {rss[-1]:.0f} MB", flush=True)

        load_start = os.getloadavg()[0]
        started = time.perf_counter()
        await drive(connected, shares(messages, pairs), record, "soak", failures)
        wall = time.perf_counter() - started
        load = (load_start, os.getloadavg()[0])
    finally:
        await close_pairs(connected)
    return SoakResult(baseline=[s.latency for s in base], blocks=blocks_of(samples, block, started, rss),
                      rss_start_mb=rss_start, wall=wall, load=load,
                      failures=failures)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def report(result: SoakResult, command: str, messages: int) -> str:
    v = verdict(result.baseline, result.blocks, result.rss_start_mb)
    rows = [f"| {b.index} | {ms(b.p50)} | {ms(b.p99)} | {b.rate:.1f} /s | {b.rss_mb:.0f} MB |" for b in result.blocks]
    return "\n".join([
        f"`{command}` (a fresh local stack; each pair's sender sends one message after another, the next "
        f"after ack:N; all pairs at once; clients and stack on one machine: {machine()})",
        "",
        f"Empty store (baseline, {len(result.baseline)} messages after one warm-up message per pair, before "
        f"the soak): msg:R -> msg:N p50 **{ms(v.empty_p50)}**, p99 {ms(percentile(result.baseline, 99))}; "
        f"stack RSS {result.rss_start_mb:.0f} MB. Then {messages:,} messages in {result.wall:.0f} s (machine load "
        f"average {result.load[0]:.1f} at the start, {result.load[1]:.1f} at the end):",
        "",
        "| block (completion order) | msg:R -> msg:N p50 | p99 | exchanges/s in the block | stack RSS at its end |",
        "|---|---|---|---|---|",
        *rows,
        "",
        v.line(messages),
        *(["", f"{len(result.failures)} exchange(s) not complete within 30 s, in no block: "
           f"{'; '.join(result.failures[:5])}"] if result.failures else []),
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=10_000, help="in total, across the pairs")
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--block", type=int, default=1_000)
    parser.add_argument("--baseline", type=int, default=200, help="messages before the soak (the empty store)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/performance.md")
    args = parser.parse_args()
    stack = Stack()
    try:
        result = asyncio.run(soak(stack, args.pairs, args.messages, args.block, args.baseline))
        if result.failures:  # what the stack said about it
            print(Path(stack.log.name).read_text()[-8000:], file=sys.stderr)
    finally:
        stack.stop()
    command = " ".join([".venv/bin/python -m bench.soak", *map(shlex.quote, sys.argv[1:])])
    body = report(result, command.replace(" --no-write", ""), args.messages)
    print(body)
    if not args.no_write:
        update_section("soak", body)


if __name__ == "__main__":
    main()
