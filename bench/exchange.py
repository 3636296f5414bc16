"""Benchmark: N client pairs exchanging messages over the local stack with the Python client.

    make bench                         # or: .venv/bin/python -m bench.exchange --pairs 10 --messages 20

Starts `python -m devstack` on a free port (as `make run` does), connects 2N clients over real
WebSockets, and has each pair's first client send M messages to the second (one at a time per
conversation, as the client keeps typed order). Measures, per message, msg:R -> msg:N (the
receiver's `message` frame) and msg:R -> ack:N (the sender's `delivered`), and complete
exchanges per second: from the first send, once every pair is connected (logging in and
connecting 2N clients is not exchanging), to the last ack:N. Results go to docs/performance.md.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.report import machine, percentile, update_section
from webim_client import Client, WebSocketTransport

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Stack:
    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        full_env.update(env or {})
        # a file, not a pipe: an unread pipe fills up and blocks the stack's logging
        self.log = tempfile.NamedTemporaryFile("w+", suffix=".log")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen([sys.executable, "-m", "devstack", "--port", str(self.port)], cwd=ROOT,
                                        env=full_env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while "ready at" not in Path(self.log.name).read_text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the local stack did not start:\n" + Path(self.log.name).read_text())
            time.sleep(0.1)

    def token(self, name: str) -> str:
        response = httpx.post(f"{self.base}/api/identity/dev-login", json={"name": name})
        response.raise_for_status()
        return str(response.json()["token"])

    def ws_url(self, name: str) -> str:
        return f"ws://127.0.0.1:{self.port}/ws?token={self.token(name)}"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=20)
        self.log.close()


async def run_pair(stack: Stack, index: int, messages: int, to_n: list[float], to_ack_n: list[float],
                   ready: asyncio.Barrier) -> None:
    try:
        alice = Client(WebSocketTransport(stack.ws_url(f"bench-a{index}")), ack_timeout=10)
        bob = Client(WebSocketTransport(stack.ws_url(f"bench-b{index}")), ack_timeout=10)
        await alice.start(pull=False)
        await bob.start(pull=False)
    except BaseException:
        await ready.abort()  # nobody waits for a pair that will never be ready
        raise
    await ready.wait()  # the clock starts when every pair is connected
    try:
        for i in range(messages):
            started = time.perf_counter()
            sent = await alice.send(f"message {i}", to={"kind": "user", "id": f"bench-b{index}"})
            await asyncio.wait_for(bob.inbox.get(), 30)
            to_n.append(time.perf_counter() - started)
            await asyncio.wait_for(sent.delivered, 30)
            to_ack_n.append(time.perf_counter() - started)
    finally:
        await alice.close()
        await bob.close()


async def run(stack: Stack, pairs: int, messages: int) -> tuple[list[float], list[float], float]:
    to_n: list[float] = []
    to_ack_n: list[float] = []
    ready = asyncio.Barrier(pairs + 1)
    pairs_done = asyncio.gather(*(run_pair(stack, i, messages, to_n, to_ack_n, ready) for i in range(pairs)))
    await ready.wait()
    started = time.perf_counter()
    await pairs_done
    return to_n, to_ack_n, time.perf_counter() - started


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def measure(pairs: int, messages: int) -> list[str]:
    stack = Stack()
    try:
        to_n, to_ack_n, wall = asyncio.run(run(stack, pairs, messages))
    finally:
        stack.stop()
    total = len(to_ack_n)
    return [
        f"| {pairs} x {messages} | {total / wall:.1f} /s | {ms(percentile(to_n, 50))} | {ms(percentile(to_n, 99))} "
        f"| {ms(percentile(to_ack_n, 50))} | {ms(percentile(to_ack_n, 99))} |"
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, nargs="+", default=[1, 10], help="one run per value")
    parser.add_argument("--messages", type=int, default=20)
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/performance.md")
    args = parser.parse_args()
    rows = [row for pairs in args.pairs for row in measure(pairs, args.messages)]
    body = "\n".join([
        f"`.venv/bin/python -m bench.exchange --pairs {' '.join(map(str, args.pairs))} --messages {args.messages}` "
        f"(each pair's sender sends its messages one after another; all pairs at once, timed from the first "
        f"send once all are connected; a fresh local stack per run; clients and stack on one machine: "
        f"{machine()})",
        "",
        "| pairs x messages | exchanges/s (msg:R .. ack:N) | msg:R -> msg:N p50 | p99 | msg:R -> ack:N p50 | p99 |",
        "|---|---|---|---|---|---|",
        *rows,
    ])
    print(body)
    if not args.no_write:
        update_section("exchange", body)


if __name__ == "__main__":
    main()
