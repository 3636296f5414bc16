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
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from boto3.dynamodb.types import TypeSerializer

from bench.call_count import CallRecord, Measured, measure_exchange
from bench.report import update_section

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
# provisioned capacity, for the lever at scale (not used by the per-message figures)
WCU_HOUR = 0.00065
RCU_HOUR = 0.00013

# -- stated assumptions about AWS (not measurable here) -----------------------------------------
# Billed Lambda duration: the calls' round trips inside a region plus the Python around them.
CALL_MS = {"dynamodb.TransactWriteItems": 12, "apigatewaymanagementapi.PostToConnection": 10,
           "sqs.SendMessage": 8}
OTHER_CALL_MS = 5  # GetItem, Query, UpdateItem, PutItem, BatchGetItem
PYTHON_MS = 5  # parsing, signing, dispatch per invocation (warm)


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
            "DynamoDB writes": u["wru"] * WRU,
            "DynamoDB reads": u["rru"] * RRU,
            "Lambda requests": u["lambda_requests"] * LAMBDA_REQUEST,
            "Lambda duration": u["lambda_dollars_duration"],
            "SQS": u["sqs_requests"] * SQS_REQUEST,
        }

    def total(self) -> float:
        return sum(self.dollars().values())


@dataclass(frozen=True)
class Functions:
    """Memory (MB) and architecture of the WebSocket and SQS functions, from .chalice/config.json."""

    websocket: tuple[int, str]
    sqs: tuple[int, str]


def functions(stage: str = "prod", config: Path = ROOT / ".chalice" / "config.json") -> Functions:
    doc = json.loads(config.read_text())

    def of(name: str) -> tuple[int, str]:
        found: dict[str, Any] = {}
        for scope in (doc, doc["stages"][stage], doc["stages"][stage].get("lambda_functions", {}).get(name, {})):
            found.update({k: v for k, v in scope.items() if k in ("lambda_memory_size", "lambda_architecture")})
        return int(found.get("lambda_memory_size", 128)), str(found.get("lambda_architecture", "x86_64"))

    return Functions(of("websocket_message"), of("on_job"))


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
        else:
            bill.add("lambda_requests", 1 / batch)
            bill.add("sqs_requests", 2 / batch)  # the event source's ReceiveMessage + DeleteMessageBatch
            memory, arch = fns.sqs
        ms = PYTHON_MS + sum(CALL_MS.get(r.call, OTHER_CALL_MS) for r in records)
        share = 1 / batch if kind == "sqs" else 1
        bill.add("lambda_ms", ms * share)
        bill.add("lambda_dollars_duration", memory / 1024 * ms / 1000 * LAMBDA_GB_S[arch] * share)
        bill.lines.append(f"{kind} invocation: {ms} ms billed (assumed AWS latency), "
                          f"{measured.seconds.get(number, 0) * 1000:.0f} ms here")
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
        life = measure_connection_life(env)
    assert exchange.steady is not None
    return exchange.steady, life


def measure_connection_life(env: dict[str, str]) -> dict[str, Measured]:
    """The calls of a WebSocket connection's life apart from messages: open, one keepalive ping,
    the reconnect's pull (`sync`, `conversations`), close; for a user with one conversation."""
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
        call_count._invocation.measured, call_count._invocation.number = True, number
        try:
            run()
        finally:
            call_count._invocation.measured = False
        kind = "route" if name.startswith(("connect", "close")) else "websocket"
        measured[name] = Measured(log.records_in_order(), {number: kind}, {})
    return measured


TYPICAL_TEXT = "x" * 100  # a typical chat message: 100 characters (items stay under 1 KB either way)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--baseline", action="store_true", help="record these numbers as the 'before'")
    parser.add_argument("--batch", type=float, default=1.0, help="ack checks per SQS receive (1 = worst case)")
    args = parser.parse_args()
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
    scale = at_scale(price(steady, existing=True, batch=10, fns=fns),
                     {name: price(m, existing=True, batch=10, fns=fns) for name, m in life.items()},
                     _idle_user_hour(), price(receiver_side(steady), existing=True, batch=10, fns=fns))
    print(scale)
    update_section("cost-at-scale", scale)


def _cost_section(before: dict[str, Any], after: dict[str, Any], bill: Bill, batch: float) -> str:
    rows = []
    for name in after["per_million"]:
        b, a = before["per_million"].get(name, 0.0), after["per_million"][name]
        rows.append(f"| {name} | ${b:.2f} | ${a:.2f} |")
    tb, ta = sum(before["per_million"].values()), sum(after["per_million"].values())
    unit_rows = [f"| {name} | {before['units'].get(name, 0):g} | {after['units'].get(name, 0):g} |"
                 for name in ("ws_messages", "wru", "rru", "lambda_requests", "lambda_ms", "sqs_requests")]
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



# -- at the source design's scale (issue 12 point 5) ------------------------------------------
USERS = 1_000_000  # online at once
WS_SHARE = 0.95
MESSAGES_PER_DAY = 10_000_000  # 1:1
GROUP_SHARE, GROUP_SIZE = 0.10, 20  # assumed: group messages = 10 % of the 1:1 volume, groups of 20
PING_MINUTES = 4  # frontend/lib/connection.js: a ping every 4 minutes (10-minute idle limit)
RECONNECT_MINUTES = 110  # planned reconnect before API Gateway's 2 h limit (connection.js)
SESSION_HOURS = 2.0  # assumed: a user's online session (its online and offline announcements)
PEERS_TOLD = 10  # assumed: conversations whose peer is told a presence change (first page: up to 50)
PEERS_ONLINE = 0.3  # assumed: share of those peers online to receive the push
PEAK = 3.0  # assumed: the busiest second / the average second, for the limits
WS_TIER = (1e9, 1.00, 0.80)  # API Gateway WebSocket: first 1 billion messages a month, then $0.80/M


def _idle_user_hour(path: Path = ROOT / "docs" / "performance.md") -> tuple[float, str]:
    """The long-poll idle user-hour as docs/performance.md "What one user-hour costs" states it
    (another part of issue 12 brings it down): the "about $" figure in the long-poll cell of its `per user-hour` row."""
    text = path.read_text()
    section = text[text.find("## What one user-hour costs"):]
    for line in section.splitlines():
        if "per user-hour" in line:
            cell = [c for c in line.split("|") if c.strip()][-1]  # the long-poll column
            figure = re.search(r"about \$([0-9]+\.[0-9]+)", cell) or re.search(r"\$([0-9]+\.[0-9]+)", cell)
            if figure:
                return float(figure.group(1)), cell.strip()
    return 0.034, "(not found: issue 12's figure $0.034)"


def _ws_dollars(messages_per_day: float) -> float:
    month = messages_per_day * 30
    first, price_first, price_rest = WS_TIER
    return (min(month, first) * price_first + max(0.0, month - first) * price_rest) / 1e6 / 30


def _subset(measured: Measured, keep: Any) -> Measured:
    records = [r for r in measured.records if keep(r)]
    numbers = {r.invocation for r in records}
    return Measured(records, {n: k for n, k in measured.kinds.items() if n in numbers}, {})


def at_scale(message: Bill, life: dict[str, Bill], idle_hour: tuple[float, str],
             per_recipient: Bill | None = None) -> str:
    ws_users, lp_users = USERS * WS_SHARE, USERS * (1 - WS_SHARE)
    pings = ws_users * 24 * 60 / PING_MINUTES
    reconnects = ws_users * 24 * 60 / RECONNECT_MINUTES
    sessions = USERS * 24 / SESSION_HOURS
    groups = MESSAGES_PER_DAY * GROUP_SHARE
    # daily units by source: (count per day, units per one)
    sources: list[tuple[str, float, dict[str, float]]] = [
        ("1:1 messages (the measured exchange)", MESSAGES_PER_DAY, dict(message.units)),
        ("keepalive pings", pings, dict(life["keepalive ping"].units)),
    ]
    reconnect_units: dict[str, float] = defaultdict(float)
    for phase in ("connect ($connect)", "pull on connect (sync)", "conversation list on connect",
                  "close ($disconnect)"):
        for unit, amount in life[phase].units.items():
            reconnect_units[unit] += amount
        # each job the phase queued (a presence settle check) runs later: its share of a Lambda
        # request and of the event source's receive + delete, and one consistent Query (presence.md)
        jobs = sum(line.startswith("sqs.SendMessage") for line in life[phase].lines)
        for unit, amount in {"lambda_requests": 0.1, "sqs_requests": 0.2, "rru": 1.0}.items():
            reconnect_units[unit] += jobs * amount
    sources.append(("planned reconnects (connect, pull, list, close, 2 presence checks)", reconnects,
                    dict(reconnect_units)))
    # a presence change: the settle job (1 Lambda share, receive/delete share, 1 consistent Query),
    # one GSI page, then per peer a routing Query and a push to the online ones (presence.md)
    change = {"lambda_requests": 0.1, "sqs_requests": 0.2 + 1, "rru": 1 + 0.5 + PEERS_TOLD * 1,
              "ws_messages": PEERS_TOLD * PEERS_ONLINE, "lambda_dollars_duration":
              0.25 * (0.010 + PEERS_TOLD * 0.01) * LAMBDA_GB_S["arm64"]}
    sources.append(("presence changes (online + offline per session)", 2 * sessions, change))
    if per_recipient is not None:
        group = {k: v * (GROUP_SIZE - 1) for k, v in per_recipient.units.items()}
        sender_side = {k: message.units[k] - per_recipient.units.get(k, 0) for k in message.units}
        for k, v in sender_side.items():
            group[k] = group.get(k, 0) + v
        sources.append((f"group messages ({GROUP_SHARE:.0%} of 1:1, groups of {GROUP_SIZE})", groups, group))

    def total(unit: str) -> float:
        return sum(count * units.get(unit, 0) for _, count, units in sources)

    ws_messages = total("ws_messages")
    rows = {
        "API Gateway connection-minutes": ws_users * 24 * 60 * WS_CONNECTION_MINUTE,
        "API Gateway messages": _ws_dollars(ws_messages),
        "Lambda (requests + duration)": total("lambda_requests") * LAMBDA_REQUEST + total("lambda_dollars_duration"),
        "DynamoDB writes (on-demand)": total("wru") * WRU,
        "DynamoDB reads (on-demand)": total("rru") * RRU,
        "SQS": total("sqs_requests") * SQS_REQUEST,
    }
    lp_day = lp_users * 24 * idle_hour[0]
    rows["long poll (idle user-hours, all services)"] = lp_day
    day = sum(rows.values())
    source_rows = [f"| {name} | {count:,.0f} | {units.get('ws_messages', 0):g} | {units.get('wru', 0):g} | "
                   f"{units.get('rru', 0):g} | {units.get('lambda_requests', 0):g} | {units.get('sqs_requests', 0):g} |"
                   for name, count, units in sources]
    tier = 0.80 / 1e6 - WS_MESSAGE  # every message here is beyond the first billion of the month
    message_day = sum(count * (_bill_of(units) + units.get("ws_messages", 0) * tier)
                      for name, count, units in sources if "messages" in name)
    one_to_one_day = MESSAGES_PER_DAY * (_bill_of(dict(message.units)) + message.units["ws_messages"] * tier)
    group_each = (message_day - one_to_one_day) / groups if groups else 0.0
    # limits
    avg_msgs = MESSAGES_PER_DAY / 86400
    ws_rps = ws_messages / 86400
    held = lp_users
    busy = (message.units["lambda_ms"] * avg_msgs * PEAK + pings / 86400 * life["keepalive ping"].units["lambda_ms"]
            ) / 1000
    ping_day = pings * (_bill_of(dict(life["keepalive ping"].units)) - life["keepalive ping"].units["ws_messages"]
                        * (WS_MESSAGE - 0.80 / 1e6))
    provisioned_wcu = total("wru") / 86400 / 0.7
    provisioned = provisioned_wcu * WCU_HOUR * 24 + total("rru") / 86400 / 0.7 * RCU_HOUR * 24
    lines = [
        "`.venv/bin/python -m bench.cost` (the units per event are the measured calls of bench/cost.py, "
        "priced as there: on-demand list prices, us-east-1; API Gateway messages at $1.00/M for the first "
        "billion a month and $0.80/M beyond).",
        "",
        f"Assumed load: **{USERS:,} users online at once** ({WS_SHARE:.0%} WebSocket = {ws_users:,.0f}, "
        f"{1 - WS_SHARE:.0%} long poll = {lp_users:,.0f}); **{MESSAGES_PER_DAY:,} 1:1 messages a day** "
        f"({avg_msgs:.0f}/s on average, {PEAK:g}x at the peak); group messages (not built yet, issue 13) at "
        f"{GROUP_SHARE:.0%} of that, to groups of {GROUP_SIZE}, each recipient costing what a 1:1 receiver "
        f"costs (push, ack, check) and the sender side once; a ping every {PING_MINUTES} min and a planned "
        f"reconnect every {RECONNECT_MINUTES} min (connection.js); sessions of {SESSION_HOURS:g} h, each "
        f"announcing online and offline to {PEERS_TOLD} peers of whom {PEERS_ONLINE:.0%} are online "
        f"(presence.md); SQS event source batches of 10.",
        "",
        "| per day | events | WS msgs each | WRU each | RRU each | Lambda req. each | SQS req. each |",
        "|---|---|---|---|---|---|---|",
        *source_rows,
        "",
        "| service | per day | arithmetic |",
        "|---|---|---|",
        f"| API Gateway connection-minutes | ${rows['API Gateway connection-minutes']:,.0f} | "
        f"{ws_users:,.0f} x 1,440 min x $0.25/M |",
        f"| API Gateway messages | ${rows['API Gateway messages']:,.0f} | {ws_messages:,.0f} messages "
        f"({ws_messages * 30 / 1e9:.1f} billion a month, tiered) |",
        f"| Lambda | ${rows['Lambda (requests + duration)']:,.0f} | {total('lambda_requests'):,.0f} requests x "
        f"$0.20/M + duration at 256 MB arm64 |",
        f"| DynamoDB writes | ${rows['DynamoDB writes (on-demand)']:,.0f} | {total('wru'):,.0f} WRU x $0.625/M |",
        f"| DynamoDB reads | ${rows['DynamoDB reads (on-demand)']:,.0f} | {total('rru'):,.0f} RRU x $0.125/M |",
        f"| SQS | ${rows['SQS']:,.0f} | {total('sqs_requests'):,.0f} requests x $0.40/M |",
        f"| long poll | ${lp_day:,.0f} | {lp_users:,.0f} users x 24 h x ${idle_hour[0]:g} per idle user-hour "
        f"(performance.md, \"What one user-hour costs\": `{idle_hour[1][:90]}`) |",
        f"| **total** | **${day:,.0f} a day** (${day * 30:,.0f} a month) | |",
        "",
        f"Per million messages ({MESSAGES_PER_DAY + groups:,.0f} a day, a group message counted once): "
        f"the 1:1 messages alone ${one_to_one_day:,.0f} a day = **${one_to_one_day / MESSAGES_PER_DAY * 1e6:.2f} "
        f"per million** (the previous section at batches of 10, API Gateway tiered); with the group messages "
        f"(${group_each * 1e6:,.0f} per million group messages of {GROUP_SIZE}) ${message_day:,.0f} a day = "
        f"**${message_day / (MESSAGES_PER_DAY + groups) * 1e6:.2f} per million**; everything but long poll "
        f"(being online, keepalives, reconnects, presence) ${day - lp_day:,.0f} a day = "
        f"**${(day - lp_day) / (MESSAGES_PER_DAY + groups) * 1e6:.0f} per million**; with long poll at today's "
        f"figure ${day:,.0f} a day = **${day / (MESSAGES_PER_DAY + groups) * 1e6:,.0f} per million**. At this "
        f"load being online costs more than messaging: keepalives alone ${ping_day:,.0f} a day.",
        "",
        "**Which limits bind first** (default quotas; all adjustable on request unless said):",
        "",
        f"1. **API Gateway account throttle, 10,000 requests/s** (shared by WebSocket messages and the "
        f"@connections callback API): {ws_rps:,.0f}/s on average already, of which keepalives "
        f"{pings * 2 / 86400:,.0f}/s (ping + pong). It binds first. Request a higher account throttle, and "
        f"ping less often: every 8 min instead of 4 (still under the 10-min idle limit) halves the keepalive "
        f"share and their ${ping_day:,.0f} a day (each ping: "
        f"{_units_text(life['keepalive ping'].units)}).",
        f"2. **Lambda concurrency, 1,000 per account by default**: {held:,.0f} held long polls if each holds a "
        f"function (see the long-poll section for what runs during a hold) plus about "
        f"{busy:,.0f} for messages at the peak and keepalives (invocations/s x billed seconds). Request "
        f"~{round((held + busy) * 1.2, -4):,.0f}, or keep held polls off Lambda.",
        f"3. **API Gateway new connections, 500/s per account**: planned reconnects "
        f"{reconnects / 86400:,.0f}/s on average; after an outage all {ws_users:,.0f} come back at once and "
        f"need {ws_users / 500 / 60:.0f} min at 500/s: request a higher rate, and keep the clients' jittered "
        f"backoff (1-30 s) so the herd spreads.",
        "4. **DynamoDB partition, 1,000 WCU / 3,000 RCU per second**: a message writes 4 WRU to its "
        "conversation's partition (head + message, transactional), so one conversation takes at most "
        "~250 messages/s, and less in practice: every send conditions on the one head item, so concurrent "
        "sends to one conversation conflict and retry (~50-100/s). Irrelevant for 1:1 (people type slower); "
        "it is the design limit for large groups (issue 13: shard the head or batch). A popular member (a "
        "seller) receives 2 WRU + 2 index WRU per incoming message on its own partition: ~250-500 incoming "
        "messages/s, and 3,000 routing reads/s (strongly consistent Query, 1 RRU each).",
        "5. **SQS**: a standard queue has no practical throughput limit; ~"
        f"{avg_msgs * PEAK * 10:,.0f} checks delayed at once at the peak (10 s each) is far below any quota.",
        "",
        f"**The lever beyond code, stated as a deviation from on-demand**: at this steady load, DynamoDB "
        f"provisioned capacity with auto scaling (target 70 %) costs {provisioned_wcu:,.0f} WCU x "
        f"$0.00065/h x 24 + reads = **${provisioned:,.0f} a day** instead of "
        f"${rows['DynamoDB writes (on-demand)'] + rows['DynamoDB reads (on-demand)']:,.0f} on-demand; reserved "
        f"capacity (1-year, ~54 % off provisioned) ~${provisioned * 0.46:,.0f}.",
    ]
    return "\n".join(lines)


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
             + u["sqs_requests"] * SQS_REQUEST) * 1e6
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
        f"Lambda + SQS ${other:.2f}. The code cannot go lower without giving up a guarantee (the cuts "
        f"below); the rest are prices, each a deviation from on-demand list prices:",
        "",
        "| prices | API Gateway | DynamoDB | Lambda + SQS | per million |",
        "|---|---|---|---|---|",
        *[f"| {name} | ${ws:.2f} | ${ddb:.2f} | ${other:.2f} | **${ws + ddb + other:.2f}** |"
          for name, ws, ddb in rows],
        "",
        f"Provisioned at 70 %: $0.00065 / 3,600 s / 0.7 = ${wcu_70:.3f} per million write units "
        f"(on-demand $0.625) and ${rcu_70:.4f} per million read units (on-demand $0.125).",
    ]
    return "\n".join(lines)


def _units_text(units: dict[str, float]) -> str:
    names = {"ws_messages": "WebSocket messages", "wru": "WRU", "rru": "RRU", "lambda_requests": "Lambda requests",
             "sqs_requests": "SQS requests"}
    return ", ".join(f"{units[k]:g} {name}" for k, name in names.items() if units.get(k))


def _bill_of(units: dict[str, float]) -> float:
    bill = Bill()
    for k, v in units.items():
        bill.add(k, v)
    return bill.total()


if __name__ == "__main__":
    main()
