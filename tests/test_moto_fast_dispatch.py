"""Contract: moto_speedups' fast dispatch path (DynamoDB and SQS JSON requests straight to their
handler, no werkzeug request, no URL search) gives moto's answers byte for byte. The same calls
(successes and each kind of refusal) run through plain moto's routing and through the fast path,
from the same seed of moto's random ids; every answer's status, headers and body are compared,
and the answers include the tables' and the queues' contents."""
from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws
from moto.core.botocore_stubber import BotocoreStubber
from moto.moto_api._internal import mock_random

from devstack import moto_speedups
from devstack.embedded_aws import REGION, fake_credentials

ORIGINAL = BotocoreStubber.process_request
# what legitimately differs between two runs: the clock
CLOCK = re.compile(rb"\b1[0-9]{12}\b|\b1[0-9]{9}(\.[0-9]+)?\b")


@pytest.fixture(autouse=True)
def restore() -> Iterator[None]:
    saved_env = dict(os.environ)
    fake_credentials()
    try:
        yield
    finally:
        moto_speedups.uninstall()
        BotocoreStubber.process_request = ORIGINAL  # type: ignore[method-assign]
        os.environ.clear()
        os.environ.update(saved_env)


def s(value: str) -> dict[str, str]:
    return {"S": value}


def calls(ddb: Any, sqs: Any) -> None:
    def attempt(fn: Any, **kwargs: Any) -> None:
        try:
            fn(**kwargs)
        except ClientError:
            pass  # the refusal's answer is recorded

    ddb.create_table(TableName="t", BillingMode="PAY_PER_REQUEST",
                     KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                     AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}])
    ddb.put_item(TableName="t", Item={"pk": s("a"), "v": {"N": "1"}})
    attempt(ddb.put_item, TableName="t", Item={"pk": s("a")}, ConditionExpression="attribute_not_exists(pk)")
    ddb.update_item(TableName="t", Key={"pk": s("a")}, UpdateExpression="ADD v :one",
                    ExpressionAttributeValues={":one": {"N": "1"}}, ReturnValues="ALL_NEW")
    ddb.get_item(TableName="t", Key={"pk": s("a")}, ConsistentRead=True)
    attempt(ddb.get_item, TableName="missing", Key={"pk": s("a")})
    attempt(ddb.get_item, TableName="t", Key={"wrong": s("a")})
    ddb.transact_write_items(TransactItems=[
        {"Put": {"TableName": "t", "Item": {"pk": s("b")}}},
        {"Update": {"TableName": "t", "Key": {"pk": s("a")}, "UpdateExpression": "SET w = :w",
                    "ExpressionAttributeValues": {":w": s("x")}}}])
    attempt(ddb.transact_write_items, TransactItems=[
        {"ConditionCheck": {"TableName": "t", "Key": {"pk": s("a")}, "ConditionExpression": "v = :z",
                            "ExpressionAttributeValues": {":z": {"N": "0"}}}}])
    ddb.query(TableName="t", KeyConditionExpression="pk = :a", ExpressionAttributeValues={":a": s("a")})
    ddb.scan(TableName="t", ConsistentRead=True)
    ddb.describe_table(TableName="t")

    url = sqs.create_queue(QueueName="q", Attributes={"VisibilityTimeout": "30"})["QueueUrl"]
    sqs.get_queue_url(QueueName="q")
    attempt(sqs.get_queue_url, QueueName="missing")
    sqs.send_message(QueueUrl=url, MessageBody="one",
                     MessageAttributes={"k": {"DataType": "String", "StringValue": "v"}})
    sqs.send_message(QueueUrl=url, MessageBody="later", DelaySeconds=60)
    received = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"],
                                   MessageAttributeNames=["All"]).get("Messages", [])
    for message in received:
        sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0)
    for message in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
        sqs.delete_message_batch(QueueUrl=url, Entries=[{"Id": "0", "ReceiptHandle": message["ReceiptHandle"]}])
    attempt(sqs.send_message, QueueUrl=url, MessageBody="")
    attempt(sqs.receive_message, QueueUrl=url + "-missing")
    sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages",
                                                          "ApproximateNumberOfMessagesDelayed"])
    sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])
    fifo = sqs.create_queue(QueueName="q.fifo", Attributes={"FifoQueue": "true",
                                                           "ContentBasedDeduplication": "true"})["QueueUrl"]
    for _ in range(2):  # the second is deduplicated by its content
        sqs.send_message(QueueUrl=fifo, MessageBody="same", MessageGroupId="g")
    attempt(sqs.send_message, QueueUrl=fifo, MessageBody="no group")
    sqs.receive_message(QueueUrl=fifo, MaxNumberOfMessages=10, AttributeNames=["All"])
    sqs.get_queue_attributes(QueueUrl=fifo, AttributeNames=["All"])


def run(fast: bool) -> list[tuple[int, dict[str, str], bytes]]:
    answers: list[tuple[int, dict[str, str], bytes]] = []

    def recording(self: BotocoreStubber, request: Any) -> Any:
        answer = moto_speedups.process_request(self, request)
        status, headers, body = answer
        raw = body.encode() if isinstance(body, str) else body
        kept = {k.lower(): str(v) for k, v in headers.items() if k.lower() not in ("date", "x-amz-crc32")}
        answers.append((status, kept, CLOCK.sub(b"T", raw)))
        return answer

    BotocoreStubber.process_request = recording  # type: ignore[method-assign]
    if fast:
        moto_speedups.install()
    else:
        moto_speedups.uninstall()
    mock_random.seed(12)
    with mock_aws():
        calls(boto3.client("dynamodb", region_name=REGION), boto3.client("sqs", region_name=REGION))
    return answers


def test_every_answer_is_moto_s() -> None:
    plain, fast = run(False), run(True)
    assert any(status >= 400 for status, _, _ in plain)  # the refusals are there to compare
    assert len(plain) == len(fast)
    for case, (expected, got) in enumerate(zip(plain, fast, strict=True)):
        assert got == expected, case


def test_the_fast_path_is_taken_and_switched_off_by_uninstall() -> None:
    taken: list[Any] = []
    original = moto_speedups._JsonRequest.__init__

    def counting(self: Any, *args: Any) -> None:
        taken.append(args[0])
        original(self, *args)

    moto_speedups._JsonRequest.__init__ = counting  # type: ignore[method-assign]
    try:
        run(True)
        assert len(taken) > 10
        taken.clear()
        run(False)
        assert taken == []
    finally:
        moto_speedups._JsonRequest.__init__ = original  # type: ignore[method-assign]


def test_retention_check_answers_as_moto_s() -> None:
    from moto.sqs.models import sqs_backends  # noqa: PLC0415

    with mock_aws():
        sqs = boto3.client("sqs", region_name=REGION)
        url = sqs.create_queue(QueueName="kept", Attributes={"MessageRetentionPeriod": "60"})["QueueUrl"]
        sqs.send_message(QueueUrl=url, MessageBody="x")
        backend = sqs_backends["123456789012"][REGION]
        message = backend.get_queue("kept")._messages[0]
        sent = message.sent_timestamp
        answers = {}
        for age_seconds in (0, 59, 61, 3600):  # kept, kept, expired, expired
            message.sent_timestamp = sent - age_seconds * 1000
            answers[age_seconds] = [ORIGINAL_RETENTION(backend, "kept", message),
                                    moto_speedups._retention_ok(backend, "kept", message)]
        assert answers == {0: [True, True], 59: [True, True], 61: [False, False], 3600: [False, False]}


ORIGINAL_RETENTION = moto_speedups.ORIGINAL_RETENTION


def shape(node: Any, inside: dict[int, int]) -> Any:
    """A node graph as plain data: classes, attributes, and each parent as its position in the walk."""
    from moto.dynamodb.parsing.ast_nodes import Node  # noqa: PLC0415

    if isinstance(node, list):
        return [shape(item, inside) for item in node]
    if not isinstance(node, Node):
        return node
    inside[id(node)] = len(inside)
    return (type(node).__name__, {k: ("parent", inside.get(id(v), "outside") if v is not None else None)
                                  if k == "parent" else shape(v, inside) for k, v in vars(node).items()})


def test_validator_tree_copy_is_deepcopy_s() -> None:
    import copy  # noqa: PLC0415

    from moto.dynamodb.parsing.expressions import UpdateExpressionParser  # noqa: PLC0415

    from tests.test_moto_speedups import CASES  # noqa: PLC0415

    copied = 0
    for expression, _, _ in CASES:
        try:
            tree = UpdateExpressionParser.make(expression)
        except Exception:  # noqa: BLE001  (the syntax-error cases)
            continue
        before = shape(tree, {})
        fast, plain = moto_speedups._validator_deepcopy(tree), copy.deepcopy(tree)
        assert shape(fast, {}) == shape(plain, {}) == before, expression
        assert fast is not tree and fast.children[0] is not tree.children[0]
        copied += 1
    assert copied > 10
