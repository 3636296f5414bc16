"""The SQS event source: delays honoured, batches, delete on success, redrive on failure, partial
batch responses read as an event source mapping with ReportBatchItemFailures reads them."""
from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import pytest

from devstack.invoker import LambdaInvoker, batch_item_failures
from devstack.sqs_source import SqsEventSource
from tests import recording_app


@pytest.fixture
def idle_queues(aws: None) -> Iterator[dict[str, Any]]:
    """The queues, and no event source yet: a test calls `start_source` when its messages wait."""
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
    yield {"jobs": jobs, "dead": dlq, "start": source.start}
    source.stop()
    executor.shutdown(wait=True)


@pytest.fixture
def queues(idle_queues: dict[str, Any]) -> dict[str, Any]:
    idle_queues["start"]()
    return idle_queues


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
    # a redriven message is not retried: a marker sent now is received and run, so the poller
    # went round again after the redrive (and a poison still queued would have come with it)
    sqs.send_message(QueueUrl=queues["jobs"], MessageBody="marker")
    wait_until(lambda: "marker" in [b for b, _ in handled()])
    assert [b for b, _ in handled()].count("poison") == 2


def dead_letters(url: str) -> list[str]:
    received = boto3.client("sqs").receive_message(QueueUrl=url, MaxNumberOfMessages=10)
    return [m["Body"] for m in received.get("Messages", [])]


def send_waiting(idle_queues: dict[str, Any], bodies: list[str]) -> None:
    """All visible before the event source starts, so its first batch holds every one."""
    boto3.client("sqs").send_message_batch(
        QueueUrl=idle_queues["jobs"], Entries=[{"Id": str(i), "MessageBody": b} for i, b in enumerate(bodies)])
    idle_queues["start"]()


def test_one_failed_record_is_retried_alone_and_the_others_run_once(idle_queues: dict[str, Any]) -> None:
    send_waiting(idle_queues, ["a", "bad", "b", "c"])
    wait_until(lambda: dead_letters(idle_queues["dead"]) == ["bad"])
    assert sorted(body for body, _ in recording_app.sqs_batches[0]) == ["a", "b", "bad", "c"]
    # the batch response named "bad" only: it alone came back (maxReceiveCount 2), then redrive
    assert [[body for body, _ in batch] for batch in recording_app.sqs_batches[1:]] == [["bad"]]
    assert queue_is_empty(idle_queues["jobs"])  # the others were deleted: they cannot run again


def test_a_raising_handler_fails_the_whole_batch(idle_queues: dict[str, Any]) -> None:
    send_waiting(idle_queues, ["a", "poison", "b"])
    wait_until(lambda: sorted(dead_letters(idle_queues["dead"])) == ["a", "b", "poison"])
    assert [sorted(body for body, _ in batch) for batch in recording_app.sqs_batches] == [["a", "b", "poison"]] * 2
    assert queue_is_empty(idle_queues["jobs"])


@pytest.mark.parametrize(("response", "failed"), [
    (None, []),
    ({}, []),
    ({"batchItemFailures": None}, []),
    ({"batchItemFailures": []}, []),
    ({"batchItemFailures": [{"itemIdentifier": "m2"}]}, ["m2"]),
    ({"batchItemFailures": [{"itemIdentifier": "m1"}, {"itemIdentifier": "m3"}]}, ["m1", "m3"]),
    # invalid: Lambda fails the whole batch
    ({"batchItemFailures": [{"itemIdentifier": ""}]}, None),
    ({"batchItemFailures": [{"itemIdentifier": None}]}, None),
    ({"batchItemFailures": [{"itemId": "m1"}]}, None),
    ({"batchItemFailures": [{"itemIdentifier": "elsewhere"}]}, None),
    ({"batchItemFailures": "m1"}, None),
    ("ok", None),
])
def test_batch_responses_are_read_as_lambda_reads_them(response: Any, failed: list[str] | None) -> None:
    assert batch_item_failures(response, ["m1", "m2", "m3"]) == failed


def test_stop_while_a_received_batch_waits_for_a_slot_ends_the_poll_cleanly(idle_queues: dict[str, Any]) -> None:
    """The poll thread received a batch and waits for a free slot when the stack stops: it must
    end without submitting to the executor the server is shutting down (that raised
    `RuntimeError: cannot schedule new futures after shutdown` in the thread, an error at teardown)."""
    sqs = boto3.client("sqs")
    executor = ThreadPoolExecutor(max_workers=2)
    source = SqsEventSource(LambdaInvoker(recording_app.app), sqs, executor, poll_interval=3600,
                            max_concurrent_batches=1)
    sqs.send_message(QueueUrl=idle_queues["jobs"], MessageBody="hold")
    source.start()
    wait_until(lambda: len(recording_app.sqs_batches) == 1)  # the one slot is taken
    sqs.send_message(QueueUrl=idle_queues["jobs"], MessageBody="waits")
    attributes = ["ApproximateNumberOfMessagesNotVisible"]
    wait_until(lambda: sqs.get_queue_attributes(QueueUrl=idle_queues["jobs"], AttributeNames=attributes)
               ["Attributes"]["ApproximateNumberOfMessagesNotVisible"] == "2")  # received, waiting for the slot
    source.stop()
    executor.shutdown(wait=False)
    recording_app.release_holds.set()  # the slot frees after the shutdown
    executor.shutdown(wait=True)
    assert [[body for body, _ in batch] for batch in recording_app.sqs_batches] == [["hold"]]
