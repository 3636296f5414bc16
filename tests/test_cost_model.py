"""The cost model's arithmetic (bench/cost.py): DynamoDB item sizes, write units with the
index writes of infra/template.yaml, read units by consistency, frames and SQS requests."""
from __future__ import annotations

import json

from bench.call_count import CallRecord, Measured
from bench.cost import Functions, Index, changed_attributes, indexes, item_size, price

MEMBERS = Index("members", ("pk", "last_time"), "ALL")
FNS = Functions((256, "arm64"), (256, "arm64"))


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
