"""What one 1:1 message costs on AWS, from the calls the call-count benchmark measures.

Nothing here is assumed about the calls: `bench.call_count.measure_exchange` runs a real
exchange (msg:R .. ack:N and the retransmit check) through the app on the local stack and
records every AWS call with its request and answer; this module prices them:

- DynamoDB: write units from the sizes of the items each write leaves (read back after the
  exchange: an UpdateItem's request does not say how big the item is), 1 KB steps, x2 inside
  TransactWriteItems; index writes from the GSIs and projections in infra/template.yaml (a
  write that changes an index key attribute = delete + put in the index; one that changes only
  a projected attribute = one index write; index writes are not doubled by a transaction);
  read units from the sizes of the items answered, 4 KB steps, half for eventually consistent
  reads (a GSI Query is always eventually consistent).
- API Gateway WebSocket: one message per frame in (each WebSocket invocation is one client
  frame) and per PostToConnection out, in 32 KB steps.
- SQS: SendMessage in 64 KB steps, plus the event source mapping's ReceiveMessage and
  DeleteMessageBatch per batch (`--batch`, what a batch holds on average).
- Lambda: one request per WebSocket invocation and per SQS batch; billed duration from a
  stated per-call latency on AWS (below), at the memory and architecture in .chalice/config.json.
  The handler time measured here (moto in-process) is printed beside it for reference.
- CloudWatch Logs: the bytes each measured invocation writes to its log (bench/call_count.py's
  LogCounter: the app's JSON lines and EMF metric lines at the deployed log level, 26 B per line,
  and Lambda's START / END / REPORT lines, once per SQS batch), ingested at $0.50/GB (GB = 1e9 B)
  and stored for the log groups' retention (LogRetentionDays in infra/template.yaml) at
  $0.03/GB-month, compressed to LOGS_COMPRESSED of the raw bytes (an assumption: CloudWatch
  stores and bills compressed data; JSON log lines compress well). Invocations measured without
  their logs (a hand-built `Measured`) are priced without logs.

Prices: AWS list prices, us-east-1, on-demand, as published on the AWS pricing pages in 2025
(aws.amazon.com/lambda|api-gateway|dynamodb|sqs/pricing; checked for issue 12, 2026-11-27):

    .venv/bin/python -m bench.cost              # prints; rewrites docs/performance.md sections
    .venv/bin/python -m bench.cost --baseline   # also records these numbers as the "before"
"""
from __future__ import annotations

import argparse
import json
import math
import re
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml
from boto3.dynamodb.types import TypeSerializer

from bench.call_count import PLATFORM_LOG_BYTES, CallRecord, LogCounter, Measured, counting_logs, measure_exchange
from bench.report import update_section
from chalicelib.settings import Settings
from infra.scale_model import DAY, SEED, Scale, peak, per_day, prod_settings

ROOT = Path(__file__).resolve().parent.parent
BASELINE = Path(__file__).resolve().parent / "cost_baseline.json"

# -- prices (USD) -------------------------------------------------------------------------------
LAMBDA_GB_S = {"x86_64": 0.0000166667, "arm64": 0.0000133334}
LAMBDA_REQUEST = 0.20 / 1e6
WS_MESSAGE = 1.00 / 1e6  # per 32 KB; $0.80 beyond 1 billion a month
WS_CONNECTION_MINUTE = 0.25 / 1e6
WRU = 0.625 / 1e6
RRU = 0.125 / 1e6
SQS_REQUEST = 0.40 / 1e6  # per 64 KB
REST_REQUEST = 3.50 / 1e6  # API Gateway REST API, first 333 million a month (the price used throughout)
HTTP_TIER = (300e6, 1.00, 0.90)  # API Gateway HTTP API: first 300 million requests a month, then $0.90/M
HTTP_REQUEST = HTTP_TIER[1] / 1e6
LOGS_INGEST_GB = 0.50  # CloudWatch Logs, Standard log class, per GB ingested
LOGS_STORAGE_GB_MONTH = 0.03  # per GB-month archived (compressed)
LOGS_COMPRESSED = 0.15  # stored bytes per raw byte ingested: an assumption (gzip of JSON lines)
# provisioned capacity, for the lever at scale (not used by the per-message figures)
WCU_HOUR = 0.00065
RCU_HOUR = 0.00013

# -- stated assumptions about AWS (not measurable here) -----------------------------------------
# Billed Lambda duration: the calls' round trips inside a region plus the Python around them.
CALL_MS = {"dynamodb.TransactWriteItems": 12, "apigatewaymanagementapi.PostToConnection": 10,
           "sqs.SendMessage": 8}
OTHER_CALL_MS = 5  # GetItem, Query, UpdateItem, PutItem, BatchGetItem
PYTHON_MS = 5  # parsing, signing, dispatch per invocation (warm)
AUTHORIZER = (128, "arm64", 5)  # the wait route's Lambda authorizer: MB, architecture, ms (a token check, no call)
# What the EMF line of a run that counted pushes only is (a presence change's fan-out job), as
# the measured ack's line: not measured for that job, stated; 26 B for the event, namespace of prod.
EMF_PUSHES_LINE = ('{"_aws":{"Timestamp":1796661416314,"CloudWatchMetrics":[{"Namespace":"WebIM/prod",'
                   '"Dimensions":[["service"]],"Metrics":[{"Name":"Pushes","Unit":"Count"}]}]},'
                   '"service":"webim","Pushes":[1.0,1.0,1.0]}')
EMF_PUSHES_BYTES = len(EMF_PUSHES_LINE) + 26


def log_retention_days(template: Path = ROOT / "infra" / "template.yaml") -> int:
    """The log groups' retention: the default of the template's LogRetentionDays parameter."""
    match = re.search(r"^  LogRetentionDays:\n(?:    .*\n)*?    Default: (\d+)", template.read_text(), re.MULTILINE)
    if match is None:
        raise ValueError("infra/template.yaml declares no LogRetentionDays default")
    return int(match.group(1))


LOG_RETENTION_DAYS = log_retention_days()
# Steady state: each day's bytes stay for the retention, so a GB ingested is stored
# retention / (365 / 12) GB-months, compressed.
LOGS_STORED_GB = LOGS_COMPRESSED * LOGS_STORAGE_GB_MONTH * LOG_RETENTION_DAYS / (365 / 12)
LOGS_GB = LOGS_INGEST_GB + LOGS_STORED_GB  # all a GB of log lines costs, ingested and kept


# -- DynamoDB sizes -----------------------------------------------------------------------------
_TYPES = {"S", "N", "B", "SS", "NS", "BS", "M", "L", "NULL", "BOOL"}


def _typed(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and next(iter(value)) in _TYPES


def _number_size(text: str) -> int:
    digits = text.lstrip("-").replace(".", "").lstrip("0") or "0"
    return math.ceil(len(digits) / 2) + 1


_TYPED_SIZE: dict[str, Any] = {
    "S": lambda v: len(v.encode()),
    "N": lambda v: _number_size(str(v)),
    "B": lambda v: len(v) if isinstance(v, bytes) else len(v) * 3 // 4,
    "SS": lambda v: sum(len(x.encode()) for x in v),
    "NS": lambda v: sum(_number_size(str(x)) for x in v),
    "BS": lambda v: sum(len(x) for x in v),
    "NULL": lambda v: 1,
    "BOOL": lambda v: 1,
    "L": lambda v: 3 + sum(1 + value_size(x) for x in v),
    "M": lambda v: 3 + sum(1 + len(k.encode()) + value_size(x) for k, x in v.items()),
}


def value_size(value: Any) -> int:
    """DynamoDB's size of one attribute value (typed `{"S": ...}` or plain Python)."""
    typed = value if _typed(value) else TypeSerializer().serialize(value)
    ((kind, inner),) = typed.items()
    return int(_TYPED_SIZE[kind](inner))


def item_size(item: dict[str, Any]) -> int:
    return sum(len(name.encode()) + value_size(value) for name, value in item.items())


@dataclass(frozen=True)
class Index:
    table: str  # the table name's suffix ("members")
    keys: tuple[str, ...]  # the index's key attributes
    projection: str  # ALL, KEYS_ONLY, INCLUDE
    include: tuple[str, ...] = ()


def indexes(template: Path = ROOT / "infra" / "template.yaml") -> list[Index]:
    """The GSIs of infra/template.yaml (CloudFormation tags read as plain values)."""

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: loader.construct_scalar(node)
                                 if isinstance(node, yaml.ScalarNode) else None)
    doc = yaml.load(template.read_text(), Loader=Loader)
    found = []
    for resource in doc["Resources"].values():
        if resource.get("Type") != "AWS::DynamoDB::Table":
            continue
        props = resource["Properties"]
        suffix = str(props["TableName"]).rsplit("-", 1)[-1]
        for gsi in props.get("GlobalSecondaryIndexes", []):
            projection = gsi["Projection"]
            found.append(Index(suffix, tuple(k["AttributeName"] for k in gsi["KeySchema"]),
                               projection["ProjectionType"], tuple(projection.get("NonKeyAttributes", []))))
    return found


_CLAUSE = re.compile(r"\b(SET|ADD|REMOVE|DELETE)\b")


def changed_attributes(update_expression: str, names: dict[str, str]) -> set[str]:
    """The attributes an UpdateExpression writes (the left-hand sides)."""
    changed = set()
    parts = _CLAUSE.split(update_expression)
    for clause, body in zip(parts[1::2], parts[2::2], strict=True):
        depth, current, pieces = 0, "", []
        for char in body:  # split on top-level commas only (if_not_exists(a, :b))
            depth += char == "("
            depth -= char == ")"
            if char == "," and depth == 0:
                pieces.append(current)
                current = ""
            else:
                current += char
        pieces.append(current)
        for raw in pieces:
            piece = raw.strip()
            if not piece:
                continue
            target = piece.split("=")[0] if clause == "SET" else piece.split()[0]
            target = target.strip()
            changed.add(names.get(target, target))
    return changed


# -- pricing ------------------------------------------------------------------------------------
@dataclass
class Bill:
    """Units and dollars of one exchange, by service, with a line per call for the tables."""

    units: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    lines: list[str] = field(default_factory=list)

    def add(self, unit: str, amount: float) -> None:
        self.units[unit] += amount

    def dollars(self) -> dict[str, float]:
        u = self.units
        return {
            "API Gateway WebSocket messages": u["ws_messages"] * WS_MESSAGE,
            "API Gateway REST requests": u["rest_requests"] * REST_REQUEST,
            "API Gateway HTTP API requests": u["http_requests"] * HTTP_REQUEST,
            "DynamoDB writes": u["wru"] * WRU,
            "DynamoDB reads": u["rru"] * RRU,
            "Lambda requests": u["lambda_requests"] * LAMBDA_REQUEST,
            "Lambda duration": u["lambda_dollars_duration"],
            "SQS": u["sqs_requests"] * SQS_REQUEST,
            "CloudWatch Logs ingestion": u["log_bytes"] / 1e9 * LOGS_INGEST_GB,
            "CloudWatch Logs storage": u["log_bytes"] / 1e9 * LOGS_STORED_GB,
        }

    def total(self) -> float:
        return sum(self.dollars().values())


@dataclass(frozen=True)
class Functions:
    """Memory (MB) and architecture of the WebSocket, SQS and REST functions, from .chalice/config.json."""

    websocket: tuple[int, str]
    sqs: tuple[int, str]
    rest: tuple[int, str] = (128, "arm64")


def functions(stage: str = "prod", config: Path = ROOT / ".chalice" / "config.json") -> Functions:
    doc = json.loads(config.read_text())

    def of(name: str) -> tuple[int, str]:
        found: dict[str, Any] = {}
        for scope in (doc, doc["stages"][stage], doc["stages"][stage].get("lambda_functions", {}).get(name, {})):
            found.update({k: v for k, v in scope.items() if k in ("lambda_memory_size", "lambda_architecture")})
        return int(found.get("lambda_memory_size", 128)), str(found.get("lambda_architecture", "x86_64"))

    return Functions(of("websocket_message"), of("on_job"), of("api_handler"))


def price(measured: Measured, existing: bool, batch: float, fns: Functions,
          index_list: list[Index] | None = None) -> Bill:
    """The bill of one exchange. `existing`: the items it updates existed before (a later message
    of a conversation); `batch`: ack checks per SQS receive on average."""
    index_list = indexes() if index_list is None else index_list
    bill = Bill()
    by_invocation: dict[int, list[CallRecord]] = defaultdict(list)
    for record in measured.records:
        by_invocation[record.invocation].append(record)
    for number, records in sorted(by_invocation.items()):
        kind = measured.kinds[number]
        if kind in ("websocket", "route"):
            bill.add("ws_messages", 1 if kind == "websocket" else 0)  # the client frame; $connect is no message
            bill.add("lambda_requests", 1)
            memory, arch = fns.websocket
        elif kind == "rest":  # a REST API request, run by the REST function
            bill.add("rest_requests", 1)
            bill.add("lambda_requests", 1)
            memory, arch = fns.rest
        else:
            bill.add("lambda_requests", 1 / batch)
            bill.add("sqs_requests", 2 / batch)  # the event source's ReceiveMessage + DeleteMessageBatch
            memory, arch = fns.sqs
        ms = PYTHON_MS + sum(CALL_MS.get(r.call, OTHER_CALL_MS) for r in records)
        share = 1 / batch if kind == "sqs" else 1
        bill.add("lambda_ms", ms * share)
        bill.add("lambda_dollars_duration", memory / 1024 * ms / 1000 * LAMBDA_GB_S[arch] * share)
        logged = ""
        if number in measured.log_bytes:  # its own lines in full; Lambda's platform lines once per batch
            own = measured.log_bytes[number] - PLATFORM_LOG_BYTES
            bill.add("log_bytes", own + PLATFORM_LOG_BYTES * share)
            logged = f", log {own} B + {PLATFORM_LOG_BYTES * share:g} B of Lambda's lines"
        bill.lines.append(f"{kind} invocation: {ms} ms billed (assumed AWS latency), "
                          f"{measured.seconds.get(number, 0) * 1000:.0f} ms here{logged}")
        for record in records:
            _price_call(bill, record, existing, index_list)
    return bill


def _price_call(bill: Bill, record: CallRecord, existing: bool, index_list: list[Index]) -> None:
    pricer = _PRICERS.get(record.call)
    if pricer is not None:
        body = record.request if isinstance(record.request, dict) else {}
        pricer(bill, record, body, _Writes(existing, index_list))


@dataclass(frozen=True)
class _Writes:
    """What pricing a write needs beyond the call: whether its item existed, the table's indexes."""

    existing: bool
    index_list: list[Index]


def _price_post(bill: Bill, record: CallRecord, body: dict[str, Any], writes: _Writes) -> None:
    n = max(1, math.ceil(record.size / 32768))
    bill.add("ws_messages", n)
    bill.lines.append(f"{record.call}: {record.size} B frame -> {n} message")


def _price_send(bill: Bill, record: CallRecord, body: dict[str, Any], writes: _Writes) -> None:
    size = len(str(body.get("MessageBody", "")).encode())
    bill.add("sqs_requests", max(1, math.ceil(size / 65536)))
    bill.lines.append(f"{record.call}: {size} B -> 1 request")


def _price_read(bill: Bill, record: CallRecord, body: dict[str, Any], writes: _Writes) -> None:
    answer = record.response or {}
    if record.call == "dynamodb.BatchGetItem":
        items = [i for found in (answer.get("Responses") or {}).values() for i in found]
        units = sum(math.ceil(max(1, item_size(i)) / 4096) * 0.5 for i in items) or 0.5
        consistent = False
    else:
        items = answer.get("Items") or ([answer["Item"]] if answer.get("Item") else [])
        consistent = bool(body.get("ConsistentRead")) and "IndexName" not in body
        size = sum(item_size(i) for i in items)
        units = max(1, math.ceil(size / 4096)) * (1 if consistent else 0.5)
    bill.add("rru", units)
    bill.lines.append(f"{record.call}: {len(items)} item(s), {sum(item_size(i) for i in items)} B, "
                      f"{'strongly' if consistent else 'eventually'} consistent -> {units:g} RRU")


def _price_batch_write(bill: Bill, record: CallRecord, body: dict[str, Any], writes: _Writes) -> None:
    # each put by its item's size; each delete at 1 WRU (the items deleted here are under 1 KB)
    for requests in body.get("RequestItems", {}).values():
        for request in requests:
            put = request.get("PutRequest")
            units = max(1, math.ceil(item_size(put["Item"]) / 1024)) if put else 1
            bill.add("wru", units)
            bill.lines.append(f"{record.call} {'Put' if put else 'Delete'}: {units} WRU")


def _price_single_write(bill: Bill, record: CallRecord, body: dict[str, Any], writes: _Writes) -> None:
    _price_write(bill, record.call, body, record, factor=1, existing=writes.existing, index_list=writes.index_list)


def _price_transaction(bill: Bill, record: CallRecord, body: dict[str, Any], writes: _Writes) -> None:
    for action in body["TransactItems"]:
        ((verb, spec),) = action.items()
        _price_write(bill, f"{record.call} {verb}", spec, record, factor=2, existing=writes.existing,
                     index_list=writes.index_list)


_PRICERS: dict[str, Callable[[Bill, CallRecord, dict[str, Any], _Writes], None]] = {
    "apigatewaymanagementapi.PostToConnection": _price_post,
    "sqs.SendMessage": _price_send,
    "dynamodb.GetItem": _price_read,
    "dynamodb.Query": _price_read,
    "dynamodb.BatchGetItem": _price_read,
    "dynamodb.BatchWriteItem": _price_batch_write,
    "dynamodb.PutItem": _price_single_write,
    "dynamodb.UpdateItem": _price_single_write,
    "dynamodb.DeleteItem": _price_single_write,
    "dynamodb.TransactWriteItems": _price_transaction,
}


def _price_write(bill: Bill, label: str, spec: dict[str, Any], record: CallRecord, factor: int,
                 existing: bool, index_list: list[Index]) -> None:
    table = spec["TableName"]
    key = spec.get("Key") or {k: spec["Item"][k] for k in ("pk", "sk")}
    item = record.items.get(json.dumps([table, key], sort_keys=True)) or spec.get("Item") or key
    size = item_size(item)
    units = factor * max(1, math.ceil(size / 1024))
    bill.add("wru", units)
    where = f"{table.rsplit('-', 1)[-1]} {_plain(key.get('pk'))[:12]}"
    bill.lines.append(f"{label} ({where}): {size} B -> {units} WRU")
    if "UpdateExpression" in spec:
        changed = changed_attributes(spec["UpdateExpression"], spec.get("ExpressionAttributeNames") or {})
        created = not existing
    else:
        changed, created = set(item), True
    for index in index_list:
        if not table.endswith("-" + index.table) or not all(k in item for k in index.keys):
            continue  # sparse: an item without the index's keys is not in it
        table_keys = ("pk", "sk")
        projected = {k: v for k, v in item.items() if index.projection == "ALL" or k in index.keys
                     or k in table_keys or k in index.include}
        each = max(1, math.ceil(item_size(projected) / 1024))
        if changed & set(index.keys):
            writes = 1 if created else 2  # a new index entry, or delete + put
        elif changed & set(projected):
            writes = 1
        else:
            writes = 0
        if writes:
            bill.add("wru", writes * each)
            bill.lines.append(f"  + index {index.keys}: {writes} x {each} WRU ({index.projection})")


def _plain(value: Any) -> str:
    return str(next(iter(value.values()))) if _typed(value) else str(value)


# -- the report ---------------------------------------------------------------------------------
def per_million(bill: Bill) -> dict[str, float]:
    return {name: dollars * 1e6 for name, dollars in bill.dollars().items()}


def measure(text: str) -> tuple[Measured, dict[str, Measured]]:
    from moto import mock_aws

    from devstack import moto_transactions
    from devstack.embedded_aws import EmbeddedAws, fake_credentials, serialize_moto_calls
    from devstack.local_secrets import provision_secrets

    fake_credentials()
    serialize_moto_calls()
    moto_transactions.install()
    with mock_aws(), tempfile.TemporaryDirectory() as local:
        env = {**EmbeddedAws(stage="bench").provision(), **provision_secrets("bench", Path(local))}
        exchange = measure_exchange(env, 10, text=text)
        with counting_logs() as counter:
            life = measure_connection_life(env, counter)
    assert exchange.steady is not None
    return exchange.steady, life


HEARTBEAT = "long-poll heartbeat (lp/poll)"
PRESENCE_MOVES = ("connect ($connect)", "keepalive ping")  # each moves the user's presence deadline


def measure_heartbeat(services: Any, log: Any, number: int, counter: LogCounter | None = None) -> Measured:
    """The calls of a long-poll heartbeat: an idle connection's `lp/poll` (nothing to release,
    nothing pending), measured as `measure_connection_life` measures a ping."""
    from chalicelib.logic.frames import Release
    from chalicelib.principal import Identity

    carol = Identity("user", "life-carol")
    opened = services.long_poll.open(carol)
    services.long_poll.poll(carol, opened["connection_id"], Release(0, 1))  # the first poll after open
    services.router.cache.clear()
    log.clear()
    later_second()  # the previous poll was a heartbeat interval ago
    _as_invocation(number, lambda: services.long_poll.poll(carol, opened["connection_id"], Release(0, 1)),
                   identity=carol.key)
    return _measured_phase(log, number, "rest", counter)


def later_second() -> None:
    """Wait for the wall clock's next second. Presence deadlines are whole seconds: a connect,
    ping or heartbeat in the same second as the one before it moves no deadline and queues no
    settle check (NotExtended), while on AWS they are minutes apart and each one does."""
    start = int(time.time())
    while int(time.time()) == start:
        time.sleep(0.02)


def _as_invocation(number: int, run: Callable[[], Any], connection_id: str | None = None,
                   identity: str | None = None) -> None:
    """`run` as measured invocation `number`, inside the app's per-invocation log context (as
    app.py's middleware opens it: a request id, the connection; the identity the handler binds),
    so that its lines and its EMF line are what Lambda would log."""
    from bench import call_count
    from chalicelib import observability

    observability.discard_metrics()  # counted by the set-up, outside any invocation
    call_count._invocation.measured, call_count._invocation.number = True, number
    try:
        with observability.invocation(connection_id=connection_id, request_id=str(uuid.uuid4())):
            observability.bind(identity=identity)
            run()
    finally:
        call_count._invocation.measured = False


def _measured_phase(log: Any, number: int, kind: str, counter: LogCounter | None) -> Measured:
    if counter is None:
        return Measured(log.records_in_order(), {number: kind}, {})
    return Measured(log.records_in_order(), {number: kind}, {}, {number: counter.log_bytes(number)},
                    {number: counter.text(number)})


def measure_connection_life(env: dict[str, str], counter: LogCounter | None = None) -> dict[str, Measured]:
    """The calls of a WebSocket connection's life apart from messages: open, one keepalive ping,
    the reconnect's pull (`sync`, `conversations`), close; for a user with one conversation; and
    a long-poll connection's heartbeat. With a `counter` (bench.call_count.counting_logs), what
    each writes to its log too."""
    import json as _json

    from bench import call_count
    from chalicelib.principal import Identity
    from chalicelib.wiring import Services
    from tests.messaging_fixtures import LoggedSender, counted_session

    log = call_count.MeasuredCalls()
    session = counted_session(log)
    session.events.register("after-call.*.*", log.answered)
    services = Services.from_env({**env, "HANDSHAKE_GRACE_SECONDS": "0"}, session=session, sender=LoggedSender(log))
    alice, bob = Identity("user", "life-alice"), Identity("user", "life-bob")
    services.sessions.open("life-b", bob, "http://recorded")
    services.sessions.open("life-a0", alice, "http://recorded")
    services.sessions.receive("life-a0", _json.dumps({"action": "send", "id": "life-1", "text": "hi",
                                                      "to": bob.to_json()}))
    phases = {
        "connect ($connect)": lambda: services.sessions.open("life-a", alice, "http://recorded"),
        "keepalive ping": lambda: services.sessions.receive("life-a", '{"action":"ping","id":"p"}'),
        "pull on connect (sync)": lambda: services.sessions.receive("life-a", '{"action":"sync","id":"s"}'),
        "conversation list on connect": lambda: services.sessions.receive(
            "life-a", '{"action":"conversations","id":"c"}'),
        "close ($disconnect)": lambda: services.sessions.close("life-a"),
    }
    measured = {}
    for number, (name, run) in enumerate(phases.items(), 1):
        services.router.cache.clear()
        log.clear()
        if name in PRESENCE_MOVES:
            later_second()  # a reconnect, a ping: minutes after the connection before it
        # the connect handler binds the identity it authenticated; the others learn it from the record
        _as_invocation(number, run, connection_id="life-a", identity=alice.key if name.startswith("connect") else None)
        kind = "route" if name.startswith(("connect", "close")) else "websocket"
        measured[name] = _measured_phase(log, number, kind, counter)
    measured[HEARTBEAT] = measure_heartbeat(services, log, len(phases) + 1, counter)
    return measured


TYPICAL_TEXT = "x" * 100  # a typical chat message: 100 characters (items stay under 1 KB either way)


# -- storage and retention (issue 26 point 5) ---------------------------------------------------
DYNAMODB_GB_MONTH = 0.25  # DynamoDB Standard table class, per GB-month (the first 25 GB free: ignored)
S3_GB_MONTH = 0.023  # S3 Standard, first 50 TB a month
ITEM_OVERHEAD_BYTES = 100  # DynamoDB's indexing overhead per stored item
# stated assumptions (the seed states no photo volume): a share of messages carry a photo of this size
PHOTO_SHARE = 0.05
PHOTO_BYTES = 300 * 1024


@dataclass(frozen=True)
class Stored:
    """What messages and their photos hold after `days` of `scale`'s traffic (kept: every day
    adds as much; with a retention of `days`, the steady state)."""

    days: int
    items: float
    dynamodb_gb: float
    photos_gb: float

    @property
    def dollars_per_day(self) -> float:
        return (self.dynamodb_gb * DYNAMODB_GB_MONTH + self.photos_gb * S3_GB_MONTH) * 12 / 365


def message_item_bytes(text: str = TYPICAL_TEXT, retention: bool = True) -> int:
    """One stored message item as storage/messages.py writes it (a 1:1 conversation id, a user
    sender, `expires_at` under a retention), with DynamoDB's per-item overhead."""
    item: dict[str, Any] = {"pk": "d_" + "x" * 24, "sk": 2, "sender": "user:alice", "text": text,
                            "time": 1_800_000_000_000, "client_id": "c-1"}
    if retention:
        item["expires_at"] = 1_800_000_000
    return item_size(item) + ITEM_OVERHEAD_BYTES


def stored_after(days: int, scale: Scale = SEED) -> Stored:
    day = per_day(scale)
    messages = day.messages + day.group_messages  # a group message is one item, whatever the group's size
    items = messages * days
    return Stored(days, items, items * message_item_bytes() / 1e9, items * PHOTO_SHARE * PHOTO_BYTES / 1e9)


def storage_section(retentions: tuple[int, ...] = (30, 90, 365), kept_years: int = 3, scale: Scale = SEED) -> str:
    """What a retention changes at the seed's scale: storage stops growing at `days` of traffic."""
    rows = [f"| kept (0, the default), after {years} year{'s' if years > 1 else ''} | "
            + _storage_cells(stored_after(365 * years, scale)) + " and growing |" for years in range(1, kept_years + 1)]
    rows += [f"| {days} days | " + _storage_cells(stored_after(days, scale)) + " steady |" for days in retentions]
    day = per_day(scale)
    return "\n".join([
        f"`.venv/bin/python -m bench.cost --storage` ({day.messages:,.0f} 1:1 and {day.group_messages:,.0f} group "
        f"messages a day; a message item of {message_item_bytes()} B with DynamoDB's overhead, a 100-character "
        f"text; {PHOTO_SHARE:.0%} of messages with a {PHOTO_BYTES // 1024} KB photo, an assumption; "
        f"${DYNAMODB_GB_MONTH}/GB-month DynamoDB, ${S3_GB_MONTH}/GB-month S3)",
        "",
        "| MESSAGE_RETENTION_DAYS | message items | DynamoDB | photos (S3) | storage per day |",
        "|---|---|---|---|---|",
        *rows,
    ])


def _storage_cells(stored: Stored) -> str:
    return (f"{stored.items / 1e9:,.2f} billion | {stored.dynamodb_gb:,.0f} GB | {stored.photos_gb / 1e3:,.1f} TB | "
            f"${stored.dollars_per_day:,.2f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--baseline", action="store_true", help="record these numbers as the 'before'")
    parser.add_argument("--batch", type=float, default=1.0, help="ack checks per SQS receive (1 = worst case)")
    parser.add_argument("--storage", action="store_true", help="only the storage and retention table")
    args = parser.parse_args()
    if args.storage:
        body = storage_section()
        print(body)
        update_section("retention-storage", body)
        return
    steady, life = measure(TYPICAL_TEXT)
    bill = price(steady, existing=True, batch=args.batch, fns=functions())
    after = per_million(bill)
    calls = [r.call for r in steady.records]
    units = {k: round(v, 3) for k, v in bill.units.items()}
    if args.baseline:
        BASELINE.write_text(json.dumps({"per_million": after, "calls": calls, "units": units}, indent=1) + "\n")
    before = json.loads(BASELINE.read_text()) if BASELINE.exists() else {"per_million": after, "calls": calls,
                                                                         "units": units}
    print("\n".join(bill.lines))
    body = _cost_section(before, {"per_million": after, "calls": calls, "units": units}, bill, args.batch)
    body += "\n\n" + levers(price(steady, existing=True, batch=10, fns=functions()))
    print(body)
    update_section("cost-per-message", body)
    fns = functions()
    life_bills = {name: price(m, existing=True, batch=10, fns=fns) for name, m in life.items()}
    print("\n".join(life_bills[HEARTBEAT].lines))
    reconnect_hour = 60 / SEED.reconnect_minutes * _bill_of(reconnect_units(life_bills))
    hours = user_hour_section(idle_ws_hour(life_bills["keepalive ping"]), idle_lp_hour(life_bills[HEARTBEAT]),
                              reconnect_hour)
    print(hours)
    update_section("user-hour", hours)
    scale = at_scale(price(steady, existing=True, batch=10, fns=fns), life_bills,
                     price(receiver_side(steady), existing=True, batch=10, fns=fns))
    print(scale)
    update_section("cost-at-scale", scale)


def _cost_section(before: dict[str, Any], after: dict[str, Any], bill: Bill, batch: float) -> str:
    rows = []
    for name in after["per_million"]:
        b, a = before["per_million"].get(name, 0.0), after["per_million"][name]
        if not (a or b):
            continue  # a service a message does not use (REST, HTTP API)
        was = f"${b:.2f}" if name in before["per_million"] else "not priced"
        rows.append(f"| {name} | {was} | ${a:.2f} |")
    tb, ta = sum(before["per_million"].values()), sum(after["per_million"].values())
    unit_rows = [f"| {name} | {_g(before['units'], name)} | {after['units'].get(name, 0):g} |"
                 for name in ("ws_messages", "wru", "rru", "lambda_requests", "lambda_ms", "sqs_requests",
                              "log_bytes")]
    return "\n".join([
        f"`.venv/bin/python -m bench.cost` (the calls of a later message of a conversation, cold "
        f"containers, a {len(TYPICAL_TEXT)}-character text, priced as described in bench/cost.py; "
        f"SQS event source at {batch:g} check(s) per receive). Before: the code at the start of issue 12 "
        f"point 6 ({len(before['calls'])} calls); after: this tree ({len(after['calls'])} calls).",
        "",
        "| per million 1:1 messages | before | after |",
        "|---|---|---|",
        *rows,
        f"| **total** | **${tb:.2f}** | **${ta:.2f}** |",
        "",
        "| units per message | before | after |",
        "|---|---|---|",
        *unit_rows,
        "",
        "Per call (after):",
        "",
        "```",
        *bill.lines,
        "```",
    ])



# -- being online: an idle user-hour (issue 23 point 4) -----------------------------------------
# The assumptions are infra/scale_model.py's: the deploy sizes the prod stage from the same ones.
def keepalive_units(scale: Scale) -> dict[str, float]:
    """The MOCK route: the frame in (and its answer, if the route answers); no Lambda, no DynamoDB."""
    return {"ws_messages": float(scale.keepalive_messages)}
WAIT_UNITS = {"http_requests": 1.0, "sqs_requests": 1.0}  # a held poll: one HTTP API request, one ReceiveMessage
# a queued presence check (batches of 10); its run logs no line at INFO, so its log is a tenth of
# Lambda's platform lines (stated, not measured: the check runs outside the measured invocations)
JOB_SHARE = {"lambda_requests": 0.1, "sqs_requests": 0.2, "rru": 1.0, "log_bytes": 0.1 * PLATFORM_LOG_BYTES}
IDLE_TARGETS = {"WebSocket": 0.00003, "long poll": 0.001}  # issue 23's targets per idle user-hour
DAY_TARGET = 1_500.0  # issue 23's target for the seed-scale day
SERVICES = ("API Gateway", "Lambda", "DynamoDB", "SQS", "CloudWatch Logs")


def with_jobs(bill: Bill, runs: int = 1) -> dict[str, float]:
    """The bill's units plus each job it queued (a presence settle check) when it runs: its
    share of a Lambda request and of the event source's receive + delete, and one consistent
    Query (presence.md). `runs`: how often the check runs before it ends (`settle_runs_per_move`),
    each run after the first queued by the one before (one more SendMessage)."""
    units = dict(bill.units)
    jobs = sum(line.startswith("sqs.SendMessage") for line in bill.lines)
    for unit, amount in JOB_SHARE.items():
        units[unit] = units.get(unit, 0) + jobs * runs * amount
    units["sqs_requests"] = units.get("sqs_requests", 0) + jobs * (runs - 1)
    return units


def settle_runs_per_move(window: float, interval: float, cap: int = 900) -> int:
    """How many times the settle check queued by a presence move (a connect, a ping, a heartbeat)
    runs while the moves keep coming every `interval` s (logic/presence.py): it is queued for the
    move's deadline, `window` s on (+1), but SQS delays at most `cap` s, so a check for a later
    deadline runs early and queues itself again; the first run after the next move finds the
    deadline moved and ends. (tests/test_presence.py runs the service against this.)"""
    runs, at = 0, 0.0
    while True:
        at += min(window + 1 - at, cap)
        runs += 1
        if at >= interval or at >= window + 1:
            return runs


def _setting(name: str) -> int:
    """A setting's deployed default (chalicelib/settings.py)."""
    value = next(f.default for f in fields(Settings) if f.name == name)
    assert isinstance(value, int), name
    return value


def ws_settle_runs(scale: Scale = SEED) -> int:
    """A WebSocket presence move's check runs (the deployed presence window, pings every `ping_seconds`)."""
    return settle_runs_per_move(_setting("presence_window_seconds"), scale.ping_seconds)


def lp_settle_runs(scale: Scale = SEED) -> int:
    """A long-poll heartbeat's check runs (the connection's window, heartbeats every `lp_heartbeat_seconds`)."""
    return settle_runs_per_move(_setting("long_poll_window_seconds"), scale.lp_heartbeat_seconds)


def authorizer_run() -> dict[str, float]:
    memory, arch, ms = AUTHORIZER
    # an authorization that succeeds logs no line at INFO: Lambda's platform lines only (stated)
    return {"lambda_requests": 1.0, "lambda_ms": float(ms),
            "lambda_dollars_duration": memory / 1024 * ms / 1000 * LAMBDA_GB_S[arch],
            "log_bytes": float(PLATFORM_LOG_BYTES)}


def heartbeat_units(heartbeat: Bill) -> dict[str, float]:
    """One long-poll heartbeat: the REST `lp/poll` as measured, the presence check it queues,
    and the authorizer run of the new wait token it hands out."""
    return _sum((1, with_jobs(heartbeat, lp_settle_runs())), (1, authorizer_run()))


def _sum(*parts: tuple[float, dict[str, float]]) -> dict[str, float]:
    total: dict[str, float] = defaultdict(float)
    for count, units in parts:
        for unit, amount in units.items():
            total[unit] += count * amount
    return dict(total)


def by_service(units: dict[str, float], connection_minutes: float = 0) -> dict[str, float]:
    """Dollars by service at list prices (no volume tiers)."""
    return {
        "API Gateway": connection_minutes * WS_CONNECTION_MINUTE + units.get("ws_messages", 0) * WS_MESSAGE
        + units.get("rest_requests", 0) * REST_REQUEST + units.get("http_requests", 0) * HTTP_REQUEST,
        "Lambda": units.get("lambda_requests", 0) * LAMBDA_REQUEST + units.get("lambda_dollars_duration", 0),
        "DynamoDB": units.get("wru", 0) * WRU + units.get("rru", 0) * RRU,
        "SQS": units.get("sqs_requests", 0) * SQS_REQUEST,
        "CloudWatch Logs": units.get("log_bytes", 0) / 1e9 * LOGS_GB,
    }


@dataclass(frozen=True)
class IdleHour:
    """One transport's idle user-hour: its units, dollars by service, and how each was counted."""

    units: dict[str, float]
    dollars: dict[str, float]
    texts: dict[str, str]

    def total(self) -> float:
        return sum(self.dollars.values())


def idle_ws_hour(ping: Bill, scale: Scale = SEED) -> IdleHour:
    """60 connection-minutes and 3600/keepalive_seconds keepalive slots, of which
    3600/ping_seconds are presence pings (a Lambda run as measured, with its pong) and the rest
    keepalives (the MOCK route's messages)."""
    slots, pings = 3600 / scale.keepalive_seconds, 3600 / scale.ping_seconds
    ping_units = with_jobs(ping, ws_settle_runs(scale))
    units = _sum((slots - pings, keepalive_units(scale)), (pings, ping_units))
    dollars = by_service(units, connection_minutes=60)
    texts = {
        "API Gateway": f"60 connection-minutes x $0.25/M: ${60 * WS_CONNECTION_MINUTE:.6f}; {slots:.2f} keepalive "
                       f"slots ({slots - pings:.2f} keepalives to the MOCK route, {pings:.2f} presence pings), "
                       f"{units['ws_messages']:.2f} messages x $1.00/M: ${units['ws_messages'] * WS_MESSAGE:.6f}",
        "Lambda": f"{pings:.2f} ping runs of {ping_units.get('lambda_ms', 0):g} ms at "
                  f"{_memory_text(ping)}: ${dollars['Lambda']:.7f}",
        "DynamoDB": f"{pings:.2f} pings x ({ping_units.get('wru', 0):g} WRU + {ping_units.get('rru', 0):g} RRU): "
                    f"${dollars['DynamoDB']:.7f}",
        "SQS": f"{units.get('sqs_requests', 0):.2f} requests: ${dollars['SQS']:.7f}" if dollars["SQS"] else "",
        "CloudWatch Logs": f"{pings:.2f} ping runs x {ping_units.get('log_bytes', 0):,.0f} B (measured, with "
                           f"Lambda's lines; keepalives run no function): {units.get('log_bytes', 0):,.0f} B: "
                           f"${dollars['CloudWatch Logs']:.7f}",
    }
    return IdleHour(units, dollars, texts)


def idle_ws_hour_answered(unanswered: IdleHour, scale: Scale = SEED) -> float:
    """The same hour if the keepalive route answered (the design weighed and not taken)."""
    keepalives = 3600 / scale.keepalive_seconds - 3600 / scale.ping_seconds
    extra = 0.0 if scale.keepalive_answered else keepalives * WS_MESSAGE
    return unanswered.total() + extra


def idle_lp_hour(heartbeat: Bill, scale: Scale = SEED) -> IdleHour:
    """3600/lp_wait_seconds held polls (HTTP API + ReceiveMessage, no function) and
    3600/lp_heartbeat_seconds heartbeats (REST `lp/poll` as measured + an authorizer run)."""
    waits, beats = 3600 / scale.lp_wait_seconds, 3600 / scale.lp_heartbeat_seconds
    beat = heartbeat_units(heartbeat)
    units = _sum((waits, WAIT_UNITS), (beats, beat))
    dollars = by_service(units)
    auth_ms = AUTHORIZER[2]
    texts = {
        "API Gateway": f"{waits:.0f} held polls (HTTP API) x $1.00/M: ${waits * HTTP_REQUEST:.6f}; {beats:.0f} "
                       f"heartbeats (REST `lp/poll`) x $3.50/M: ${beats * REST_REQUEST:.6f}",
        "Lambda": f"{beats:.0f} heartbeat runs of {beat['lambda_ms'] - auth_ms:g} ms at {_memory_text(heartbeat)} "
                  f"+ {beats:.0f} authorizer runs of {auth_ms} ms at {AUTHORIZER[0]} MB {AUTHORIZER[1]} "
                  f"+ presence-check shares: ${dollars['Lambda']:.7f}; **none while a poll waits**",
        "DynamoDB": f"{beats:.0f} heartbeats x ({beat.get('wru', 0):g} WRU + {beat.get('rru', 0):g} RRU, the "
                    f"presence check's Query included): ${dollars['DynamoDB']:.6f}",
        "SQS": f"{waits:.0f} ReceiveMessage (the wait itself) + {beats:.0f} heartbeats x "
               f"{beat.get('sqs_requests', 0):g} (presence checks the heartbeat queues, sent, received and "
               f"deleted): ${dollars['SQS']:.6f}",
        "CloudWatch Logs": f"{beats:.0f} heartbeats x {beat.get('log_bytes', 0):,.0f} B (the `lp/poll` run as "
                           f"measured, the authorizer's and the presence check's share of Lambda's lines; held "
                           f"polls run no function): ${dollars['CloudWatch Logs']:.7f}",
    }
    return IdleHour(units, dollars, texts)


def _memory_text(bill: Bill) -> str:
    ms, dollars = bill.units.get("lambda_ms", 0), bill.units.get("lambda_dollars_duration", 0)
    for arch, price_gb_s in LAMBDA_GB_S.items():
        for memory in (128, 256, 512, 1024):
            if ms and math.isclose(dollars, memory / 1024 * ms / 1000 * price_gb_s, rel_tol=1e-9):
                return f"{memory} MB {arch}"
    return "the configured size"


def _verdict(value: float, target: float) -> str:
    limit = f"${target:.6f}".rstrip("0")
    if value <= target:
        return f"target <= {limit}: **met** ({value / target:.0%} of it)"
    return f"target <= {limit}: **missed by ${value - target:.7f} ({value / target - 1:.0%})**"


def user_hour_section(ws: IdleHour, lp: IdleHour, reconnect_hour: float) -> str:
    rows = [f"| {service} | {ws.texts[service]} | {lp.texts[service]} |" for service in SERVICES]
    ws_first = max(ws.dollars, key=lambda k: ws.dollars[k])
    lp_first = max(lp.dollars, key=lambda k: lp.dollars[k])
    return "\n".join([
        "`.venv/bin/python -m bench.cost` (an idle user: connected, no messages; the units of a presence "
        "ping and of a long-poll heartbeat are their measured calls, priced as in bench/cost.py; the "
        "intervals are infra/scale_model.py's; list prices, API Gateway messages at $1.00/M).",
        "",
        f"| | WebSocket (keepalive every {SEED.keepalive_seconds:g} s, presence ping every {SEED.ping_seconds:g} s) "
        f"| long poll (held polls of {SEED.lp_wait_seconds:g} s on the HTTP API, heartbeat every "
        f"{SEED.lp_heartbeat_seconds:g} s) |",
        "|---|---|---|",
        *rows,
        f"| **per user-hour** | **${ws.total():.7f}** ({_verdict(ws.total(), IDLE_TARGETS['WebSocket'])}; "
        f"first: {ws_first}, ${ws.dollars[ws_first]:.7f}) | **${lp.total():.6f}** "
        f"({_verdict(lp.total(), IDLE_TARGETS['long poll'])}; first: {lp_first}, ${lp.dollars[lp_first]:.6f}) |",
        "",
        f"The WebSocket hour's API Gateway line is connection-minutes (a fixed price) and keepalive slots "
        f"(one per {SEED.keepalive_seconds:g} s, API Gateway's idle limit being 600 s: a keepalive is "
        f"{SEED.keepalive_messages} message{'s' if SEED.keepalive_answered else ''}, a presence ping and its pong "
        f"2); answered keepalives (2 messages each) would make the hour "
        f"${idle_ws_hour_answered(ws):.7f}; at the "
        f"$0.80/M that messages cost beyond a billion a month (where the seed's scale is, below) the hour is "
        f"${ws.total() - ws.units['ws_messages'] * (WS_MESSAGE - 0.80 / 1e6):.7f}.",
        "",
        f"An idle long-poll user now costs **{lp.total() / ws.total():.0f} times** an idle WebSocket user (before "
        f"issue 23: $0.0077, 250 times). Not in the idle hour (as before): the WebSocket's planned reconnect "
        f"every {SEED.reconnect_minutes:g} min (connect, `sync`, `conversations`, close and their presence "
        f"checks) adds ${reconnect_hour:.7f} an hour, counted in the table at scale below.",
    ])


# -- at the source design's scale (issue 12 point 5, redone for issue 23) -----------------------
WS_TIER = (1e9, 1.00, 0.80)  # API Gateway WebSocket: first 1 billion messages a month, then $0.80/M
RECONNECT_PHASES = ("connect ($connect)", "pull on connect (sync)", "conversation list on connect",
                    "close ($disconnect)")


def _tiered(per_day: float, tier: tuple[float, float, float]) -> float:
    month = per_day * 30
    first, price_first, price_rest = tier
    return (min(month, first) * price_first + max(0.0, month - first) * price_rest) / 1e6 / 30


def _ws_dollars(messages_per_day: float) -> float:
    return _tiered(messages_per_day, WS_TIER)


def reconnect_units(life: dict[str, Bill]) -> dict[str, float]:
    return _sum(*((1, with_jobs(life[phase], ws_settle_runs() if phase in PRESENCE_MOVES else 1))
                  for phase in RECONNECT_PHASES))


def _subset(measured: Measured, keep: Any) -> Measured:
    records = [r for r in measured.records if keep(r)]
    numbers = {r.invocation for r in records}
    return Measured(records, {n: k for n, k in measured.kinds.items() if n in numbers}, {})


@dataclass(frozen=True)
class Source:
    name: str
    count: float  # a day
    units: dict[str, float]  # each
    long_poll: bool = False


def day_sources(message: Bill, life: dict[str, Bill], per_recipient: Bill | None,
                scale: Scale = SEED) -> list[Source]:
    """Every event of the day with its units: what the table at scale prices."""
    day = per_day(scale)
    # a presence change: the settle job (1 Lambda share, receive/delete share, 1 consistent Query),
    # one GSI page, then per peer a routing Query and a push to the online ones (presence.md)
    change = {"lambda_requests": 0.1, "sqs_requests": 0.2 + 1, "rru": 1 + 0.5 + scale.peers_told * 1,
              "ws_messages": scale.peers_told * scale.peers_online, "lambda_dollars_duration":
              0.25 * (0.010 + scale.peers_told * 0.01) * LAMBDA_GB_S["arm64"],
              "log_bytes": 0.1 * (PLATFORM_LOG_BYTES + EMF_PUSHES_BYTES)}  # a batch's run: its pushes' EMF line
    sources = [
        Source("1:1 messages (the measured exchange)", day.messages, dict(message.units)),
        Source(f"WebSocket keepalives (MOCK route, every {scale.keepalive_seconds:g} s of silence)", day.keepalives,
               keepalive_units(scale)),
        Source(f"WebSocket presence pings (Lambda, every {scale.ping_seconds:g} s, in a keepalive's slot)",
               day.pings, with_jobs(life["keepalive ping"], ws_settle_runs(scale))),
        Source("planned reconnects (connect, pull, list, close, presence checks)", day.reconnects,
               reconnect_units(life)),
        Source("presence changes (online + offline per session)", 2 * day.sessions, change),
        Source(f"long-poll held polls ({scale.lp_wait_seconds:g} s, HTTP API + ReceiveMessage)", day.lp_waits,
               WAIT_UNITS, long_poll=True),
        Source(f"long-poll heartbeats (REST `lp/poll` every {scale.lp_heartbeat_seconds:g} s + authorizer)",
               day.lp_heartbeats, heartbeat_units(life[HEARTBEAT]), long_poll=True),
    ]
    if per_recipient is not None:
        group = {k: v * (scale.group_size - 1) for k, v in per_recipient.units.items()}
        for k in message.units:
            group[k] = group.get(k, 0) + message.units[k] - per_recipient.units.get(k, 0)  # the sender side once
        sources.append(Source(f"group messages ({scale.group_share:.0%} of 1:1, groups of {scale.group_size})",
                              day.group_messages, group))
    return sources


def _source_row(source: Source) -> str:
    u = source.units
    return (f"| {source.name} | {source.count:,.0f} | {u.get('ws_messages', 0):g} | "
            f"{u.get('rest_requests', 0) + u.get('http_requests', 0):g} | {u.get('wru', 0):g} | {u.get('rru', 0):g} | "
            f"{u.get('lambda_requests', 0):g} | {u.get('sqs_requests', 0):g} | {u.get('log_bytes', 0):,.0f} |")


def at_scale(message: Bill, life: dict[str, Bill], per_recipient: Bill | None = None) -> str:
    scale, day = SEED, per_day(SEED)
    sources = day_sources(message, life, per_recipient, scale)

    def total(unit: str, where: Callable[[Source], bool] = lambda s: True) -> float:
        return sum(s.count * s.units.get(unit, 0) for s in sources if where(s))

    ws_messages, http, rest = total("ws_messages"), total("http_requests"), total("rest_requests")
    rows = {
        "API Gateway connection-minutes": day.connection_minutes * WS_CONNECTION_MINUTE,
        "API Gateway WebSocket messages": _ws_dollars(ws_messages),
        "API Gateway HTTP API (held polls)": _tiered(http, HTTP_TIER),
        "API Gateway REST": rest * REST_REQUEST,
        "Lambda (requests + duration)": total("lambda_requests") * LAMBDA_REQUEST + total("lambda_dollars_duration"),
        "DynamoDB writes (on-demand)": total("wru") * WRU,
        "DynamoDB reads (on-demand)": total("rru") * RRU,
        "SQS": total("sqs_requests") * SQS_REQUEST,
        "CloudWatch Logs (ingestion + storage)": total("log_bytes") / 1e9 * LOGS_GB,
    }
    day_total = sum(rows.values())
    # long poll's share: its sources at list prices, the HTTP API tiered as above
    lp_sources = [s for s in sources if s.long_poll]
    lp_day = rows["API Gateway HTTP API (held polls)"] + sum(
        s.count * sum(by_service({k: v for k, v in s.units.items() if k != "http_requests"}).values())
        for s in lp_sources)
    keepalive_sources = [s for s in sources if s.name.startswith("WebSocket")]
    online_day = rows["API Gateway connection-minutes"] + sum(s.count * _bill_of(s.units) for s in keepalive_sources)
    tier = 0.80 / 1e6 - WS_MESSAGE  # every message here is beyond the first billion of the month
    message_sources = [s for s in sources if "messages" in s.name]
    message_day = sum(s.count * (_bill_of(s.units) + s.units.get("ws_messages", 0) * tier) for s in message_sources)
    one_to_one_day = day.messages * (_bill_of(dict(message.units)) + message.units["ws_messages"] * tier)
    group_each = (message_day - one_to_one_day) / day.group_messages if day.group_messages else 0.0
    first = max(rows, key=lambda k: rows[k])
    ws_first = max(sources, key=lambda s: s.count * s.units.get("ws_messages", 0))
    verdict = (f"target <= ${DAY_TARGET:,.0f}: **met**" if day_total <= DAY_TARGET else
               f"target <= ${DAY_TARGET:,.0f}: **missed by ${day_total - DAY_TARGET:,.0f} "
               f"({day_total / DAY_TARGET - 1:.0%})**; the largest line is {first} (${rows[first]:,.0f}"
               + (f", {ws_first.count * ws_first.units['ws_messages'] / ws_messages:.0%} of them {ws_first.name}"
                  if first == "API Gateway WebSocket messages" else "") + ")")
    everything = day.messages + day.group_messages
    lines = [
        "`.venv/bin/python -m bench.cost` (the units per event are the measured calls of bench/cost.py, "
        "priced as there: on-demand list prices, us-east-1; API Gateway WebSocket messages at $1.00/M for the "
        "first billion a month and $0.80/M beyond, HTTP API requests at $1.00/M for the first 300 million and "
        "$0.90/M beyond, REST at $3.50/M; the counts a day are infra/scale_model.py's).",
        "",
        f"Assumed load: **{scale.users:,} users online at once** ({scale.ws_share:.0%} WebSocket = "
        f"{scale.ws_users:,.0f}, {1 - scale.ws_share:.0%} long poll = {scale.lp_users:,.0f}); "
        f"**{scale.messages_per_day:,} 1:1 messages a day** ({day.messages / DAY:.0f}/s on average, "
        f"{scale.peak:g}x at the peak); group messages "
        f"at {scale.group_share:.0%} of that, to groups of {scale.group_size}, each recipient costing what a 1:1 "
        f"receiver costs (push, ack, check) and the sender side once; on WebSocket a keepalive after "
        f"{scale.keepalive_seconds:g} s of silence ({'answered' if scale.keepalive_answered else 'unanswered'}: "
        f"{scale.keepalive_messages} billed message{'s' if scale.keepalive_answered else ''}) and a presence "
        f"ping (with its pong) at most every "
        f"{scale.ping_seconds:g} s, a planned reconnect every {scale.reconnect_minutes:g} min; on long poll held "
        f"polls of {scale.lp_wait_seconds:g} s and a heartbeat every {scale.lp_heartbeat_seconds:g} s; sessions of "
        f"{scale.session_hours:g} h, each announcing online and offline to {scale.peers_told} peers of whom "
        f"{scale.peers_online:.0%} are online (presence.md); SQS event source batches of 10.",
        "",
        "| per day | events | WS msgs each | REST / HTTP API req. each | WRU each | RRU each | Lambda req. each "
        "| SQS req. each | log bytes each |",
        "|---|---|---|---|---|---|---|---|---|",
        *[_source_row(s) for s in sources],
        "",
        "| service | per day | arithmetic |",
        "|---|---|---|",
        f"| API Gateway connection-minutes | ${rows['API Gateway connection-minutes']:,.0f} | "
        f"{scale.ws_users:,.0f} x 1,440 min x $0.25/M |",
        f"| API Gateway WebSocket messages | ${rows['API Gateway WebSocket messages']:,.0f} | {ws_messages:,.0f} "
        f"messages ({ws_messages * 30 / 1e9:.1f} billion a month, tiered) |",
        f"| API Gateway HTTP API (held polls) | ${rows['API Gateway HTTP API (held polls)']:,.0f} | {http:,.0f} "
        f"requests ({http * 30 / 1e9:.1f} billion a month, tiered) |",
        f"| API Gateway REST | ${rows['API Gateway REST']:,.0f} | {rest:,.0f} requests x $3.50/M (long-poll "
        f"heartbeats; the other REST routes are not in this table) |",
        f"| Lambda | ${rows['Lambda (requests + duration)']:,.0f} | {total('lambda_requests'):,.0f} requests x "
        f"$0.20/M + duration at the configured sizes (arm64) |",
        f"| DynamoDB writes | ${rows['DynamoDB writes (on-demand)']:,.0f} | {total('wru'):,.0f} WRU x $0.625/M |",
        f"| DynamoDB reads | ${rows['DynamoDB reads (on-demand)']:,.0f} | {total('rru'):,.0f} RRU x $0.125/M |",
        f"| SQS | ${rows['SQS']:,.0f} | {total('sqs_requests'):,.0f} requests x $0.40/M |",
        f"| CloudWatch Logs | ${rows['CloudWatch Logs (ingestion + storage)']:,.0f} | {total('log_bytes') / 1e9:,.1f} "
        f"GB ingested x $0.50/GB (${total('log_bytes') / 1e9 * LOGS_INGEST_GB:,.2f}) + kept {LOG_RETENTION_DAYS} days "
        f"at ~{LOGS_COMPRESSED:.0%} compressed x $0.03/GB-month (${total('log_bytes') / 1e9 * LOGS_STORED_GB:,.2f}) |",
        f"| **total** | **${day_total:,.0f} a day** (${day_total * 30:,.0f} a month) | {verdict} (before issue 23: "
        f"$11,243) |",
        "",
        f"Of that, long poll (its {scale.lp_users:,.0f} users' held polls and heartbeats, all services) "
        f"**${lp_day:,.0f} a day** = {scale.lp_users:,.0f} x 24 h x ${lp_day / scale.lp_users / 24:.6f} (before: "
        f"$9,240), and being online on WebSocket (connection-minutes, keepalives, presence pings) "
        f"**${online_day:,.0f}** (before: $342 + $1,120 of pings).",
        "",
        f"Per million messages ({everything:,.0f} a day, a group message counted once): the 1:1 messages alone "
        f"${one_to_one_day:,.0f} a day = **${one_to_one_day / day.messages * 1e6:.2f} per million** (the previous "
        f"section at batches of 10, API Gateway tiered); with the group messages (${group_each * 1e6:,.0f} per "
        f"million group messages of {scale.group_size}) ${message_day:,.0f} a day = "
        f"**${message_day / everything * 1e6:.2f} per million**; everything but long poll ${day_total - lp_day:,.0f} "
        f"a day = **${(day_total - lp_day) / everything * 1e6:.0f} per million**; everything "
        f"${day_total:,.0f} a day = **${day_total / everything * 1e6:,.0f} per million**.",
        "",
        _logs_paragraph(message, life, sources, rows, day_total),
        "",
        *_presence_checks_paragraph(scale, day_total),
        "",
        *_limits(message, life, sources, scale),
        "",
        *_provisioned(total("wru"), total("rru"), rows, day_total),
    ]
    return "\n".join(lines)


def _logs_paragraph(message: Bill, life: dict[str, Bill], sources: list[Source], rows: dict[str, float],
                    day_total: float) -> str:
    """What the log lines weigh per event and what they cost a day (measured, then priced)."""
    logs_day = rows["CloudWatch Logs (ingestion + storage)"]
    day_bytes = sum(s.count * s.units.get("log_bytes", 0) for s in sources)
    first = max(sources, key=lambda s: s.count * s.units.get("log_bytes", 0))
    each = message.units["log_bytes"]
    lambdas = message.units["lambda_requests"] * PLATFORM_LOG_BYTES  # every invocation measured with its log
    ws, lp = idle_ws_hour(life["keepalive ping"]), idle_lp_hour(life[HEARTBEAT])
    return (
        f"**CloudWatch Logs, measured** (bench/call_count.py counts what each measured invocation writes to "
        f"stdout, the log on Lambda, at the deployed level INFO: the app's JSON lines and the EMF metric line, "
        f"26 B per line; plus Lambda's START, END and REPORT lines with X-Ray's trace, {PLATFORM_LOG_BYTES} B per "
        f"invocation, once per SQS batch): a 1:1 exchange writes **{each:,.0f} B** ({each - lambdas:,.0f} B of "
        f"the app's lines: the send's `message_stored` line and the EMF lines of the send and the ack; "
        f"{lambdas:,.0f} B of Lambda's), a presence ping {life['keepalive ping'].units['log_bytes']:,.0f} B, a "
        f"long-poll heartbeat {heartbeat_units(life[HEARTBEAT])['log_bytes']:,.0f} B (the authorizer's and the "
        f"presence check's share included); an idle user-hour {ws.units.get('log_bytes', 0):,.0f} B on WebSocket "
        f"(${ws.dollars['CloudWatch Logs']:.8f}) and {lp.units.get('log_bytes', 0):,.0f} B on long poll "
        f"(${lp.dollars['CloudWatch Logs']:.7f}). At the seed's scale **{day_bytes / 1e9:,.1f} GB a day = "
        f"${logs_day:,.2f} a day** ({logs_day / day_total:.1%} of the day; the most from {first.name}, "
        f"{first.count * first.units.get('log_bytes', 0) / day_bytes:.0%}); the previous guess was 1-3 KB an "
        f"exchange and $15-25 a day. Not counted: cold starts' INIT_START line and Init Duration, Logs Insights "
        f"queries (priced per GB scanned, by use), API Gateway's own logs (not enabled).")


def _presence_checks_paragraph(scale: Scale, day_total: float) -> list[str]:
    """What the presence settle checks' runs cost a day, and where the day stands against the target."""
    day = per_day(scale)
    ws_runs, lp_runs = ws_settle_runs(scale), lp_settle_runs(scale)
    one_run = sum(by_service({**JOB_SHARE, "sqs_requests": JOB_SHARE["sqs_requests"] + 1}).values())
    moves = day.pings + day.reconnects
    extra = moves * (ws_runs - 1) * one_run
    verdict = "**met**" if day_total <= DAY_TARGET else f"**missed by ${day_total - DAY_TARGET:,.0f}**"
    return [
        f"**Presence checks, counted as they run** (logic/presence.py; tests/test_presence.py runs the service "
        f"against `settle_runs_per_move`): a presence move (a connect, a ping, a heartbeat) queues the settle "
        f"check for its deadline, but SQS delays at most 15 min, so a check for a later deadline runs early and "
        f"queues itself again; the first run after the next move finds the deadline moved and ends. A WebSocket "
        f"ping's check (window {_setting('presence_window_seconds')} s, pings every {scale.ping_seconds:g} s) runs "
        f"**{ws_runs} times**, a long-poll heartbeat's {lp_runs} time(s); each run ${one_run * 1e6:.2f} per "
        f"million (its SendMessage, its share of a receive, a delete and a Lambda request, one consistent Query, "
        f"its share of Lambda's log lines). The model used to count one run per move: the other "
        f"{ws_runs - 1} for the day's {moves:,.0f} WebSocket moves are **${extra:,.0f} a day**, in the table "
        f"above. (Before this round's fix the service did worse than either: a check whose deadline a later "
        f"ping had moved queued itself again, so every ping started a chain that ran to the end of the session, "
        f"about 11 runs per ping interval after 4 pings in the test.)",
        "",
        f"**The day against issue 23's target**: ${day_total:,.0f}, target ${DAY_TARGET:,.0f} {verdict}. Issue 23 "
        f"closed at $1,449; since then this bench counts CloudWatch Logs (above), the presence checks' runs "
        f"(above), and measures a ping, a heartbeat and a reconnect's connect a wall-clock second after the event "
        f"before them, as on AWS where they are minutes apart (in the same second they sometimes moved no "
        f"deadline and queued no check: about $39 a day). Levers not taken: one chain of checks per identity "
        f"rather than per deadline ({scale.ping_seconds / 900:.1f} runs per ping instead of {ws_runs}: about "
        f"${moves * (ws_runs - scale.ping_seconds / 900) * one_run:,.0f} a day); an EventBridge Scheduler "
        f"one-time schedule per identity, moved by each ping and fired once at the deadline, instead of SQS hops "
        f"(most of the ${moves * ws_runs * one_run:,.0f} a day of WebSocket checks); DynamoDB provisioned "
        f"capacity (below).",
    ]


def _limits(message: Bill, life: dict[str, Bill], sources: list[Source], scale: Scale) -> list[str]:
    day, busiest, settings = per_day(scale), peak(scale), prod_settings(scale)
    requests = sum(s.count * (s.units.get("ws_messages", 0) + s.units.get("rest_requests", 0)
                              + s.units.get("http_requests", 0)) for s in sources) / DAY
    keepalive_rps = (day.keepalives * scale.keepalive_messages + day.pings * 2) / DAY
    avg_msgs = day.messages / DAY
    beat = heartbeat_units(life[HEARTBEAT])
    busy = (message.units["lambda_ms"] * avg_msgs * scale.peak + day.pings / DAY * life["keepalive ping"].units[
        "lambda_ms"] + day.lp_heartbeats / DAY * beat["lambda_ms"]) / 1000
    measured_frames = sum(kind == "websocket" for kind in message_kinds(message))
    rates = settings.rest_rate + settings.websocket_rate + settings.wait_rate
    return [
        "**Which limits bind first** (default quotas; all adjustable on request unless said):",
        "",
        f"1. **API Gateway account throttle, 10,000 requests/s** (one per region, shared by REST, HTTP and "
        f"WebSocket APIs and the @connections callbacks): {requests:,.0f}/s on average, of which WebSocket "
        f"keepalives and presence pings {keepalive_rps:,.0f}/s and held polls {day.lp_waits / DAY:,.0f}/s "
        f"(before issue 23: 10,379/s, keepalives 7,917/s). The prod stage throttles derived below add up to "
        f"{rates:,}/s: request a higher account throttle before this load.",
        f"2. **Lambda concurrency, 1,000 per account by default**: no held poll holds a function any more "
        f"(before: 50,000); messages at the peak, presence pings and long-poll heartbeats keep about "
        f"{busy:,.0f} busy (invocations/s x billed seconds). The REST function reserves "
        f"{settings.reserved_concurrency} (below).",
        f"3. **API Gateway new connections, 500/s per account**: planned reconnects {day.reconnects / DAY:,.0f}/s "
        f"on average; after an outage all {scale.ws_users:,.0f} come back at once and need "
        f"{scale.ws_users / 500 / 60:.0f} min at 500/s: request a higher rate, and keep the clients' jittered "
        f"backoff (1-30 s) so the herd spreads.",
        "4. **DynamoDB partition, 1,000 WCU / 3,000 RCU per second**: a message writes 4 WRU to its "
        "conversation's partition (head + message, transactional), so one conversation takes at most "
        "~250 messages/s, and less in practice: every send conditions on the one head item, so concurrent "
        "sends to one conversation conflict and retry (~50-100/s). Irrelevant for 1:1 (people type slower); "
        "it is the design limit for large groups (issue 13: shard the head or batch). A popular member (a "
        "seller) receives 2 WRU + 2 index WRU per incoming message on its own partition: ~250-500 incoming "
        "messages/s, and 3,000 routing reads/s (strongly consistent Query, 1 RRU each).",
        f"5. **SQS**: a standard queue has no practical throughput limit; ~{avg_msgs * scale.peak * 10:,.0f} "
        f"checks delayed at once at the peak (10 s each) and {day.lp_waits / DAY:,.0f} ReceiveMessage/s on the "
        f"long-poll queues are far below any quota.",
        "",
        f"**The prod stage's settings follow from this load** (`infra/scale_model.py`'s `prod_settings()`, "
        f"busiest second x {scale.headroom:g}, bursts of {scale.burst_seconds:g} s; docs/deploy.md, \"Sizing\"): "
        f"WebSocket {busiest.websocket:,.0f} client frames/s -> **{settings.websocket_rate:,}/s** (burst "
        f"{settings.websocket_burst:,}); REST {busiest.rest:,.0f}/s -> **{settings.rest_rate:,}/s** (burst "
        f"{settings.rest_burst:,}); HTTP API (held polls) {busiest.wait:,.0f}/s -> **{settings.wait_rate:,}/s** "
        f"(burst {settings.wait_burst:,}); the REST function's reserved concurrency {settings.rest_rate:,}/s x "
        f"{scale.rest_billed_ms:g} ms = **{settings.reserved_concurrency}** (the heartbeat measured here bills "
        f"{life[HEARTBEAT].units['lambda_ms']:g} ms). Client frames per 1:1 message: {measured_frames} measured, "
        f"{scale.frames_per_message} assumed by the model.",
    ]


def message_kinds(message: Bill) -> list[str]:
    """The invocation kinds of a priced exchange, from its per-invocation lines."""
    return [line.split(" invocation:")[0] for line in message.lines if " invocation:" in line]


def _provisioned(wru: float, rru: float, rows: dict[str, float], day_total: float) -> list[str]:
    provisioned_wcu = wru / DAY / 0.7
    provisioned = provisioned_wcu * WCU_HOUR * 24 + rru / DAY / 0.7 * RCU_HOUR * 24
    on_demand = rows["DynamoDB writes (on-demand)"] + rows["DynamoDB reads (on-demand)"]
    return [
        f"**The lever beyond code, stated as a deviation from on-demand**: at this steady load, DynamoDB "
        f"provisioned capacity with auto scaling (target 70 %) costs {provisioned_wcu:,.0f} WCU x "
        f"$0.00065/h x 24 + reads = **${provisioned:,.0f} a day** instead of "
        f"${on_demand:,.0f} on-demand; reserved "
        f"capacity (1-year, ~54 % off provisioned) ~${provisioned * 0.46:,.0f}. With provisioned capacity the "
        f"whole day would be ${day_total - on_demand + provisioned:,.0f} (not the on-demand figure the target "
        f"is measured by above).",
    ]


def receiver_side(measured: Measured) -> Measured:
    """What one more recipient of a message costs: the routing Query, the msg:N push and the
    check's schedule in the send; all of its ack but the `delivered` to the sender; the check."""
    numbers = sorted(measured.kinds)
    send, ack = [n for n in numbers if measured.kinds[n] == "websocket"][:2]

    def keep(record: CallRecord) -> bool:
        if record.invocation == send:
            posts = [r for r in measured.records if r.invocation == send and r.call.endswith("PostToConnection")]
            return record.call in ("dynamodb.Query", "sqs.SendMessage") or record is posts[0]
        if record.invocation == ack:
            return record.call in ("dynamodb.GetItem", "dynamodb.UpdateItem")
        return True

    kept = _subset(measured, keep)
    kept.kinds[ack] = "websocket"  # the ack frame itself
    kept.kinds.pop(send, None)  # the send's invocation is the sender's
    kept.records[:] = [r for r in kept.records if r.invocation != send] + [
        CallRecord(r.call, ack, r.request, r.size, r.response, r.items) for r in kept.records if r.invocation == send]
    return kept


def levers(bill: Bill) -> str:
    """The per-million figure under the prices that are not code: volume tiers and capacity modes."""
    u = bill.units
    other = (u["lambda_requests"] * LAMBDA_REQUEST + u["lambda_dollars_duration"]
             + u["sqs_requests"] * SQS_REQUEST + u["log_bytes"] / 1e9 * LOGS_GB) * 1e6
    wcu_70 = WCU_HOUR / 3600 / 0.7 * 1e6  # $ per million write units on provisioned capacity at 70 % use
    rcu_70 = RCU_HOUR / 3600 / 0.7 * 1e6
    reserved = 0.46  # 1-year reserved capacity: ~54 % off provisioned (AWS: "up to 77 %" for 3 years)
    rows = [
        ("on-demand, list prices (this code)", u["ws_messages"] * 1.00, u["wru"] * 0.625 + u["rru"] * 0.125),
        ("+ API Gateway beyond 1 billion messages a month ($0.80/M)", u["ws_messages"] * 0.80,
         u["wru"] * 0.625 + u["rru"] * 0.125),
        ("+ DynamoDB provisioned, auto scaling at 70 % ($0.00065/WCU-h, $0.00013/RCU-h)", u["ws_messages"] * 0.80,
         u["wru"] * wcu_70 + u["rru"] * rcu_70),
        ("+ 1-year reserved capacity for that steady base", u["ws_messages"] * 0.80,
         (u["wru"] * wcu_70 + u["rru"] * rcu_70) * reserved),
    ]
    lines = [
        f"**The floor, and what closes the gap to $8.** With SQS batches of 10 (the load of the next "
        f"section), per million 1:1 messages: {u['ws_messages']:g} frames, {u['wru']:g} WRU, {u['rru']:g} RRU, "
        f"Lambda + SQS + CloudWatch Logs ${other:.2f}. The code cannot go lower without giving up a guarantee "
        f"(the cuts below); the rest are prices, each a deviation from on-demand list prices:",
        "",
        "| prices | API Gateway | DynamoDB | Lambda + SQS + Logs | per million |",
        "|---|---|---|---|---|",
        *[f"| {name} | ${ws:.2f} | ${ddb:.2f} | ${other:.2f} | **${ws + ddb + other:.2f}** |"
          for name, ws, ddb in rows],
        "",
        f"Provisioned at 70 %: $0.00065 / 3,600 s / 0.7 = ${wcu_70:.3f} per million write units "
        f"(on-demand $0.625) and ${rcu_70:.4f} per million read units (on-demand $0.125).",
    ]
    return "\n".join(lines)


def _g(units: dict[str, float], name: str) -> str:
    return f"{units[name]:g}" if name in units else "not counted"


def _units_text(units: dict[str, float]) -> str:
    names = {"ws_messages": "WebSocket messages", "wru": "WRU", "rru": "RRU", "lambda_requests": "Lambda requests",
             "sqs_requests": "SQS requests", "log_bytes": "log bytes"}
    return ", ".join(f"{units[k]:g} {name}" for k, name in names.items() if units.get(k))


def _bill_of(units: dict[str, float]) -> float:
    bill = Bill()
    for k, v in units.items():
        bill.add(k, v)
    return bill.total()


if __name__ == "__main__":
    main()
