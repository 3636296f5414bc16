"""The SQS event source: delays honoured, batches, delete on success, redrive on failure."""
from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import pytest

from devstack.invoker import LambdaInvoker
from devstack.sqs_source import SqsEventSource
from tests import recording_app


@pytest.fixture
def queues(aws: None) -> Iterator[dict[str, str]]:
    recording_app.reset()
    sqs = boto3.client("sqs")
    dlq = sqs.create_queue(QueueName="recording-dead")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    jobs = sqs.create_queue(
        QueueName="recording-jobs",
        Attributes={"RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 2})},
    )["QueueUrl"]
    executor = ThreadPoolExecutor(max_workers=8)
    # No slow look within any test's deadline: every receive here is woken by a send, a delay
    # running out or a retry (the event source sleeps until a message is due).
    source = SqsEventSource(LambdaInvoker(recording_app.app), sqs, executor, poll_interval=3600,
                            retry_visibility=0)
    source.start()
    yield {"jobs": jobs, "dead": dlq}
    source.stop()
    executor.shutdown(wait=True)


def handled() -> list[tuple[str, float]]:
    return [item for batch in recording_app.sqs_batches for item in batch]


def wait_until(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def queue_is_empty(url: str) -> bool:
    attributes = boto3.client("sqs").get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    keys = ("ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed")
    return all(attributes[k] == "0" for k in keys)


def test_delayed_message_runs_only_after_its_delay(queues: dict[str, str]) -> None:
    sent_at = time.time()
    boto3.client("sqs").send_message(QueueUrl=queues["jobs"], MessageBody="later", DelaySeconds=2)
    boto3.client("sqs").send_message(QueueUrl=queues["jobs"], MessageBody="now")
    wait_until(lambda: len(handled()) == 2)
    times = dict(handled())
    assert times["later"] - sent_at >= 2.0
    assert times["now"] < times["later"]
    wait_until(lambda: queue_is_empty(queues["jobs"]))  # deleted after success


def test_messages_arrive_in_batches_of_at_most_batch_size(queues: dict[str, str]) -> None:
    sqs = boto3.client("sqs")
    sqs.send_message_batch(
        QueueUrl=queues["jobs"],
        Entries=[{"Id": str(i), "MessageBody": f"m{i}"} for i in range(7)],
    )
    wait_until(lambda: len(handled()) == 7)
    assert sorted(body for body, _ in handled()) == [f"m{i}" for i in range(7)]
    assert all(1 <= len(batch) <= 5 for batch in recording_app.sqs_batches)
    assert any(len(batch) > 1 for batch in recording_app.sqs_batches)


def test_failed_batch_is_retried_then_redriven_to_the_dead_letter_queue(queues: dict[str, str]) -> None:
    sqs = boto3.client("sqs")
    sqs.send_message(QueueUrl=queues["jobs"], MessageBody="poison")
    wait_until(lambda: [b for b, _ in handled()].count("poison") == 2)

    def dead_letters() -> list[str]:
        received = sqs.receive_message(QueueUrl=queues["dead"], MaxNumberOfMessages=10)
        return [m["Body"] for m in received.get("Messages", [])]

    wait_until(lambda: dead_letters() == ["poison"])
    time.sleep(0.3)  # let the poller go round again: a redriven message is not retried
    assert [b for b, _ in handled()].count("poison") == 2
