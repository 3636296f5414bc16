"""Counts the AWS calls of one complete exchange, msg:R through ack:N plus the retransmit
check, with botocore event hooks on the app's session, over real WebSockets to the real app
served in-process (moto, the local stack's gateway and SQS event source).

Each measurement is isolated, so that it holds on a busy machine: its own jobs queue (the
presence checks a previous measurement left behind never reach it); only the calls made while
handling a frame or the exchange's ack check count (a presence job landing meanwhile does not);
and it ends when those invocations have ended, not after a pause.

    .venv/bin/python -m bench.call_count      # prints the calls, and with 2,000 other connections
"""
from __future__ import annotations

import asyncio
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from moto import mock_aws

from bench.exchange import free_port
from bench.report import update_section
from chalicelib.logic.messaging import ACK_CHECK
from chalicelib.principal import Identity
from chalicelib.storage.connections import ConnectionRecord, ConnectionsTable
from chalicelib.wiring import Services, install_services
from devstack.connections import ConnectionRegistry
from devstack.embedded_aws import EmbeddedAws, fake_credentials, serialize_moto_calls
from devstack.invoker import LambdaInvoker
from devstack.local_secrets import provision_secrets
from devstack.server import HANDLER_THREADS, build_asgi, load_app
from devstack.sqs_source import SqsEventSource
from tests.harness import serve_in_thread
from tests.messaging_fixtures import CallLog, counted_session
from webim_client import Client, WebSocketTransport

CALLBACK = "apigatewaymanagementapi.PostToConnection"
WAIT_SECONDS = 60  # how long a step may take before the measurement fails (never a pause)
_invocation = threading.local()  # what the handler running in this thread is doing


class MeasuredCalls(CallLog):
    """The AWS calls made while handling a frame or an ack check, and no others."""

    def __init__(self) -> None:
        super().__init__()
        self._invocations: list[int] = []  # which invocation made each call

    def hook(self, event_name: str, **kwargs: Any) -> None:
        if getattr(_invocation, "measured", False):
            self._invocations.append(_invocation.number)
            super().hook(event_name, **kwargs)

    def clear(self) -> None:
        self.calls.clear()
        self._invocations.clear()

    def in_order(self) -> list[str]:
        """Invocation by invocation, in the order they started (the calls of two invocations
        running at once, as bob's ack:R beside alice's msg:R, interleave differently each run)."""
        by_start = sorted(zip(self._invocations, self.calls, strict=True), key=lambda pair: pair[0])
        return [call for _, call in by_start]


class MeasuringInvoker(LambdaInvoker):
    """Marks the invocations whose calls count, knows when they have ended, and holds each ack
    check until the exchange's frames are done (else a slow ack could race its 1 s check)."""

    def __init__(self, app: Any) -> None:
        super().__init__(app)
        self._changed = threading.Condition()
        self.frames_in_flight = 0
        self.checks_done = 0
        self.checks_open = threading.Event()
        self._started = 0

    def _start(self, measured: bool) -> None:
        with self._changed:
            self._started += 1
            _invocation.number = self._started
        _invocation.measured = measured

    def websocket(self, route_key: str, event: dict[str, Any]) -> int:
        with self._changed:
            self.frames_in_flight += 1
        self._start(True)
        try:
            return super().websocket(route_key, event)
        finally:
            _invocation.measured = False
            with self._changed:
                self.frames_in_flight -= 1
                self._changed.notify_all()

    def sqs(self, config: Any, event: dict[str, Any]) -> bool:
        ok = True
        for record in event["Records"]:  # one job at a time, so each is told apart
            check = json.loads(record["body"]).get("kind") == ACK_CHECK
            if check and not self.checks_open.wait(WAIT_SECONDS):
                return False
            self._start(check)
            try:
                ok = super().sqs(config, {**event, "Records": [record]}) and ok
            finally:
                _invocation.measured = False
            if check:
                with self._changed:
                    self.checks_done += 1
                    self._changed.notify_all()
        return ok

    async def until(self, condition: Callable[[], bool]) -> None:
        def wait() -> None:
            with self._changed:
                if not self._changed.wait_for(condition, WAIT_SECONDS):
                    raise TimeoutError("the exchange did not finish")

        await asyncio.to_thread(wait)


@dataclass
class Exchange:
    calls: list[str] = field(default_factory=list)  # a cold container: nothing cached
    until_msg_n: list[str] = field(default_factory=list)
    warm_calls: list[str] = field(default_factory=list)  # the next exchange, same container


def _store_other_connections(env: dict[str, str], count: int) -> None:
    table = ConnectionsTable(boto3.resource("dynamodb").Table(env["CONNECTIONS_TABLE"]))
    now = time.time()
    for i in range(count):
        table.put(ConnectionRecord(f"other-{i}", Identity("user", f"other-{i}"), "http://127.0.0.1:1",
                                   now, int(now) + 3600))


def measure_exchange(env: dict[str, str], other_connections: int) -> Exchange:
    """One exchange between two fresh users; `env` is a provisioned moto account."""
    _store_other_connections(env, other_connections)
    port = free_port()
    full_env = {**env, "CALLBACK_URL": f"http://127.0.0.1:{port}", "ACK_TIMEOUT_SECONDS": "1",
                "WEBIM_DEV_LOGIN": "1", "WEBIM_LOCAL": "1"}
    suffix = f"{other_connections}-{time.monotonic_ns()}"
    # a queue of its own: jobs an earlier measurement left (delayed presence checks) stay there
    full_env["ACK_TIMEOUT_QUEUE_URL"] = boto3.client("sqs").create_queue(
        QueueName=f"webim-call-count-{suffix}", Attributes={"VisibilityTimeout": "180"})["QueueUrl"]
    os.environ.update(full_env)
    log = MeasuredCalls()
    services = Services.from_env(full_env, session=counted_session(log))
    install_services(services)
    executor = ThreadPoolExecutor(max_workers=HANDLER_THREADS)
    invoker = MeasuringInvoker(load_app())
    queue_urls = {config.queue or "": full_env["ACK_TIMEOUT_QUEUE_URL"] for config in invoker.sqs_handlers()}
    source = SqsEventSource(invoker, boto3.client("sqs"), executor, poll_interval=0.02, queue_urls=queue_urls)
    source.start()
    try:
        with serve_in_thread(build_asgi(invoker, ConnectionRegistry(), executor, frontend=None), port) as host:
            return asyncio.run(_exchange(services, invoker, host, suffix, log))
    finally:
        source.stop()
        executor.shutdown(wait=True)
        install_services(None)


async def _exchange(services: Services, invoker: MeasuringInvoker, host: str, suffix: str,
                    log: MeasuredCalls) -> Exchange:
    def url(name: str) -> str:
        return f"ws://{host}/ws?token={services.authenticator.dev_login(name).token}"

    alice = Client(WebSocketTransport(url(f"alice-{suffix}")))
    bob = Client(WebSocketTransport(url(f"bob-{suffix}")))
    await alice.start(pull=False)
    await bob.start(pull=False)
    await invoker.until(lambda: invoker.frames_in_flight == 0)  # the pings of start() are done
    to_bob = {"kind": "user", "id": f"bob-{suffix}"}
    cold = await _one(services, invoker, log, alice, bob, to_bob, cold=True)
    warm = await _one(services, invoker, log, alice, bob, to_bob, cold=False)
    await alice.close()
    await bob.close()
    return Exchange(cold[0], cold[1], warm[0])


async def _one(services: Services, invoker: MeasuringInvoker, log: MeasuredCalls, alice: Client, bob: Client,
               to_bob: dict[str, str], cold: bool) -> tuple[list[str], list[str]]:
    if cold:
        services.router.cache.clear()  # as if each frame landed in a new container
    invoker.checks_open.clear()
    checks_before = invoker.checks_done
    log.clear()
    sent = await alice.send("hello", to=to_bob)
    await asyncio.wait_for(bob.inbox.get(), WAIT_SECONDS)
    so_far = log.in_order()
    until_msg_n = so_far[: so_far.index(CALLBACK) + 1]
    await asyncio.wait_for(sent.delivered, WAIT_SECONDS)
    await invoker.until(lambda: invoker.frames_in_flight == 0)  # bob's ack, ack:A included
    invoker.checks_open.set()  # the retransmit check (after the 1 s ack timeout) finds the ack
    await invoker.until(lambda: invoker.checks_done > checks_before)
    return log.in_order(), until_msg_n


def main() -> None:
    fake_credentials()
    serialize_moto_calls()
    with mock_aws(), tempfile.TemporaryDirectory() as local:
        env = {**EmbeddedAws(stage="bench").provision(), **provision_secrets("bench", Path(local))}
        small = measure_exchange(env, 10)
        large = measure_exchange(env, 2000)
    packets = {
        1: "msg:R: who is this connection", 2: "msg:R: store (seq, message, idempotency, both cursors)",
        3: "msg:N: the receiver's connections", 4: "msg:N: push", 5: "ack-timeout check: schedule",
        6: "msg:A: push", 7: "ack:R: who is this connection", 8: "ack:R: move the acked cursor (returns the peer)",
        9: "ack:N: the sender's connections", 10: "ack:N: push", 11: "ack:A: push",
        12: "check (SQS handler): acked? yes, stop",
    }
    rows = [f"| {i} | `{call}` | {packets.get(i, '')} |" for i, call in enumerate(small.calls, 1)]
    body = "\n".join([
        "`.venv/bin/python -m bench.call_count` (botocore `before-call` hooks on the app's session; the "
        "callback API calls included; SQS polling and deletes by the event source mapping excluded)",
        "",
        f"- one complete exchange, msg:R through ack:N and the retransmit check: **{len(small.calls)} calls** "
        f"in a cold container (**{len(large.calls)}** with 2,000 other users' connections stored), "
        f"**{len(small.warm_calls)}** in a warm one (the connection records are cached per container)",
        f"- between msg:R and msg:N: **{len(small.until_msg_n)} calls** cold, {len(small.until_msg_n) - 1} warm",
        "",
        "| # | call | for |",
        "|---|---|---|",
        *rows,
    ])
    print(body)
    update_section("calls", body)


if __name__ == "__main__":
    main()

