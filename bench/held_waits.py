"""Benchmark: what 1,000 idle held long polls cost the rest of the local stack.

    .venv/bin/python -m bench.held_waits --held 1000 --sends 60

One local stack (`python -m devstack`). First a WebSocket pair exchanges `--sends` messages and
a REST route (`POST /presence`) is called as often: the baseline. Then 1,000 long-poll
connections are opened (50 identities x 20, the per-identity cap) and each holds its wait at
the wait API, re-issued the moment one ends, as clients do; the same exchange and REST calls
run again beside them. Reported: p50/p90 of send -> the receiver's `message` and of the REST
call, with and without the waits, and the stack process's resident memory (VmRSS) before,
with the waits, and after they went. Results go to docs/performance.md.
"""
from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path
from typing import Any

import httpx

from bench.exchange import Stack, ms
from bench.report import machine, percentile, update_section
from webim_client import Client, WebSocketTransport

PER_IDENTITY = 20


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def traffic(stack: Stack, sends: int, tag: str) -> tuple[list[float], list[float]]:
    """`sends` WebSocket messages (send -> the receiver's message) and as many REST calls."""
    alice = Client(WebSocketTransport(stack.ws_url(f"hw-alice-{tag}")))
    bob = Client(WebSocketTransport(stack.ws_url(f"hw-bob-{tag}")))
    token = stack.token(f"hw-carol-{tag}")
    for client in (alice, bob):
        await client.start(pull=False)
    delivered: list[float] = []
    rest: list[float] = []
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            for i in range(sends):
                started = time.perf_counter()
                sent = await alice.send(f"m{i}", to={"kind": "user", "id": f"hw-bob-{tag}"})
                await asyncio.wait_for(bob.inbox.get(), 30)
                delivered.append(time.perf_counter() - started)
                await asyncio.wait_for(sent.delivered, 30)
                started = time.perf_counter()
                answer = await http.post(f"{stack.base}/api/presence", headers={"Authorization": f"Bearer {token}"},
                                         json={"identities": [{"kind": "user", "id": f"hw-bob-{tag}"}]})
                answer.raise_for_status()
                rest.append(time.perf_counter() - started)
                await asyncio.sleep(0.05)
    finally:
        await alice.close()
        await bob.close()
    return delivered, rest


async def open_waits(stack: Stack, held: int) -> list[dict[str, Any]]:
    opened: list[dict[str, Any]] = []
    async with httpx.AsyncClient(timeout=30) as http:
        for n in range(0, held, PER_IDENTITY):
            token = stack.token(f"hw-waiter-{n // PER_IDENTITY}")
            answers = await asyncio.gather(*(http.post(f"{stack.base}/api/lp/open",
                                                       headers={"Authorization": f"Bearer {token}"})
                                             for _ in range(min(PER_IDENTITY, held - n))))
            opened += [a.json() for a in answers]
    return opened


async def run(stack: Stack, held: int, sends: int) -> dict[str, Any]:
    pid = stack.process.pid
    result: dict[str, Any] = {"rss_start": rss_mb(pid)}
    result["without"] = await traffic(stack, sends, "a")
    result["rss_baseline"] = rss_mb(pid)
    connections = await open_waits(stack, held)
    result["rss_opened"] = rss_mb(pid)
    for wave in (1, 2):  # the same connections wait twice: memory follows connections, not waits
        stop = asyncio.Event()
        limits = httpx.Limits(max_connections=held + 10, max_keepalive_connections=held + 10)
        async with httpx.AsyncClient(timeout=60, limits=limits) as http:
            async def hold(opened: dict[str, Any], http: httpx.AsyncClient = http, stop: asyncio.Event = stop) -> None:
                while not stop.is_set():
                    await http.post(opened["wait_url"], headers={"Authorization": f"Bearer {opened['wait_token']}"})

            waits = [asyncio.create_task(hold(c)) for c in connections]
            await asyncio.sleep(2)  # every wait is out and held (each is one request)
            if wave == 1:
                result["with"] = await traffic(stack, sends, "b")
            else:
                await asyncio.sleep(25)  # past one whole 20 s hold: every wait ended and was re-issued
            result[f"rss_wave{wave}"] = rss_mb(pid)
            stop.set()
            for task in waits:
                task.cancel()
            await asyncio.gather(*waits, return_exceptions=True)
        await asyncio.sleep(2)
    result["rss_after"] = rss_mb(pid)
    result["after"] = await traffic(stack, sends, "c")  # the connections still registered, no wait held
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--held", type=int, default=1000)
    parser.add_argument("--sends", type=int, default=60)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    stack = Stack({"PRESENCE_PULL_LIMIT": "0"})  # the REST probe calls more often than a page would
    try:
        result = asyncio.run(run(stack, args.held, args.sends))
    finally:
        stack.stop()
    (send_a, rest_a), (send_b, rest_b) = result["without"], result["with"]
    ratio = percentile(send_b, 50) / percentile(send_a, 50)
    body = "\n".join([
        f"`.venv/bin/python -m bench.held_waits --held {args.held} --sends {args.sends}` (one local stack; "
        f"{args.held} long-poll connections, {PER_IDENTITY} per identity, each holding its wait at the wait API "
        f"and re-issuing it at once; {machine()})",
        "",
        "| | send -> message p50 | p90 | `POST /presence` p50 | p90 |",
        "|---|---|---|---|---|",
        f"| without the waits | **{ms(percentile(send_a, 50))}** | {ms(percentile(send_a, 90))} | "
        f"{ms(percentile(rest_a, 50))} | {ms(percentile(rest_a, 90))} |",
        f"| beside {args.held} held waits | **{ms(percentile(send_b, 50))}** | {ms(percentile(send_b, 90))} | "
        f"{ms(percentile(rest_b, 50))} | {ms(percentile(rest_b, 90))} |",
        "",
        f"Send p50 with / without = **{ratio:.2f}x** (target: at most 1.5x). The stack's resident memory: "
        f"{result['rss_start']:.0f} MB at start, {result['rss_baseline']:.0f} MB after the baseline, "
        f"{result['rss_opened']:.0f} MB with the {args.held} connections opened (records, mailboxes, queues and "
        f"presence in moto), {result['rss_wave1']:.0f} MB with their waits held, "
        f"{result['rss_wave2']:.0f} MB after a second wave of waits on the same connections held past a whole "
        f"20 s hold (each wait ended and re-issued), {result['rss_after']:.0f} MB after the waits went: memory "
        f"follows the connections (they stay until their window ends), not the waits; a held wait is a "
        f"coroutine waiting on an event, with no thread and no moto call.",
    ])
    print(body)
    if not args.no_write:
        update_section("held-waits", body)


if __name__ == "__main__":
    main()
