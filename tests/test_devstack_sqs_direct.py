"""Contract: the SQS event source's direct calls to moto's backend (`MotoQueue`) answer as boto3's
ReceiveMessage (AttributeNames/MessageAttributeNames "All"), DeleteMessageBatch and
ChangeMessageVisibilityBatch through moto's routing do: the same messages in the same shape,
the same queue contents after (visibility, receive counts, redrive to the dead-letter queue)."""
from __future__ import annotations

import json
from typing import Any

import boto3
from moto.moto_api._internal import mock_random

from devstack.sqs_source import MotoQueue


def scenario(direct: bool) -> list[Any]:
    """Sends of every kind, then receive / fail / receive again (redrive) / delete."""
    mock_random.seed(7)
    sqs = boto3.client("sqs")
    dead = sqs.create_queue(QueueName="direct-dead")["QueueUrl"]
    dead_arn = sqs.get_queue_attributes(QueueUrl=dead, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    url = sqs.create_queue(QueueName="direct-jobs", Attributes={
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dead_arn, "maxReceiveCount": 2})})["QueueUrl"]
    fifo = sqs.create_queue(QueueName="direct.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="plain")
    sqs.send_message(QueueUrl=url, MessageBody="with attributes", MessageAttributes={
        "s": {"DataType": "String", "StringValue": "v"}, "n": {"DataType": "Number", "StringValue": "1"},
        "b": {"DataType": "Binary", "BinaryValue": b"\x00\x01"}})
    sqs.send_message(QueueUrl=url, MessageBody="traced",
                     MessageSystemAttributes={"AWSTraceHeader": {"DataType": "String", "StringValue": "Root=1"}})
    sqs.send_message(QueueUrl=fifo, MessageBody="fifo", MessageGroupId="g", MessageDeduplicationId="d")
    queue, fifo_queue = MotoQueue(url), MotoQueue(fifo)

    def receive(which: str, count: int) -> list[dict[str, Any]]:
        if direct:
            return (queue if which == url else fifo_queue).receive(count)
        return list(sqs.receive_message(QueueUrl=which, MaxNumberOfMessages=count, WaitTimeSeconds=0,
                                        AttributeNames=["All"], MessageAttributeNames=["All"]).get("Messages", []))

    def entries(messages: list[dict[str, Any]], **extra: Any) -> list[dict[str, Any]]:
        return [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], **extra} for i, m in enumerate(messages)]

    seen: list[Any] = []
    for _ in range(3):  # receive, fail back to visible; the third receive is past maxReceiveCount
        got = receive(url, 10)
        seen.append(got)
        if direct:
            queue.change_visibility(entries(got, VisibilityTimeout=0))
        elif got:
            sqs.change_message_visibility_batch(QueueUrl=url, Entries=entries(got, VisibilityTimeout=0))
    got = receive(fifo, 10)
    seen.append(got)
    if direct:
        fifo_queue.delete(entries(got))
    else:
        sqs.delete_message_batch(QueueUrl=fifo, Entries=entries(got))
    for which in (url, fifo, dead):
        seen.append(sqs.get_queue_attributes(QueueUrl=which, AttributeNames=["All"])["Attributes"])
    seen.append(receive(dead, 10) if not direct else sqs.receive_message(
        QueueUrl=dead, MaxNumberOfMessages=10, AttributeNames=["All"], MessageAttributeNames=["All"]
    ).get("Messages", []))
    for which in (url, fifo, dead):
        sqs.delete_queue(QueueUrl=which)
    return seen


def comparable(value: Any) -> Any:
    """Timestamps differ between two runs, and receipt handles (moto's random draws for request
    ids, which the direct calls make none of, come between them); everything else must not."""
    if isinstance(value, dict):
        return {k: "T" if "Timestamp" in k else "R" if k == "ReceiptHandle" else comparable(v)
                for k, v in value.items()}
    if isinstance(value, list):
        return [comparable(v) for v in value]
    return value


def test_direct_calls_answer_as_boto3_through_moto(aws: None) -> None:
    through_boto3 = scenario(direct=False)
    direct = scenario(direct=True)
    assert any(through_boto3[0]) and through_boto3[-1]  # messages received, one redriven to the DLQ
    assert comparable(direct) == comparable(through_boto3)
