"""Soak benchmark: does the local stack stay fast and small as messages pile up?

    make bench                         # or: .venv/bin/python -m bench.soak --messages 2000 --block 200

Starts a fresh local stack (`python -m devstack`, as bench/exchange.py does), connects 20 pairs
with the Python client over WebSocket, and sends 10,000 messages across them, a block of 1,000
at a time: each pair's sender one message at a time (the next after ack:N), all pairs at once.
Per message: one-way latency msg:R -> msg:N (the receiver's `message` frame); under 20 pairs at
once that is mostly queueing on 2 cores. So after each block, with the 20 pairs quiet, a probe
pair sends `--probe` messages one after another: the one-way latency of a single conversation,
the issue's measure, with the store as full as the block left it. The probe before the first
block is the empty store. Reported per block: the load's p50/p99 and exchanges/s, the probe's
p50/p99, and the stack process's RSS (its /proc VmRSS) at the block's end. Results go to
docs/performance.md (section `soak`).
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
    probe_p50: float  # one pair alone, after the block
    probe_p99: float


@dataclass(frozen=True)
class BlockRun:
    """What one block measured: its messages under load, then the probe alone."""

    samples: list[Sample]  # the 20 pairs' messages, in completion order
    started: float  # perf_counter when the block's first message was sent
    rss_mb: float  # the stack's RSS when the block's last exchange completed
    probe: list[float]  # the probe pair's one-way latencies after the block, seconds


def blocks_of(runs: list[BlockRun]) -> list[Block]:
    """One Block per run: the load's p50/p99 and rate (its count over the time from its first
    send to its last completion, the probe not included), the probe's p50/p99, the RSS."""
    result = []
    for i, run in enumerate(runs):
        latencies = [s.latency for s in run.samples]
        elapsed = max(s.done for s in run.samples) - run.started
        rate = len(latencies) / elapsed if elapsed > 0 else float("inf")
        result.append(Block(index=i + 1, count=len(run.samples), p50=percentile(latencies, 50),
                            p99=percentile(latencies, 99), rate=rate,
                            rss_mb=run.rss_mb, probe_p50=percentile(run.probe, 50),
                            probe_p99=percentile(run.probe, 99)))
    return result


@dataclass(frozen=True)
class Verdict:
    empty_p50: float  # the probe's p50 before the first block (the store empty)
    first_p50: float  # the probe's p50 after the first block
    last_p50: float  # ... after the last block
    rss_start_mb: float  # after the empty-store probe, before the soak's first message
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
            f"**{'flat' if self.flat else 'NOT flat'}**: probe p50 after the last block / with the store empty = "
            f"**{self.last_over_empty:.2f}x** (target <= {LATENCY_TARGET}x; after the last / first block "
            f"{self.last_over_first:.2f}x); RSS {self.rss_start_mb:.0f} -> {self.rss_last_mb:.0f} MB over the "
            f"{stored:,} messages = **{self.rss_growth_mb:+.1f} MB** (target < {RSS_TARGET_MB:.0f} MB; first -> "
            f"last block {self.rss_growth_blocks_mb:+.1f} MB)"
        )


def verdict(empty_probe: list[float], blocks: list[Block], rss_start_mb: float) -> Verdict:
    return Verdict(empty_p50=percentile(empty_probe, 50), first_p50=blocks[0].probe_p50, last_p50=blocks[-1].probe_p50,
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
    empty_probe: list[float]  # the probe's latencies before the first block
    blocks: list[Block]
    rss_start_mb: float
    wall: float
    load: tuple[float, float]  # the machine's 1-minute load average at the soak's start and end
    failures: list[str]  # exchanges not complete within 30 s (counted in no block)


async def probe(pair: Pair, count: int, label: str) -> list[float]:
    """One conversation alone: `count` messages one after another, their one-way latencies."""
    latencies: list[float] = []
    await drive([pair], [count], lambda sample: latencies.append(sample.latency), label)
    return latencies


async def soak(stack: Stack, pairs: int, messages: int, block: int, probe_size: int) -> SoakResult:
    pid = stack.process.pid
    connected = await connect_pairs(stack, pairs)
    prober = (await connect_pairs(stack, 1, prefix="probe"))[0]
    try:
        # warm-up (not reported): first sends fill per-container caches
        await drive([*connected, prober], [1] * (pairs + 1), lambda _: None, "warm-up")
        empty = await probe(prober, probe_size, "probe, store empty")
        rss_start = rss_mb(pid)
        runs: list[BlockRun] = []
        failures: list[str] = []
        load_start = os.getloadavg()[0]
        started = time.perf_counter()
        for sent in range(0, messages, block):
            samples: list[Sample] = []
            block_started = time.perf_counter()
            await drive(connected, shares(min(block, messages - sent), pairs), samples.append, "soak", failures)
            rss = rss_mb(pid)
            latencies = await probe(prober, probe_size, f"probe {len(runs) + 1}")
            runs.append(BlockRun(samples=samples, started=block_started, rss_mb=rss, probe=latencies))
            print(f"block {len(runs)}: {sent + len(samples)} messages, load p50 "
                  f"{ms(percentile([s.latency for s in samples], 50))}, probe p50 {ms(percentile(latencies, 50))}, "
                  f"RSS {rss:.0f} MB", flush=True)
        wall = time.perf_counter() - started
        load = (load_start, os.getloadavg()[0])
    finally:
        await close_pairs([*connected, prober])
    return SoakResult(empty_probe=empty, blocks=blocks_of(runs), rss_start_mb=rss_start, wall=wall, load=load,
                      failures=failures)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def report(result: SoakResult, command: str, messages: int, probe_size: int) -> str:
    v = verdict(result.empty_probe, result.blocks, result.rss_start_mb)
    rows, stored = [], 0
    for b in result.blocks:
        stored += b.count
        rows.append(f"| {b.index} | {stored:,} | **{ms(b.probe_p50)}** | {ms(b.probe_p99)} | {ms(b.p50)} | "
                    f"{ms(b.p99)} | {b.rate:.1f} /s | {b.rss_mb:.0f} MB |")
    return "\n".join([
        f"`{command}` (a fresh local stack; {len(result.blocks)} blocks: the pairs send the block's messages, "
        f"each pair's sender one after another, the next after ack:N, all pairs at once; then, with them "
        f"quiet, a probe pair sends {probe_size} messages one after another; clients and stack on one "
        f"machine: {machine()})",
        "",
        f"Probe with the store empty (after one warm-up message per pair): msg:R -> msg:N p50 "
        f"**{ms(v.empty_p50)}**, p99 {ms(percentile(result.empty_probe, 99))}; stack RSS "
        f"{result.rss_start_mb:.0f} MB. Then {messages:,} messages in {result.wall:.0f} s, probes included "
        f"(machine load average {result.load[0]:.1f} at the start, {result.load[1]:.1f} at the end):",
        "",
        "| block | messages stored by the pairs | probe p50 (one pair alone) | probe p99 | under load p50 | "
        "under load p99 | exchanges/s under load | stack RSS |",
        "|---|---|---|---|---|---|---|---|",
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
    parser.add_argument("--probe", type=int, default=100, help="the probe pair's messages after each block")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/performance.md")
    args = parser.parse_args()
    stack = Stack()
    try:
        result = asyncio.run(soak(stack, args.pairs, args.messages, args.block, args.probe))
        if result.failures:  # what the stack said about it
            print(Path(stack.log.name).read_text()[-8000:], file=sys.stderr)
    finally:
        stack.stop()
    command = " ".join([".venv/bin/python -m bench.soak", *map(shlex.quote, sys.argv[1:])])
    body = report(result, command.replace(" --no-write", ""), args.messages, args.probe)
    print(body)
    if not args.no_write:
        update_section("soak", body)


if __name__ == "__main__":
    main()
