"""Contract: the local stack's flat `transact_write_items` (devstack/moto_transactions.py) answers
every transaction exactly as plain moto does and leaves the same tables behind; it only stops
copying whole tables (and keeping every model object) to do so."""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.core.model_instances import model_data
from moto.dynamodb.models import DynamoDBBackend, dynamodb_backends
from moto.dynamodb.models.dynamo_type import Item

from devstack import moto_transactions
from devstack.embedded_aws import REGION, EmbeddedAws, fake_credentials

A, B = "contract-a", "contract-b"  # A: hash key pk; B: pk + numeric sk, as the app's tables


@pytest.fixture(autouse=True)
def restore_patch() -> Iterator[None]:
    saved_env = dict(os.environ)
    fake_credentials()
    was = moto_transactions.installed()
    try:
        yield
    finally:
        if was:
            moto_transactions.install()
        else:
            moto_transactions.uninstall()
        os.environ.clear()
        os.environ.update(saved_env)


def backend() -> DynamoDBBackend:
    return dynamodb_backends[DEFAULT_ACCOUNT_ID][REGION]


def s(value: str) -> dict[str, str]:
    return {"S": value}


def n(value: int) -> dict[str, str]:
    return {"N": str(value)}


def create_tables(client: Any) -> None:
    client.create_table(TableName=A, BillingMode="PAY_PER_REQUEST",
                        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}])
    client.create_table(TableName=B, BillingMode="PAY_PER_REQUEST",
                        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"},
                                   {"AttributeName": "sk", "KeyType": "RANGE"}],
                        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                              {"AttributeName": "sk", "AttributeType": "N"}])
    for pk, v in (("a1", 1), ("a2", 2), ("a3", 3)):
        client.put_item(TableName=A, Item={"pk": s(pk), "v": n(v)})
    for pk, sk, body in (("c1", 0, "head"), ("c1", 1, "x"), ("c1", 2, "y"), ("c2", 1, "z")):
        client.put_item(TableName=B, Item={"pk": s(pk), "sk": n(sk), "body": s(body)})


def tables() -> dict[str, Any]:
    """What a client sees (scans, in moto's order) and how moto holds it (range buckets included:
    a read of a missing range key creates an empty bucket, which a rollback must remove)."""
    client = boto3.client("dynamodb", region_name=REGION)
    seen: dict[str, Any] = {name: client.scan(TableName=name, ConsistentRead=True)["Items"] for name in (A, B)}
    seen["held"] = {
        A: [str(h) for h in backend().tables[A].items],
        B: [(str(h), [str(r) for r in bucket]) for h, bucket in backend().tables[B].items.items()],
    }
    return seen


def outcome(call: Callable[[], Any]) -> dict[str, Any]:
    try:
        response = call()
    except ClientError as error:
        return {"error": type(error).__name__, "code": error.response["Error"]["Code"],
                "message": error.response["Error"]["Message"],
                "reasons": error.response.get("CancellationReasons")}
    except Exception as error:  # noqa: BLE001 - a backend-level call raises moto's own exceptions
        return {"error": type(error).__name__, "message": str(error),
                "reasons": getattr(error, "cancellation_reasons", None)}
    if isinstance(response, dict):
        response = {k: v for k, v in response.items() if k != "ResponseMetadata"}
    return {"returned": response}


def run(patched: bool, transaction: Callable[[Any], Any]) -> dict[str, Any]:
    if patched:
        moto_transactions.install()
    else:
        moto_transactions.uninstall()
    with mock_aws():
        client = boto3.client("dynamodb", region_name=REGION)
        create_tables(client)
        before = tables()
        result = outcome(lambda: transaction(client))
        return {"result": result, "tables": tables(), "unchanged": tables() == before}


def both(transaction: Callable[[Any], Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    return run(False, transaction), run(True, transaction)


def transact(items: list[dict[str, Any]]) -> Callable[[Any], Any]:
    return lambda client: client.transact_write_items(TransactItems=items)


# Entries that write (one of each kind, both tables, a new range bucket): a failure after them
# must undo every one, a re-inserted deleted item back in its place in moto's scan order.
WRITES: list[dict[str, Any]] = [
    {"Put": {"TableName": A, "Item": {"pk": s("a9"), "v": n(9)}, "ConditionExpression": "attribute_not_exists(pk)"}},
    {"Update": {"TableName": B, "Key": {"pk": s("c1"), "sk": n(0)}, "UpdateExpression": "SET last_seq = :n",
                "ExpressionAttributeValues": {":n": n(3)}}},
    {"Delete": {"TableName": A, "Key": {"pk": s("a1")}}},
    {"Update": {"TableName": A, "Key": {"pk": s("a2")}, "UpdateExpression": "ADD v :one",
                "ExpressionAttributeValues": {":one": n(1)}}},
    {"Put": {"TableName": B, "Item": {"pk": s("c9"), "sk": n(1), "body": s("new")}}},
    {"Update": {"TableName": B, "Key": {"pk": s("c8"), "sk": n(0)}, "UpdateExpression": "SET created = :t",
                "ExpressionAttributeValues": {":t": n(1)}}},
    {"ConditionCheck": {"TableName": B, "Key": {"pk": s("c7"), "sk": n(1)},
                        "ConditionExpression": "attribute_not_exists(pk)"}},
]


def failing(kind: str, all_old: bool) -> dict[str, Any]:
    extra = {"ReturnValuesOnConditionCheckFailure": "ALL_OLD"} if all_old else {}
    if kind == "exists":  # attribute_not_exists on an existing item
        return {"Put": {"TableName": B, "Item": {"pk": s("c1"), "sk": n(1), "body": s("again")},
                        "ConditionExpression": "attribute_not_exists(pk)", **extra}}
    if kind == "mismatch":  # a value that differs
        return {"Update": {"TableName": B, "Key": {"pk": s("c1"), "sk": n(2)}, "UpdateExpression": "SET body = :b",
                           "ConditionExpression": "body = :expected",
                           "ExpressionAttributeValues": {":b": s("new"), ":expected": s("not y")}, **extra}}
    if kind == "missing":  # attribute_exists on a missing item (a read that creates an empty bucket)
        return {"ConditionCheck": {"TableName": B, "Key": {"pk": s("c5"), "sk": n(1)},
                                   "ConditionExpression": "attribute_exists(pk)", **extra}}
    raise AssertionError(kind)


def test_success_across_two_tables() -> None:
    plain, patched = both(transact(WRITES))
    assert patched == plain
    assert "returned" in plain["result"]
    assert not plain["unchanged"]


@pytest.mark.parametrize("where", ["first", "middle", "last"])
@pytest.mark.parametrize("all_old", [False, True])
@pytest.mark.parametrize("kind", ["exists", "mismatch", "missing"])
def test_condition_failures(kind: str, all_old: bool, where: str) -> None:
    at = {"first": 0, "middle": len(WRITES) // 2, "last": len(WRITES)}[where]
    items = [*WRITES[:at], failing(kind, all_old), *WRITES[at:]]
    plain, patched = both(transact(items))
    assert patched == plain
    assert plain["result"]["code"] == "TransactionCanceledException"
    reasons = plain["result"]["reasons"]
    assert [r["Code"] for r in reasons] == ["None"] * at + ["ConditionalCheckFailed"] + ["None"] * (len(WRITES) - at)
    assert ("Item" in reasons[at]) == (all_old and kind != "missing")
    assert plain["unchanged"]


def test_two_failures_report_both() -> None:
    plain, patched = both(transact([failing("exists", True), *WRITES, failing("mismatch", False)]))
    assert patched == plain
    assert [r["Code"] for r in plain["result"]["reasons"]].count("ConditionalCheckFailed") == 2


def test_missing_table_is_that_entry_s_reason() -> None:
    plain, patched = both(transact([*WRITES[:3], {"Put": {"TableName": "nowhere", "Item": {"pk": s("x")}}}]))
    assert patched == plain
    assert plain["unchanged"]


def test_duplicate_item_after_writes() -> None:
    duplicate = {"Update": {"TableName": A, "Key": {"pk": s("a9")}, "UpdateExpression": "SET w = :w",
                            "ExpressionAttributeValues": {":w": n(1)}}}
    plain, patched = both(transact([*WRITES, duplicate]))
    assert patched == plain
    assert plain["result"]["code"] == "ValidationException"
    assert plain["unchanged"]


@pytest.mark.parametrize(("update", "code"), [
    # does not parse: moto raises it for the whole request
    ({"UpdateExpression": "SET = :v", "ExpressionAttributeValues": {":v": n(1)}}, "ValidationException"),
    # parses, but names a value it was not given: moto makes it that entry's reason
    ({"UpdateExpression": "SET body = :undefined"}, "TransactionCanceledException"),
])
def test_validation_error_mid_transaction(update: dict[str, Any], code: str) -> None:
    bad = {"Update": {"TableName": B, "Key": {"pk": s("c2"), "sk": n(1)}, **update}}
    plain, patched = both(transact([*WRITES[:4], bad, *WRITES[4:]]))
    assert patched == plain
    assert plain["result"]["code"] == code
    assert plain["unchanged"]


def test_more_than_100_items() -> None:
    items = [{"Put": {"TableName": A, "Item": {"pk": s(f"k{i}")}}} for i in range(101)]
    plain, patched = both(transact(items))
    assert patched == plain
    assert plain["result"]["code"] == "ValidationException"
    assert plain["unchanged"]


def test_unsupported_operation_is_that_entry_s_reason() -> None:
    """boto3 refuses it before sending; the backend's own answer is compared."""
    items = [*WRITES[:2], {"Get": {"TableName": A, "Key": {"pk": s("a1")}}}]
    plain, patched = both(lambda client: backend().transact_write_items(items))
    assert patched == plain
    assert plain["result"]["error"] == "TransactionCanceledException"
    assert plain["unchanged"]


def test_two_operations_in_one_entry_rolls_back_as_dynamodb_does() -> None:
    """The one deliberate difference: DynamoDB rejects the request whole; moto keeps the entries
    before it written."""
    double = {"Put": {"TableName": A, "Item": {"pk": s("d")}}, "Delete": {"TableName": A, "Key": {"pk": s("a3")}}}
    plain, patched = both(transact([*WRITES, double]))
    assert patched["result"] == plain["result"]
    assert plain["result"]["code"] == "ValidationException"
    assert not plain["unchanged"]
    assert patched["unchanged"]


def items_made_by_one_send(stored: int) -> int:
    """Item objects created by a one-item transaction into a table holding `stored` items (counted
    with moto's own instance tracking, switched on for this)."""
    with mock_aws():
        client = boto3.client("dynamodb", region_name=REGION)
        create_tables(client)
        for i in range(stored):
            backend().put_item(B, {"pk": s("c1"), "sk": n(100 + i), "body": s("m")})
        before = len(Item.instances_tracked)  # type: ignore[attr-defined]
        client.transact_write_items(TransactItems=[
            {"Put": {"TableName": B, "Item": {"pk": s("c1"), "sk": n(99), "body": s("m")},
                     "ConditionExpression": "attribute_not_exists(pk)"}},
            {"Update": {"TableName": B, "Key": {"pk": s("c1"), "sk": n(0)}, "UpdateExpression": "SET last_seq = :n",
                        "ExpressionAttributeValues": {":n": n(99)}}},
        ])
        return len(Item.instances_tracked) - before  # type: ignore[attr-defined]


def test_cost_of_a_send_does_not_depend_on_stored_items() -> None:
    moto_transactions.uninstall()
    plain_empty, plain_full = items_made_by_one_send(0), items_made_by_one_send(300)
    moto_transactions.install()
    from moto.core.common_models import BaseModel
    BaseModel.__new__ = moto_transactions.ORIGINAL_MODEL_NEW  # type: ignore[method-assign]  # count them
    patched_empty, patched_full = items_made_by_one_send(0), items_made_by_one_send(300)
    assert plain_full - plain_empty >= 300  # plain moto copies the whole table
    assert patched_full == patched_empty


def test_no_model_object_is_kept() -> None:
    moto_transactions.install()

    def tracked() -> int:
        return sum(len(getattr(model, "instances_tracked", [])) for models in model_data.values()
                   for model in models.values())

    with mock_aws():
        client = boto3.client("dynamodb", region_name=REGION)
        create_tables(client)
        start = tracked()
        for i in range(50):
            client.transact_write_items(TransactItems=[
                {"Put": {"TableName": B, "Item": {"pk": s("c1"), "sk": n(100 + i)}}},
                {"Update": {"TableName": A, "Key": {"pk": s("a1")}, "UpdateExpression": "ADD v :one",
                            "ExpressionAttributeValues": {":one": n(1)}}},
            ])
        assert tracked() == start


def test_install_is_idempotent_and_reversible() -> None:
    moto_transactions.install()
    moto_transactions.install()
    assert moto_transactions.installed()
    assert DynamoDBBackend.transact_write_items is not moto_transactions.ORIGINAL_TRANSACT_WRITE_ITEMS
    moto_transactions.uninstall()
    assert not moto_transactions.installed()
    assert DynamoDBBackend.__dict__["transact_write_items"] is moto_transactions.ORIGINAL_TRANSACT_WRITE_ITEMS


def test_the_aws_fixture_runs_it(aws: None) -> None:
    assert moto_transactions.installed()


def test_the_local_stack_runs_it() -> None:
    moto_transactions.uninstall()
    stack = EmbeddedAws(stage="contract")
    stack.start()
    try:
        assert moto_transactions.installed()
    finally:
        stack.stop()
