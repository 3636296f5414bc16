"""Contract: devstack/moto_speedups.py changes no answer of moto's. The same update cases
(each kind of action, each kind of refusal) run against plain and patched moto, twice in a row
(the second time through the patch's caches), and give identical answers and table contents."""
from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from devstack import moto_speedups
from devstack.embedded_aws import REGION, EmbeddedAws, fake_credentials

T = "speedups"  # pk + numeric sk, as the app's tables


@pytest.fixture(autouse=True)
def restore_patch() -> Iterator[None]:
    saved_env = dict(os.environ)
    fake_credentials()
    try:
        yield
    finally:
        moto_speedups.uninstall()
        os.environ.clear()
        os.environ.update(saved_env)


def s(value: str) -> dict[str, str]:
    return {"S": value}


def n(value: int) -> dict[str, str]:
    return {"N": str(value)}


KEY = {"pk": s("m"), "sk": n(1)}
MEMBER_UPSERT = (  # the project's own (storage/messages.py)
    "SET peer = if_not_exists(peer, :peer), acked_seq = if_not_exists(acked_seq, :zero), last_seq = :n, "
    "last_time = :t, last_sender = :s, preview = :p, read_seq = if_not_exists(read_seq, :zero) ADD writers :w"
)
UPSERT_VALUES = {":peer": s("u:b"), ":zero": n(0), ":n": n(7), ":t": n(1), ":s": s("u:a"), ":p": s("hi"),
                 ":w": {"SS": ["u:a"]}}

# (update expression, names, values): successes first, then one of each refusal
CASES: list[tuple[str, dict[str, str] | None, dict[str, Any] | None]] = [
    (MEMBER_UPSERT, None, UPSERT_VALUES),
    ("SET #u = :u, nested = :m", {"#u": "user"}, {":u": s("x"), ":m": {"M": {"a": n(1)}}}),
    ("SET nested.a = nested.a + :one, l = list_append(if_not_exists(l, :empty), :l)", None,
     {":one": n(1), ":empty": {"L": []}, ":l": {"L": [n(1)]}}),
    ("REMOVE preview, nested.a", None, None),
    ("ADD hits :one DELETE writers :w", None, {":one": n(1), ":w": {"SS": ["u:a"]}}),
    ("SET a = :one SET b = :one", None, {":one": n(1)}),  # two SET clauses
    ("ADD a :one ADD b :one", None, {":one": n(1)}),  # two ADD clauses
    ("SET a = :one, a = :two", None, {":one": n(1), ":two": n(2)}),  # the same path twice
    ("SET a = :one, b = :two, a.c = :one, b.d = :two", None, {":one": n(1), ":two": n(2)}),  # overlaps
    ("SET #a = :one, #b = :two", {"#a": "x", "#b": "x"}, {":one": n(1), ":two": n(2)}),  # by name
    ("SET pk = :one", None, {":one": s("other")}),  # a key attribute
    ("SET a = :missing", None, {":one": n(1)}),  # an undefined value
    ("SET a = #missing", None, None),  # an undefined name
    ("SET a = :one", {"#unused": "x"}, {":one": n(1)}),  # an unused name
    ("ADD last_sender :one", None, {":one": n(1)}),  # ADD a number to a string
    ("SET a = b + :one", None, {":one": n(1)}),  # a missing operand
    ("SET size = :one", None, {":one": n(1)}),  # a reserved word
    ("SET a = = :one", None, {":one": n(1)}),  # a syntax error
    ("SET a = :one,", None, {":one": n(1)}),  # a trailing comma
]


def run(patched: bool) -> list[dict[str, Any]]:
    if patched:
        moto_speedups.install()
    else:
        moto_speedups.uninstall()
    results: list[dict[str, Any]] = []
    with mock_aws():
        client = boto3.client("dynamodb", region_name=REGION)
        client.create_table(TableName=T, BillingMode="PAY_PER_REQUEST",
                            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"},
                                       {"AttributeName": "sk", "KeyType": "RANGE"}],
                            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                                  {"AttributeName": "sk", "AttributeType": "N"}])
        for _ in range(2):  # the second round goes through the caches
            for expression, names, values in CASES:
                call: dict[str, Any] = {"TableName": T, "Key": KEY, "UpdateExpression": expression,
                                        "ReturnValues": "ALL_NEW"}
                if names is not None:
                    call["ExpressionAttributeNames"] = names
                if values is not None:
                    call["ExpressionAttributeValues"] = values
                try:
                    result: dict[str, Any] = {"returned": client.update_item(**call)["Attributes"]}
                except ClientError as error:
                    result = {"code": error.response["Error"]["Code"], "message": error.response["Error"]["Message"]}
                result["table"] = client.scan(TableName=T, ConsistentRead=True)["Items"]
                results.append(result)
            # a transaction's updates go through the same parser and validators
            try:
                client.transact_write_items(TransactItems=[{"Update": {
                    "TableName": T, "Key": {"pk": s("m"), "sk": n(2)}, "UpdateExpression": MEMBER_UPSERT,
                    "ExpressionAttributeValues": UPSERT_VALUES}}])
                results.append({"transaction": client.scan(TableName=T, ConsistentRead=True)["Items"]})
            except ClientError as error:
                results.append({"transaction": error.response["Error"]})
    return results


def test_every_case_answers_as_plain_moto() -> None:
    plain, patched = run(False), run(True)
    assert [r.get("code") for r in plain if "code" in r]  # the refusals are there to compare
    assert len(plain) == len(patched)
    for case, (expected, got) in enumerate(zip(plain, patched, strict=True)):
        assert got == expected, (case, CASES[case % (len(CASES) + 1)] if case % (len(CASES) + 1) < len(CASES) else "tx")


def test_install_is_idempotent_and_reversible() -> None:
    from moto.dynamodb.parsing.expressions import UpdateExpressionParser  # noqa: PLC0415

    moto_speedups.install()
    moto_speedups.install()
    assert UpdateExpressionParser.make("SET a = :b") is UpdateExpressionParser.make("SET a = :b")
    moto_speedups.uninstall()
    assert UpdateExpressionParser.make("SET a = :b") is not UpdateExpressionParser.make("SET a = :b")


def test_the_local_stack_runs_it() -> None:
    from moto.dynamodb.parsing.expressions import UpdateExpressionParser  # noqa: PLC0415

    aws = EmbeddedAws(stage="speedups")
    aws.start()
    try:
        assert UpdateExpressionParser.make("SET a = :b") is UpdateExpressionParser.make("SET a = :b")
    finally:
        aws.stop()


def test_sqs_clock_reads_the_same_time_as_moto_s() -> None:
    from moto.core.utils import unix_time, unix_time_millis  # noqa: PLC0415

    for _ in range(100):
        before = unix_time()
        fast = moto_speedups._unix_time()
        after = unix_time()
        # moto rounds the nanoseconds to the microsecond, the patch truncates: at most 1 µs apart
        assert before - 1e-6 <= fast <= after + 1e-6
    fixed = datetime(2024, 1, 2, 3, 4, 5, 678901)  # a given time goes to moto's own
    assert moto_speedups._unix_time(fixed) == unix_time(fixed)
    assert moto_speedups._unix_time_millis(fixed) == unix_time_millis(fixed)
