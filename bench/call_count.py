"""Counts the AWS calls of one complete exchange, msg:R through ack:N plus the retransmit
check, with botocore event hooks on the app's session, over real WebSockets to the real app
served in-process (moto, the local stack's gateway and SQS event source).

Each measurement is isolated, so that it holds on a busy machine: its own jobs queue (the
presence checks a previous measurement left behind never reach it); only the calls made while
handling a frame or the exchange's ack check count (a presence job landing meanwhile does not);
and it ends when those invocations have ended, not after a pause.

It also counts what each measured invocation writes to its log (CloudWatch Logs on AWS): the
app's JSON lines and EMF metric lines, as written to stdout by the invocation's own thread, at
the deployed log level, plus Lambda's own START / END / REPORT lines (a stated constant).

    .venv/bin/python -m bench.call_count      # prints the calls, and with 2,000 other connections
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from moto import mock_aws

from bench.exchange import free_port
from bench.report import update_section
from chalicelib import observability
from chalicelib.logic.messaging import ACK_CHECK
from chalicelib.principal import Identity
from chalicelib.storage.connections import ConnectionRecord, ConnectionsTable
from chalicelib.wiring import Services, install_services
from devstack.connections import ConnectionRegistry
from devstack.embedded_aws import EmbeddedAws, fake_credentials, serialize_moto_calls
from devstack.invoker import LambdaInvoker
from devstack.local_secrets import provision_secrets
from devstack.server import HANDLER_THREADS, Endpoints, build_asgi, load_app
from devstack.sqs_source import SqsEventSource
from tests.harness import serve_in_thread
from tests.messaging_fixtures import CallLog, counted_session
from webim_client import Client, WebSocketTransport

CALLBACK = "apigatewaymanagementapi.PostToConnection"
WAIT_SECONDS = 60  # how long a step may take before the measurement fails (never a pause)
_invocation = threading.local()  # what the handler running in this thread is doing
ROOT = Path(__file__).resolve().parent.parent

# -- CloudWatch Logs: what an invocation writes to its log -----------------------------------------
# Lambda's own lines per invocation, in the text log format (neither .chalice/config.json nor
# infra/template.yaml sets a LoggingConfig, so not Lambda's JSON format), with active X-Ray
# tracing ("xray": true in .chalice/config.json), which appends the XRAY line to REPORT's event.
# Samples at typical widths: START 70 B, END 51 B, REPORT + XRAY 233 B. A cold start adds
# "Init Duration: 312.45 ms\t" (25 B) to REPORT and an INIT_START line (~120 B): not counted
# (cold starts are a small share of invocations at a steady load).
PLATFORM_LINES = (
    "START RequestId: 8f5c1b2e-3a4d-4e6f-9a7b-0c1d2e3f4a5b Version: $LATEST",
    "END RequestId: 8f5c1b2e-3a4d-4e6f-9a7b-0c1d2e3f4a5b",
    "REPORT RequestId: 8f5c1b2e-3a4d-4e6f-9a7b-0c1d2e3f4a5b\tDuration: 23.45 ms\tBilled Duration: 24 ms\t"
    "Memory Size: 256 MB\tMax Memory Used: 92 MB\t\nXRAY TraceId: 1-5e1b4151-5ac6c58f5b5daa6532e4e5c7\t"
    "SegmentId: 6a8b6b2d6b7c3f1e\tSampled: true\t",
)
# Per log event, CloudWatch Logs counts 26 bytes beside the message (PutLogEvents' size rule):
# counted here too, so the ingested bytes are an upper bound if billing counts messages only.
EVENT_OVERHEAD_BYTES = 26
PLATFORM_LOG_BYTES = sum(len(line.encode()) + EVENT_OVERHEAD_BYTES for line in PLATFORM_LINES)
# Lambda sets _X_AMZN_TRACE_ID under active tracing; Powertools adds it to every line as xray_trace_id
TRACE_HEADER = "Root=1-5e1b4151-5ac6c58f5b5daa6532e4e5c7;Parent=6a8b6b2d6b7c3f1e;Sampled=1"


def deployed_log_level(stage: str = "prod", config: Path = ROOT / ".chalice" / "config.json") -> str:
    """The app logger's level on AWS: POWERTOOLS_LOG_LEVEL (or LOG_LEVEL) of the stage's
    environment, else Powertools' default, INFO (no AWS_LAMBDA_LOG_LEVEL: no LoggingConfig)."""
    doc = json.loads(config.read_text())
    env = {**doc.get("environment_variables", {}), **doc["stages"][stage].get("environment_variables", {})}
    return str(env.get("POWERTOOLS_LOG_LEVEL") or env.get("LOG_LEVEL") or "INFO").upper()


def log_event_bytes(text: str) -> int:
    """The bytes CloudWatch Logs ingests for `text` written to stdout: one event per line."""
    lines = text.count("\n")
    return len(text.encode()) - lines + EVENT_OVERHEAD_BYTES * lines


class LogCounter:
    """sys.stdout while counting: forwards every write, and keeps what a measured invocation's
    thread writes (Powertools' JSON lines and the EMF lines both go to stdout, the log on Lambda)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self._texts: dict[int, list[str]] = defaultdict(list)

    def write(self, text: str) -> int:
        if getattr(_invocation, "measured", False):
            with self._lock:
                self._texts[_invocation.number].append(text)
        return int(self._stream.write(text))

    def flush(self) -> None:
        self._stream.flush()

    def __getattr__(self, name: str) -> Any:  # isatty, encoding, fileno: the real stream's
        return getattr(self._stream, name)

    def text(self, invocation: int) -> str:
        with self._lock:
            return "".join(self._texts.get(invocation, []))

    def log_bytes(self, invocation: int) -> int:
        """What the invocation's log gets: its own lines and Lambda's platform lines."""
        return log_event_bytes(self.text(invocation)) + PLATFORM_LOG_BYTES


@contextmanager
def counting_logs() -> Iterator[LogCounter]:
    """Count what measured invocations write to their log, as on AWS: the deployed log level,
    EMF metrics on (the local stack turns them off), the X-Ray trace id set; all restored after."""
    app_logger = logging.getLogger(observability.SERVICE)
    level = app_logger.level
    saved = {name: os.environ.pop(name) for name in ("WEBIM_LOCAL", "POWERTOOLS_METRICS_DISABLED")
             if name in os.environ}
    trace = os.environ.get("_X_AMZN_TRACE_ID")
    os.environ["_X_AMZN_TRACE_ID"] = TRACE_HEADER
    app_logger.setLevel(deployed_log_level())
    local = bool(getattr(observability, "_local", False))  # a local stack in this process turns them off
    observability.run_locally(False)
    observability.discard_metrics()  # counted outside an invocation earlier: not this measurement's
    counter, stdout = LogCounter(sys.stdout), sys.stdout
    sys.stdout = counter
    try:
        yield counter
    finally:
        sys.stdout = stdout
        observability.run_locally(local)
        app_logger.setLevel(level)
        os.environ.update(saved)
        if trace is None:
            os.environ.pop("_X_AMZN_TRACE_ID", None)
        else:
            os.environ["_X_AMZN_TRACE_ID"] = trace


@dataclass
class CallRecord:
    """One AWS call as it went over the wire: what the cost model (bench/cost.py) prices."""

    call: str
    invocation: int
    request: Any  # the JSON body (DynamoDB, SQS, a pushed frame)
    size: int = 0  # the body's bytes (a pushed frame is billed per 32 KB)
    response: Any = None  # the parsed answer
    items: dict[str, dict[str, Any]] = field(default_factory=dict)  # written key -> the item after the exchange


class MeasuredCalls(CallLog):
    """The AWS calls made while handling a frame or an ack check, and no others."""

    def __init__(self) -> None:
        super().__init__()
        self._invocations: list[int] = []  # which invocation made each call
        self.records: list[CallRecord] = []
        self.invocations: dict[int, str] = {}  # invocation number -> "websocket" or "sqs"

    def hook(self, event_name: str, **kwargs: Any) -> None:
        if getattr(_invocation, "measured", False):
            self._invocations.append(_invocation.number)
            super().hook(event_name, **kwargs)
            body = (kwargs.get("params") or {}).get("body", b"")
            raw = body.encode() if isinstance(body, str) else bytes(body or b"")
            self.records.append(CallRecord(self.calls[-1], _invocation.number, _decode(raw), len(raw)))
            _invocation.last = self.records[-1]

    def answered(self, event_name: str, parsed: Any = None, **_: Any) -> None:
        """after-call: the answer belongs to the call this thread made last."""
        if getattr(_invocation, "measured", False) and getattr(_invocation, "last", None) is not None:
            _invocation.last.response = parsed
            _invocation.last = None

    def clear(self) -> None:
        self.calls.clear()
        self._invocations.clear()
        self.records.clear()
        self.invocations.clear()

    def records_in_order(self) -> list[CallRecord]:
        return sorted(self.records, key=lambda record: record.invocation)

    def in_order(self) -> list[str]:
        """Invocation by invocation, in the order they started (the calls of two invocations
        running at once, as bob's ack:R beside alice's msg:R, interleave differently each run)."""
        by_start = sorted(zip(self._invocations, self.calls, strict=True), key=lambda pair: pair[0])
        return [call for _, call in by_start]


class MeasuringInvoker(LambdaInvoker):
    """Marks the invocations whose calls count, knows when they have ended, and holds each ack
    check until the exchange's frames are done (else a slow ack could race its 1 s check).

    Runs one invocation at a time, as a Lambda container does: Powertools' metric set is one per
    process, and two invocations running at once here would print their metrics as one EMF line."""

    def __init__(self, app: Any) -> None:
        super().__init__(app)
        self._one_at_a_time = threading.Lock()
        self._changed = threading.Condition()
        self.frames_in_flight = 0
        self.checks_done = 0
        self.checks_open = threading.Event()
        self._started = 0
        self.kinds: dict[int, str] = {}  # measured invocation -> "websocket" / "sqs"
        self.seconds: dict[int, float] = {}  # measured invocation -> handler wall time here

    def _start(self, measured: bool, kind: str) -> None:
        with self._changed:
            self._started += 1
            _invocation.number = self._started
            if measured:
                self.kinds[self._started] = kind
        _invocation.measured = measured
        _invocation.began = time.perf_counter()

    def _end(self) -> None:
        if _invocation.measured:
            self.seconds[_invocation.number] = time.perf_counter() - _invocation.began
        _invocation.measured = False

    def websocket(self, route_key: str, event: dict[str, Any]) -> int:
        with self._changed:
            self.frames_in_flight += 1
        try:
            with self._one_at_a_time:
                self._start(True, "websocket")
                try:
                    return super().websocket(route_key, event)
                finally:
                    self._end()
        finally:
            with self._changed:
                self.frames_in_flight -= 1
                self._changed.notify_all()

    def sqs(self, config: Any, event: dict[str, Any]) -> list[str]:
        failed: list[str] = []
        for record in event["Records"]:  # one job at a time, so each is told apart
            check = json.loads(record["body"]).get("kind") == ACK_CHECK
            if check and not self.checks_open.wait(WAIT_SECONDS):
                return [r["messageId"] for r in event["Records"]]
            with self._one_at_a_time:
                self._start(check, "sqs")
                try:
                    failed += super().sqs(config, {**event, "Records": [record]})
                finally:
                    self._end()
            if check:
                with self._changed:
                    self.checks_done += 1
                    self._changed.notify_all()
        return failed

    async def until(self, condition: Callable[[], bool]) -> None:
        def wait() -> None:
            with self._changed:
                if not self._changed.wait_for(condition, WAIT_SECONDS):
                    raise TimeoutError("the exchange did not finish")

        await asyncio.to_thread(wait)


@dataclass
class Measured:
    """One exchange's calls with what they carried, and its invocations (bench/cost.py)."""

    records: list[CallRecord]
    kinds: dict[int, str]  # invocation -> "websocket" / "sqs"
    seconds: dict[int, float]  # invocation -> handler wall time on the local stack
    # invocation -> the bytes its log ingests (its lines, Lambda's platform lines; LogCounter)
    log_bytes: dict[int, int] = field(default_factory=dict)
    logs: dict[int, str] = field(default_factory=dict)  # invocation -> what it wrote to stdout


@dataclass
class Exchange:
    calls: list[str] = field(default_factory=list)  # a cold container: nothing cached
    until_msg_n: list[str] = field(default_factory=list)
    warm_calls: list[str] = field(default_factory=list)  # the next exchange, same container
    # the first exchange creates the conversation; the steady one is a later message of it, in a
    # cold container (nothing cached): what most messages cost, conservatively
    first: Measured | None = None
    steady: Measured | None = None


def _store_other_connections(env: dict[str, str], count: int) -> None:
    table = ConnectionsTable(boto3.resource("dynamodb").Table(env["CONNECTIONS_TABLE"]))
    now = time.time()
    for i in range(count):
        table.put(ConnectionRecord(f"other-{i}", Identity("user", f"other-{i}"), "http://127.0.0.1:1",
                                   now, int(now) + 3600))


def measure_exchange(env: dict[str, str], other_connections: int, text: str = "hello") -> Exchange:
    """One exchange between two fresh users; `env` is a provisioned moto account."""
    _store_other_connections(env, other_connections)
    port = free_port()
    full_env = {**env, "CALLBACK_URL": f"http://127.0.0.1:{port}", "ACK_TIMEOUT_SECONDS": "1",
                "WEBIM_DEV_LOGIN": "1", "WEBIM_LOCAL": "1"}
    suffix = f"{other_connections}-{time.monotonic_ns()}"
    # a queue of its own: jobs an earlier measurement left (delayed presence checks) stay there
    full_env["JOBS_QUEUE_URL"] = boto3.client("sqs").create_queue(
        QueueName=f"webim-call-count-{suffix}", Attributes={"VisibilityTimeout": "180"})["QueueUrl"]
    log = MeasuredCalls()
    session = counted_session(log)
    session.events.register("after-call.*.*", log.answered)
    services = Services.from_env(full_env, session=session)
    install_services(services)
    executor = ThreadPoolExecutor(max_workers=HANDLER_THREADS)
    invoker = MeasuringInvoker(load_app())
    queue_urls = {config.queue or "": full_env["JOBS_QUEUE_URL"] for config in invoker.sqs_handlers()}
    source = SqsEventSource(invoker, boto3.client("sqs"), executor, poll_interval=0.02, queue_urls=queue_urls)
    with counting_logs() as counter:
        source.start()
        try:
            asgi = build_asgi(invoker, ConnectionRegistry(), executor, frontend=None,
                              endpoints=Endpoints(callback_url=full_env["CALLBACK_URL"]))
            with serve_in_thread(asgi, port) as host:
                return asyncio.run(_exchange(services, invoker, host, suffix, log, text, counter))
        finally:
            source.stop()
            executor.shutdown(wait=True)
            install_services(None)


async def _exchange(services: Services, invoker: MeasuringInvoker, host: str, suffix: str,
                    log: MeasuredCalls, text: str, counter: LogCounter) -> Exchange:
    def url(name: str) -> str:
        return f"ws://{host}/ws?token={services.authenticator.dev_login(name).token}"

    alice = Client(WebSocketTransport(url(f"alice-{suffix}")))
    bob = Client(WebSocketTransport(url(f"bob-{suffix}")))
    await alice.start(pull=False)
    await bob.start(pull=False)
    await invoker.until(lambda: invoker.frames_in_flight == 0)  # the pings of start() are done
    pair = _Pair(services, invoker, log, alice, bob, {"kind": "user", "id": f"bob-{suffix}"})
    cold = await _one(pair, cold=True, text=text)
    first = await asyncio.to_thread(_measured, log, invoker, counter)
    warm = await _one(pair, cold=False, text=text)
    await _one(pair, cold=True, text=text)
    steady = await asyncio.to_thread(_measured, log, invoker, counter)
    await alice.close()
    await bob.close()
    return Exchange(cold[0], cold[1], warm[0], first, steady)


def _measured(log: MeasuredCalls, invoker: MeasuringInvoker, counter: LogCounter) -> Measured:
    """The exchange's records, each write with the items it wrote as they are now (read without
    counting: an UpdateItem's request does not say how big the item it leaves is)."""
    client = boto3.client("dynamodb")
    records = log.records_in_order()
    for record in records:
        for table, key in _written_keys(record):
            item = client.get_item(TableName=table, Key=key).get("Item")
            record.items[json.dumps([table, key], sort_keys=True)] = item or {}
    numbers = {record.invocation for record in records}
    return Measured(records, {n: invoker.kinds[n] for n in numbers},
                    {n: invoker.seconds.get(n, 0.0) for n in numbers},
                    {n: counter.log_bytes(n) for n in numbers}, {n: counter.text(n) for n in numbers})


def _written_keys(record: CallRecord) -> list[tuple[str, dict[str, Any]]]:
    body = record.request if isinstance(record.request, dict) else {}
    if record.call == "dynamodb.TransactWriteItems":
        found = []
        for action in body["TransactItems"]:
            ((_, spec),) = action.items()
            key = spec.get("Key") or {k: spec["Item"][k] for k in ("pk", "sk") if k in spec.get("Item", {})}
            found.append((spec["TableName"], key))
        return found
    if record.call in ("dynamodb.PutItem", "dynamodb.UpdateItem", "dynamodb.DeleteItem"):
        key = body.get("Key") or {k: body["Item"][k] for k in ("pk", "sk")}
        return [(body["TableName"], key)]
    return []


def _decode(raw: bytes) -> Any:
    """A request body as JSON when it is JSON, else its bytes."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw


@dataclass(frozen=True)
class _Pair:
    """Two clients on a measured stack: who sends, who receives, and what counts the calls."""

    services: Services
    invoker: MeasuringInvoker
    log: MeasuredCalls
    alice: Client
    bob: Client
    to_bob: dict[str, str]


async def _one(pair: _Pair, cold: bool, text: str = "hello") -> tuple[list[str], list[str]]:
    invoker, log = pair.invoker, pair.log
    if cold:
        pair.services.router.cache.clear()  # as if each frame landed in a new container
    invoker.checks_open.clear()
    checks_before = invoker.checks_done
    log.clear()
    sent = await pair.alice.send(text, to=pair.to_bob)
    await asyncio.wait_for(pair.bob.inbox.get(), WAIT_SECONDS)
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
        9: "ack:N: the sender's connections", 10: "ack:N: push",
        11: "ack:N: note that the sender was told (`told_seq`: a failure before it is retold)",
        12: "check (SQS handler): acked and told? yes, stop (an eventually consistent read)",
    }  # no ack:A: the clients' acks are quiet (protocol.md §6.3)
    rows = [f"| {i} | `{call}` | {packets.get(i, '')} |" for i, call in enumerate(small.calls, 1)]
    steady = small.steady
    assert steady is not None
    stored = sum(log_event_bytes(line + "\n") for text in steady.logs.values() for line in text.splitlines()
                 if '"event":"message_stored"' in line)
    body = "\n".join([
        "`.venv/bin/python -m bench.call_count` (botocore `before-call` hooks on the app's session; the "
        "callback API calls included; SQS polling and deletes by the event source mapping excluded)",
        "",
        f"- one complete exchange, msg:R through ack:N and the retransmit check: **{len(small.calls)} calls** "
        f"in a cold container (**{len(large.calls)}** with 2,000 other users' connections stored), "
        f"**{len(small.warm_calls)}** in a warm one (the connection records are cached per container)",
        f"- between msg:R and msg:N: **{len(small.until_msg_n)} calls** cold, {len(small.until_msg_n) - 1} warm",
        f"- what the exchange writes to its logs (CloudWatch Logs; its own lines at the deployed level "
        f"{deployed_log_level()} and Lambda's START / END / REPORT, {PLATFORM_LOG_BYTES} B per invocation): "
        f"**{sum(steady.log_bytes.values()):,} B** in {len(steady.log_bytes)} invocations, of which the "
        f"`message_stored` line {stored:,} B (priced in \"What one message costs\")",
        "",
        "| # | call | for |",
        "|---|---|---|",
        *rows,
    ])
    print(body)
    update_section("calls", body)


if __name__ == "__main__":
    main()

