"""Benchmark: a group message's AWS calls and fan-out time, on the local stack served in-process.

    .venv/bin/python -m bench.groups            # writes the `groups` section of docs/performance.md

The app is served in this process (moto, the local stack's gateway and SQS event source, as
bench/call_count.py does), so every AWS call the app makes is counted by a botocore hook on
its session, split by what made it: the `send` frame's invocation (the sender's path, msg:R to
msg:A) or a `group_fanout` job. Groups are written straight into moto in the storage layout
(helpers/GROUPS.md); the online members are real WebSocket connections, so "online" and every
push go through the same code as in production. Measured per message: the calls of both parts,
and the wall time from msg:R to the `message` frame of the last online member to get it.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
from moto import mock_aws
from websockets.asyncio.client import ClientConnection, connect

from bench.exchange import free_port
from bench.report import machine, percentile, update_section
from chalicelib.logic.fanout import GROUP_FANOUT
from chalicelib.principal import Identity
from chalicelib.wiring import Services, install_services
from devstack.connections import ConnectionRegistry
from devstack.embedded_aws import EmbeddedAws, fake_credentials, serialize_moto_calls
from devstack.invoker import LambdaInvoker
from devstack.local_secrets import provision_secrets
from devstack.server import HANDLER_THREADS, Endpoints, build_asgi, load_app
from devstack.sqs_source import SqsEventSource
from tests.harness import serve_in_thread

WAIT_SECONDS = 120
# Before issue 24 (one Query per online member for its connections), re-measured on 2026-12-07
# with moto's partition Query (devstack/moto_queries.py), --messages 3: members -> (fan-out calls,
# msg:R -> last `message` p50 ms, max ms). The 2026-11-27 run without that patch: 574 / 7,130 ms.
BEFORE = {100: ("23: 12 Query + 1 BatchGetItem + 10 PostToConnection", 126, 133),
          1000: ("230: 111 Query + 9 SendMessage + 10 BatchGetItem + 100 PostToConnection", 2435, 2810)}
_local = threading.local()  # what the invocation running in this thread is: "send", "fanout" or None


class Counter:
    """The app's AWS calls made by `send` invocations and by fan-out jobs, and the jobs run."""

    def __init__(self) -> None:
        self.lock = threading.Condition()
        self.calls: dict[str, list[str]] = {"send": [], "fanout": []}
        self.fanout_jobs = 0

    def hook(self, event_name: str, **_: Any) -> None:
        kind = getattr(_local, "kind", None)
        if kind is not None:
            with self.lock:
                self.calls[kind].append(".".join(event_name.split(".")[1:3]))

    def clear(self) -> None:
        with self.lock:
            self.calls = {"send": [], "fanout": []}
            self.fanout_jobs = 0

    def wait_for(self, condition: Callable[[], bool]) -> None:
        with self.lock:
            if not self.lock.wait_for(condition, WAIT_SECONDS):
                raise TimeoutError("the fan-out did not finish")


class Invoker(LambdaInvoker):
    def __init__(self, app: Any, counter: Counter) -> None:
        super().__init__(app)
        self._counter = counter

    def websocket(self, route_key: str, event: dict[str, Any]) -> int:
        try:
            action = json.loads(event.get("body") or "{}").get("action")
        except (ValueError, AttributeError):
            action = None
        _local.kind = "send" if route_key == "$default" and action == "send" else None
        try:
            return super().websocket(route_key, event)
        finally:
            _local.kind = None

    def sqs(self, config: Any, event: dict[str, Any]) -> list[str]:
        failed: list[str] = []
        for record in event["Records"]:  # one job at a time, so each is told apart
            fanout = json.loads(record["body"]).get("kind") == GROUP_FANOUT
            _local.kind = "fanout" if fanout else None
            try:
                failed += super().sqs(config, {**event, "Records": [record]})
            finally:
                _local.kind = None
            if fanout:
                with self._counter.lock:
                    self._counter.fanout_jobs += 1
                    self._counter.lock.notify_all()
        return failed


def write_group(env: dict[str, str], group: str, members: list[Identity]) -> None:
    """A group as group_create leaves it (helpers/GROUPS.md), written in batches."""
    dynamodb = boto3.resource("dynamodb")
    now = int(time.time() * 1000)
    owner = members[0]
    with dynamodb.Table(env["MESSAGES_TABLE"]).batch_writer() as batch:
        batch.put_item(Item={"pk": group, "sk": 0, "last_seq": 1, "last_time": now, "last_sender": owner.key,
                             "preview": "", "kind": "group", "title": "bench", "owner": owner.key,
                             "members_count": len(members), "created_at": now})
        batch.put_item(Item={"pk": group, "sk": 1, "sender": owner.key, "text": "", "time": now,
                             "client_id": "create", "event": {"type": "created", "title": "bench",
                                                              "members": [m.to_json() for m in members]}})
    with dynamodb.Table(env["MEMBERS_TABLE"]).batch_writer() as batch:
        for number, member in enumerate(members):
            role = "owner" if number == 0 else "member"
            batch.put_item(Item={"pk": member.key, "sk": "C#" + group, "group": True, "role": role,
                                 "joined_seq": 1, "acked_seq": 0, "read_seq": 1 if number == 0 else 0})
            batch.put_item(Item={"pk": "G#" + group, "sk": member.key, "role": role, "joined_seq": 1})


async def _frames_until(ws: ClientConnection, wanted: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    while True:
        frame = json.loads(await ws.recv())
        if wanted(frame):
            return frame


async def measure_group(services: Services, counter: Counter, host: str, env: dict[str, str], size: int,
                        online_share: float, messages: int) -> dict[str, Any]:
    tag = f"g{size}-{time.monotonic_ns() % 10**9}"
    sender = Identity("user", f"{tag}-sender")
    others = [Identity("user", f"{tag}-m{number:04d}") for number in range(size - 1)]
    group = f"g_bench{tag.replace('-', '')}".ljust(24, "0")[:24]
    write_group(env, group, [sender, *others])
    online = others[:: max(1, round(1 / online_share))] if online_share else []

    def url(identity: Identity) -> str:
        return f"ws://{host}/ws?token={services.authenticator.dev_login(identity.id).token}"

    alice = await connect(url(sender), max_size=None)
    receivers = [await connect(url(member), max_size=None) for member in online]
    send_calls: list[list[str]] = []
    fanout_calls: list[list[str]] = []
    walls: list[float] = []
    try:
        for seq in range(2, 2 + messages):
            counter.clear()
            waits = [asyncio.create_task(_frames_until(
                ws, lambda f, s=seq: f.get("type") == "message" and f.get("conversation_id") == group
                and f.get("seq") == s)) for ws in receivers]
            started = time.perf_counter()
            await alice.send(json.dumps({"action": "send", "id": f"{tag}-{seq}", "conversation_id": group,
                                         "text": f"message {seq}", "last_seq": seq - 1}))
            sent = await asyncio.wait_for(_frames_until(alice, lambda f: f.get("type") in ("sent", "error")),
                                          WAIT_SECONDS)
            assert sent["type"] == "sent" and sent["seq"] == seq, sent
            if waits:
                await asyncio.wait_for(asyncio.gather(*waits), WAIT_SECONDS)
            walls.append(time.perf_counter() - started)
            pages = math.ceil(size / 100)
            await asyncio.to_thread(counter.wait_for, lambda p=pages: counter.fanout_jobs >= p)
            with counter.lock:
                send_calls.append(list(counter.calls["send"]))
                fanout_calls.append(list(counter.calls["fanout"]))
    finally:
        for ws in [alice, *receivers]:
            await ws.close()
    return {"size": size, "online": len(online), "connections": len(online) + 1, "send": send_calls,
            "fanout": fanout_calls, "walls": walls}


def run(sizes: list[int], timed: list[int], messages: int) -> list[dict[str, Any]]:
    fake_credentials()
    serialize_moto_calls()
    with mock_aws(), tempfile.TemporaryDirectory() as local:
        env = {**EmbeddedAws(stage="bench").provision(), **provision_secrets("bench", Path(local))}
        port = free_port()
        full_env = {**env, "CALLBACK_URL": f"http://127.0.0.1:{port}", "WEBIM_DEV_LOGIN": "1", "WEBIM_LOCAL": "1"}
        counter = Counter()
        session = counted_session_for(counter)
        services = Services.from_env(full_env, session=session)
        install_services(services)
        executor = ThreadPoolExecutor(max_workers=HANDLER_THREADS)
        invoker = Invoker(load_app(), counter)
        queue_urls = {config.queue or "": full_env["JOBS_QUEUE_URL"] for config in invoker.sqs_handlers()}
        source = SqsEventSource(invoker, boto3.client("sqs"), executor, poll_interval=0.02, queue_urls=queue_urls)
        source.start()
        results = []
        try:
            asgi = build_asgi(invoker, ConnectionRegistry(), executor, frontend=None,
                              endpoints=Endpoints(callback_url=full_env["CALLBACK_URL"]))
            with serve_in_thread(asgi, port) as host:
                for size in sizes:
                    share = 0.1 if size in timed else 0.0
                    results.append(asyncio.run(measure_group(services, counter, host, env, size, share,
                                                             messages if size in timed else 2)))
        finally:
            source.stop()
            executor.shutdown(wait=True)
            install_services(None)
        return results


def counted_session_for(counter: Counter) -> boto3.session.Session:
    session = boto3.session.Session()
    session.events.register("before-call.*.*", counter.hook)
    return session


def _count(calls: list[str]) -> str:
    names = {"dynamodb.TransactWriteItems": "TransactWriteItems", "sqs.SendMessage": "SendMessage",
             "apigatewaymanagementapi.PostToConnection": "PostToConnection", "dynamodb.Query": "Query",
             "dynamodb.BatchGetItem": "BatchGetItem", "dynamodb.GetItem": "GetItem"}
    order = list(dict.fromkeys(calls))
    return " + ".join(f"{calls.count(c)} {names.get(c, c)}" for c in order)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=5, help="messages per timed group")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/performance.md")
    args = parser.parse_args()
    results = run([3, 100, 1000], [100, 1000], args.messages)
    paths = {r["size"]: r["send"] for r in results}
    same = all(path == paths[3][0] for r in results for path in r["send"])
    rows = []
    for r in results:
        if not r["online"]:
            continue
        m, k = r["size"], r["connections"]
        formula = 2 * math.ceil(m / 100) + (math.ceil(m / 100) - 1) + (k - 1)
        fanout = r["fanout"][-1]
        calls, p50, top = BEFORE.get(m, ("-", 0, 0))
        rows.append(f"| {m} | {r['online']} (+ the sender) | {k} | **{len(fanout)}**: {_count(fanout)} | {formula} "
                    f"| **{percentile(r['walls'], 50) * 1000:.0f} ms** | {max(r['walls']) * 1000:.0f} ms "
                    f"| {calls} | {p50} ms | {top} ms |")
    body = "\n".join([
        f"`.venv/bin/python -m bench.groups --messages {args.messages}` (the app served in-process on moto "
        f"with the local stack's gateway and SQS event source, as bench.call_count; calls counted by botocore "
        f"hooks on the app's session, split into the `send` invocation and the `group_fanout` jobs; online "
        f"members are real WebSocket connections; {machine()})",
        "",
        "Sender's path, msg:R to msg:A (the client's `last_seq` hint given, a warm container), per group size:",
        "",
        "| members | calls |",
        "|---|---|",
        *[f"| {size} | {len(path[-1])}: {_count(path[-1])} |" for size, path in paths.items()],
        "",
        f"Identical for 3, 100 and 1,000 members: **{'yes' if same else 'NO'}** (every message of every size "
        "made the same calls in the same order). The transaction is head + message + idempotency + the "
        "sender's own membership + the rate window, whatever the group's size.",
        "",
        "Fan-out of one message (10 % of the members online, one connection each; the sender online on its "
        "sending connection only, which is skipped), and msg:R to the last online member's `message`:",
        "",
        "| members M | online | connections K | fan-out calls measured | formula | msg:R -> last `message` p50 "
        "| max | before issue 24: calls | p50 | max |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        "Before issue 24 (the last three columns, the same benchmark on 2026-12-07 with moto's partition Query, "
        "before the change) each online member cost one Query for its connections; now the presence items carry "
        "the connections' routes, read with the page's presence in the same BatchGetItem. (The 2026-11-27 run, "
        "before moto's partition Query too: the same 23 and 230 calls, p50 574 ms and 7,130 ms.)",
        "",
        "Calls for one message to M members with K open "
        "connections in all: sender's path **TransactWriteItems + SendMessage + PostToConnection (`sent`)**, "
        "constant; fan-out **ceil(M/100) x (Query + BatchGetItem) + (ceil(M/100) - 1) x SendMessage + (K - 1) x "
        "PostToConnection**, nothing per member, plus one SQS receive/delete per job by the event source mapping "
        "(not the app's calls). The presence BatchGetItem is strongly consistent (a connection opened a moment "
        "ago gets the push): 1 read unit per member's presence item (under 4 KB with its routes), 100 per page. "
        "Offline members cost nothing beyond their share of the roster Query and the "
        "presence BatchGetItem (100 members each). A connection that ended without a close is pushed to once "
        "(410: the router forgets it and its route). Keeping the routes costs one UpdateItem of the presence "
        "item at each open and one at each close. Acks: a group `ack` is a GetItem (the head, eventually "
        "consistent) + an UpdateItem, batched by clients to at most 1,000/K + duration/T per member for a "
        "1,000-message burst (K = 20, T = 2 s, protocol.md §13.5). Receipts (`receipts`): 2 calls per 100 "
        "members (a roster Query page + a BatchGetItem of their memberships), asked when a user opens a "
        "message's details, not per message. Membership changes: `group_create` / `group_add` first read the "
        "`wrote` marks of the identities they name (one consistent BatchGetItem of at most 20 1:1 memberships, "
        "projected to `pk, sk, wrote`: at most 10 read units; protocol.md §13.2, nobody is added by a stranger), "
        "then write their one transaction.",
    ])
    print(body)
    if not args.no_write:
        update_section("groups", body)


if __name__ == "__main__":
    main()
