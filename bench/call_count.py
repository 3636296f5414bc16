"""Counts the AWS calls of one complete exchange, msg:R through ack:N plus the retransmit
check, with botocore event hooks on the app's session, over real WebSockets to the real app
served in-process (moto, the local stack's gateway and SQS event source).

    .venv/bin/python -m bench.call_count      # prints the calls, and with 2,000 other connections
"""
from __future__ import annotations

import asyncio
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import boto3
from moto import mock_aws

from bench.exchange import free_port
from bench.report import update_section
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
    os.environ.update(full_env)
    log = CallLog()
    services = Services.from_env(full_env, session=counted_session(log))
    install_services(services)
    executor = ThreadPoolExecutor(max_workers=HANDLER_THREADS)
    app = load_app()
    queue_urls = {config.queue: env["ACK_TIMEOUT_QUEUE_URL"] for config in LambdaInvoker(app).sqs_handlers()}
    invoker = LambdaInvoker(app)
    source = SqsEventSource(invoker, boto3.client("sqs"), executor, poll_interval=0.02, queue_urls=queue_urls)
    source.start()
    suffix = f"{other_connections}-{time.monotonic_ns()}"
    try:
        with serve_in_thread(build_asgi(invoker, ConnectionRegistry(), executor, frontend=None), port) as host:
            return asyncio.run(_exchange(services, host, suffix, log))
    finally:
        source.stop()
        executor.shutdown(wait=True)
        install_services(None)


async def _exchange(services: Services, host: str, suffix: str, log: CallLog) -> Exchange:
    def url(name: str) -> str:
        return f"ws://{host}/ws?token={services.authenticator.dev_login(name).token}"

    alice = Client(WebSocketTransport(url(f"alice-{suffix}")))
    bob = Client(WebSocketTransport(url(f"bob-{suffix}")))
    await alice.start(pull=False)
    await bob.start(pull=False)
    await asyncio.sleep(0.2)
    to_bob = {"kind": "user", "id": f"bob-{suffix}"}
    cold = await _one(services, log, alice, bob, to_bob, cold=True)
    warm = await _one(services, log, alice, bob, to_bob, cold=False)
    await alice.close()
    await bob.close()
    return Exchange(cold[0], cold[1], warm[0])


async def _one(services: Services, log: CallLog, alice: Client, bob: Client, to_bob: dict[str, str],
               cold: bool) -> tuple[list[str], list[str]]:
    if cold:
        services.router.cache.clear()  # as if each frame landed in a new container
    log.calls.clear()
    sent = await alice.send("hello", to=to_bob)
    await asyncio.wait_for(bob.inbox.get(), 10)
    until_msg_n = list(log.calls[: log.calls.index(CALLBACK) + 1])
    await asyncio.wait_for(sent.delivered, 10)
    pushes = len(log.calls)
    for _ in range(200):  # the retransmit check runs after the 1 s ack timeout (and finds the ack)
        if "dynamodb.GetItem" in log.calls[pushes:]:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)  # and nothing else follows
    return list(log.calls), until_msg_n


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

