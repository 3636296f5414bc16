"""The cost model's arithmetic (bench/cost.py): DynamoDB item sizes, write units with the
index writes of infra/template.yaml, read units by consistency, frames and SQS requests, and
the log bytes an invocation writes (measured by bench/call_count.py) priced as CloudWatch Logs."""
from __future__ import annotations

import json
import logging

import pytest

from bench.call_count import (
    PLATFORM_LOG_BYTES,
    CallRecord,
    Measured,
    deployed_log_level,
    log_event_bytes,
    measure_exchange,
)
from bench.cost import (
    LAMBDA_GB_S,
    LOG_RETENTION_DAYS,
    Functions,
    Index,
    by_service,
    changed_attributes,
    idle_lp_hour,
    idle_ws_hour,
    indexes,
    item_size,
    price,
    with_jobs,
)
from infra.scale_model import SEED, Scale, per_day

MEMBERS = Index("members", ("pk", "last_time"), "ALL")
FNS = Functions((256, "arm64"), (256, "arm64"))
FNS_REST = Functions((256, "arm64"), (256, "arm64"), (128, "arm64"))


def test_item_sizes_follow_dynamodb_rules() -> None:
    assert item_size({"pk": {"S": "abc"}}) == 2 + 3
    assert item_size({"n": {"N": "12345"}}) == 1 + 4  # 3 bytes for 5 digits + 1
    assert item_size({"pk": "abc", "t": True}) == 5 + 2


def test_the_update_expression_names_what_it_writes() -> None:
    expression = ("SET peer = if_not_exists(peer, :peer), last_time = :t, #c = :n "
                  "ADD writers :w")
    assert changed_attributes(expression, {"#c": "acked_seq"}) == {"peer", "last_time", "acked_seq", "writers"}


def test_the_template_declares_the_members_index() -> None:
    assert any(i.table == "members" and i.keys == ("pk", "last_time") for i in indexes())


def _write(call: str, request: dict, item: dict) -> CallRecord:
    record = CallRecord(call, 1, request)
    key = {"pk": item["pk"], "sk": item["sk"]}
    record.items[json.dumps(["t-members", key], sort_keys=True)] = item
    return record


def test_a_transactional_update_that_moves_the_index_key_costs_2_plus_delete_and_put() -> None:
    item = {"pk": {"S": "user:a"}, "sk": {"S": "C#x"}, "last_time": {"N": "1"}, "preview": {"S": "p" * 500}}
    spec = {"TableName": "t-members", "Key": {"pk": item["pk"], "sk": item["sk"]},
            "UpdateExpression": "SET last_time = :t, preview = :p"}
    record = _write("dynamodb.TransactWriteItems", {"TransactItems": [{"Update": spec}]}, item)
    bill = price(Measured([record], {1: "websocket"}, {}), existing=True, batch=1, fns=FNS, index_list=[MEMBERS])
    assert bill.units["wru"] == 2 + 2  # x2 in a transaction; delete + put in the index, not doubled
    assert bill.units["ws_messages"] == 1 and bill.units["lambda_requests"] == 1


def test_an_update_of_an_unprojected_attribute_writes_no_index_entry() -> None:
    item = {"pk": {"S": "user:a"}, "sk": {"S": "C#x"}, "last_time": {"N": "1"}, "acked_seq": {"N": "3"}}
    spec = {"TableName": "t-members", "Key": {"pk": item["pk"], "sk": item["sk"]},
            "UpdateExpression": "SET acked_seq = :n"}
    record = _write("dynamodb.UpdateItem", spec, item)
    keys_only = Index("members", ("pk", "last_time"), "KEYS_ONLY")
    measured = Measured([record], {1: "websocket"}, {})
    assert price(measured, existing=True, batch=1, fns=FNS, index_list=[MEMBERS]).units["wru"] == 2
    assert price(measured, existing=True, batch=1, fns=FNS, index_list=[keys_only]).units["wru"] == 1


def test_reads_are_priced_by_size_and_consistency_and_sqs_by_batch() -> None:
    answer = {"Items": [{"pk": {"S": "x" * 3000}}, {"pk": {"S": "y" * 3000}}]}
    query = CallRecord("dynamodb.Query", 1, {"ConsistentRead": True}, response=answer)
    get = CallRecord("dynamodb.GetItem", 1, {}, response={"Item": {"pk": {"S": "z"}}})
    bill = price(Measured([query, get], {1: "sqs"}, {}), existing=True, batch=10, fns=FNS, index_list=[])
    assert bill.units["rru"] == 2 + 0.5  # 6 KB strongly consistent; a small eventually consistent item
    assert round(bill.units["sqs_requests"], 6) == 0.2 and round(bill.units["lambda_requests"], 6) == 0.1


# -- being online (issue 23): the idle user-hours from fixed measured records ------------------
def _heartbeat() -> Measured:
    """A long-poll heartbeat as measured: the connection read, four small updates, one presence check."""
    item = {"pk": {"S": "C#lp-x"}, "sk": {"S": "C#lp-x"}, "expires_at": {"N": "1"}}
    get = CallRecord("dynamodb.GetItem", 1, {"ConsistentRead": True}, response={"Item": item})
    updates = [_update(item) for _ in range(4)]
    check = CallRecord("sqs.SendMessage", 1, {"MessageBody": "{}"})
    return Measured([get, *updates, check], {1: "rest"}, {})


def _update(item: dict) -> CallRecord:
    spec = {"TableName": "t-connections", "Key": {"pk": item["pk"], "sk": item["sk"]},
            "UpdateExpression": "SET expires_at = :e"}
    return _write("dynamodb.UpdateItem", spec, item)


def test_a_heartbeat_is_a_rest_request_run_by_the_rest_function() -> None:
    bill = price(_heartbeat(), existing=True, batch=10, fns=FNS_REST, index_list=[])
    assert bill.units["rest_requests"] == 1 and bill.units["lambda_requests"] == 1
    assert bill.units["ws_messages"] == 0
    assert bill.units["lambda_ms"] == 5 + 5 * 5 + 8  # python + 5 small calls + the SendMessage
    assert bill.units["lambda_dollars_duration"] == pytest.approx(0.125 * 0.038 * LAMBDA_GB_S["arm64"])
    assert bill.dollars()["API Gateway REST requests"] == pytest.approx(3.50 / 1e6)


def test_the_idle_long_poll_hour_runs_no_function_while_it_waits() -> None:
    bill = price(_heartbeat(), existing=True, batch=10, fns=FNS_REST, index_list=[])
    hour = idle_lp_hour(bill, SEED)
    waits, beats = 3600 / 20, 3600 / SEED.lp_heartbeat_seconds  # 180 held polls, 6.7 heartbeats
    assert hour.units["http_requests"] == waits
    assert hour.units["rest_requests"] == beats
    # Lambda: per heartbeat the REST function, the authorizer, a tenth of the presence check's run
    assert hour.units["lambda_requests"] == pytest.approx(beats * (1 + 1 + 0.1))
    # SQS: every wait is one ReceiveMessage; a heartbeat's check is sent, received and deleted (batches of 10)
    assert hour.units["sqs_requests"] == pytest.approx(waits + beats * (1 + 0.2))
    assert hour.units["wru"] == beats * 4 and hour.units["rru"] == beats * (1 + 1)
    # CloudWatch Logs: the authorizer's run and a tenth of the check's batch run, Lambda's lines only
    # (this heartbeat is hand-built, without its own measured lines)
    assert hour.units["log_bytes"] == pytest.approx(beats * 1.1 * PLATFORM_LOG_BYTES)
    expected = (waits * (1.00 + 0.40) + beats * (3.50 + 4 * 0.625 + 2 * 0.125 + 1.2 * 0.40 + 2.1 * 0.20)) / 1e6 \
        + beats * (bill.units["lambda_dollars_duration"] + 0.125 * 0.005 * LAMBDA_GB_S["arm64"]) \
        + beats * 1.1 * PLATFORM_LOG_BYTES / 1e9 * (0.50 + 0.15 * 0.03 * 30 / (365 / 12))
    assert hour.total() == pytest.approx(expected)
    assert hour.total() <= 0.001


def test_the_idle_websocket_hour_prices_keepalive_slots_and_the_pings_in_them() -> None:
    ping = CallRecord("dynamodb.GetItem", 1, {"ConsistentRead": True}, response={"Item": {"pk": {"S": "x"}}})
    pong = CallRecord("apigatewaymanagementapi.PostToConnection", 1, {}, size=20)
    bill = price(Measured([ping, pong], {1: "websocket"}, {}), existing=True, batch=10, fns=FNS_REST, index_list=[])
    assert bill.units["ws_messages"] == 2  # the ping frame and its answer
    hour = idle_ws_hour(bill, Scale(keepalive_seconds=600, ping_seconds=1200))
    # 6 slots, 3 of them pings (2 messages: the frame and its pong) and 3 unanswered keepalives (1 each)
    assert hour.units["ws_messages"] == 3 * 2 + 3 * 1
    assert hour.units["lambda_requests"] == 3 and hour.units["rru"] == 3
    expected = 60 * 0.25 / 1e6 + 9 * 1.00 / 1e6 + 3 * (0.20 + 0.125) / 1e6 + 3 * bill.units["lambda_dollars_duration"]
    assert hour.total() == pytest.approx(expected)
    answered = idle_ws_hour(bill, Scale(keepalive_seconds=600, ping_seconds=1200, keepalive_answered=True))
    assert answered.units["ws_messages"] == 12 and answered.total() == pytest.approx(expected + 3 * 1.00 / 1e6)


def test_a_check_that_runs_three_times_is_priced_three_times_and_queued_by_each_run_before() -> None:
    """A WebSocket ping's settle check runs 3 times (settle_runs_per_move; tests/test_presence.py):
    3 shares of a run, and 2 more SendMessages (each run after the first was queued by the one before)."""
    bill = price(_heartbeat(), existing=True, batch=10, fns=FNS_REST, index_list=[])
    once, thrice = with_jobs(bill), with_jobs(bill, runs=3)
    assert thrice["sqs_requests"] - once["sqs_requests"] == pytest.approx(2 * (1 + 0.2))
    assert thrice["rru"] - once["rru"] == pytest.approx(2) and thrice["lambda_requests"] - once["lambda_requests"] \
        == pytest.approx(2 * 0.1)

def test_the_day_counts_keepalives_and_pings_in_the_same_slots() -> None:
    day = per_day(SEED)
    assert day.keepalives + day.pings == pytest.approx(SEED.ws_users * 86_400 / 540)
    assert day.lp_waits == pytest.approx(SEED.lp_users * 86_400 / 20)
    assert day.lp_heartbeats == pytest.approx(SEED.lp_users * 86_400 / 540)


# -- CloudWatch Logs: what an invocation writes to its log ------------------------------------
def test_a_measured_send_logs_its_message_stored_line_and_its_metrics_at_the_deployed_level(
        provisioned: dict[str, str]) -> None:
    app_logger = logging.getLogger("webim")
    level = app_logger.level
    app_logger.setLevel(logging.DEBUG)  # not the deployed level: the measurement must not count DEBUG lines
    try:
        steady = measure_exchange(provisioned, other_connections=0).steady
        assert app_logger.level == logging.DEBUG  # the measurement's level is put back
    finally:
        app_logger.setLevel(level)
    assert steady is not None and deployed_log_level() == "INFO"
    send, ack = sorted(n for n, kind in steady.kinds.items() if kind == "websocket")
    lines = [json.loads(line) for line in steady.logs[send].splitlines()]
    stored = [line for line in lines if line.get("event") == "message_stored"]
    assert len(stored) == 1 and stored[0]["level"] == "INFO" and stored[0]["seq"] >= 2
    assert stored[0]["xray_trace_id"] and stored[0]["request_id"]  # the keys a line has on Lambda
    emf = [line for line in lines if "_aws" in line]  # the invocation's metrics: one EMF line
    assert len(emf) == 1 and emf[0]["MessagesStored"] == [1.0]
    assert not any(line.get("level") == "DEBUG" for line in lines)  # no `pushed` lines at INFO
    assert "x" * 100 not in steady.logs[send]  # never a message's text
    assert steady.log_bytes[send] == log_event_bytes(steady.logs[send]) + PLATFORM_LOG_BYTES
    assert steady.log_bytes[send] > len(json.dumps(stored[0])) + PLATFORM_LOG_BYTES
    # the ack's invocation logs its push's metric, not the send's line
    assert "message_stored" not in steady.logs[ack] and '"Pushes"' in steady.logs[ack]


def test_log_bytes_are_priced_as_cloudwatch_logs_ingestion_and_storage() -> None:
    send = CallRecord("dynamodb.GetItem", 1, {}, response={"Item": {"pk": {"S": "z"}}})
    check = CallRecord("dynamodb.GetItem", 2, {}, response={"Item": {"pk": {"S": "z"}}})
    measured = Measured([send, check], {1: "websocket", 2: "sqs"}, {},
                        {1: 1000 + PLATFORM_LOG_BYTES, 2: 100 + PLATFORM_LOG_BYTES})
    bill = price(measured, existing=True, batch=10, fns=FNS, index_list=[])
    # a frame's invocation logs its lines and Lambda's; a check its lines and a tenth of a batch's
    assert bill.units["log_bytes"] == pytest.approx(1000 + PLATFORM_LOG_BYTES + 100 + PLATFORM_LOG_BYTES / 10)
    assert LOG_RETENTION_DAYS == 30  # infra/template.yaml's LogRetentionDays default
    gb = bill.units["log_bytes"] / 1e9
    assert bill.dollars()["CloudWatch Logs ingestion"] == pytest.approx(gb * 0.50)
    assert bill.dollars()["CloudWatch Logs storage"] == pytest.approx(gb * 0.15 * 0.03 * 30 / (365 / 12))
    assert by_service(dict(bill.units))["CloudWatch Logs"] == pytest.approx(
        bill.dollars()["CloudWatch Logs ingestion"] + bill.dollars()["CloudWatch Logs storage"])
    # measured without its logs: no log bytes priced
    assert price(Measured([send], {1: "websocket"}, {}), existing=True, batch=10, fns=FNS,
                 index_list=[]).units["log_bytes"] == 0


def test_platform_lines_are_lambdas_text_format_with_the_xray_line() -> None:
    # START 70 B, END 51 B, REPORT with its XRAY line 233 B, and 26 B per event
    assert PLATFORM_LOG_BYTES == 70 + 51 + 233 + 3 * 26
    assert log_event_bytes('{"a":1}\n{"b":2}\n') == 7 + 7 + 2 * 26
