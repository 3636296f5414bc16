"""Queued jobs: dispatch by kind; unknown or malformed jobs fail so SQS redrives them, alone
(a partial batch response), never re-running the rest of their batch."""
from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import pytest

from chalicelib.errors import UnknownJobError
from chalicelib.logic.jobs import JobRunner, QueuedJob
from chalicelib.storage.jobs_queue import JobsQueue
from chalicelib.wiring import Services, install_services
from devstack.events import sqs_event
from devstack.invoker import LambdaInvoker
from devstack.server import STAGE, load_app
from devstack.sqs_source import SqsEventSource


def test_runs_the_handler_of_the_jobs_kind() -> None:
    seen: list[dict[str, Any]] = []
    JobRunner({"check": seen.append}).run(json.dumps({"kind": "check", "seq": 3}))
    assert seen == [{"kind": "check", "seq": 3}]


@pytest.mark.parametrize("body", ["nope", "[]", json.dumps({"seq": 1}), json.dumps({"kind": 5})])
def test_malformed_job_raises(body: str) -> None:
    with pytest.raises(ValueError):
        JobRunner({}).run(body)


def test_unknown_kind_raises_so_the_message_is_redriven() -> None:
    with pytest.raises(UnknownJobError):
        JobRunner({}).run(json.dumps({"kind": "mystery"}))


def test_enqueue_sends_a_delayed_json_job(provisioned: dict[str, str]) -> None:
    sqs = boto3.client("sqs")
    url = provisioned["JOBS_QUEUE_URL"]
    JobsQueue(sqs, url).enqueue("check", delay_seconds=5, seq=9)
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessagesDelayed"])
    assert attributes["Attributes"]["ApproximateNumberOfMessagesDelayed"] == "1"
    with pytest.raises(ValueError):
        JobsQueue(sqs, url).enqueue("check", delay_seconds=901)


def test_a_batch_runs_every_job_and_names_the_ones_that_failed() -> None:
    seen: list[int] = []

    def check(job: dict[str, Any]) -> None:
        if job["n"] == 2:
            raise RuntimeError("this one breaks")
        seen.append(job["n"])

    batch = [("m1", json.dumps({"kind": "check", "n": 1})), ("m2", json.dumps({"kind": "check", "n": 2})),
             ("m3", "not json"), ("m4", json.dumps({"kind": "mystery"})), ("m5", json.dumps({"kind": "check", "n": 5}))]
    assert JobRunner({"check": check}).run_batch(batch) == ["m2", "m3", "m4"]
    assert seen == [1, 5]


@pytest.fixture
def app_jobs(provisioned: dict[str, str]) -> Iterator[tuple[list[int], dict[str, Any]]]:
    """The product's SQS handler behind the local stack's SQS event source, on the template's
    queues, with a recording job kind in place of the real ones."""
    os.environ.update(provisioned)
    ran: list[int] = []
    probe = JobRunner({"probe": lambda job: ran.append(job["n"])})
    install_services(dataclasses.replace(Services.from_env(), jobs=probe))
    invoker = LambdaInvoker(load_app(), stage=STAGE)
    queues = {config.queue or "": provisioned["JOBS_QUEUE_URL"] for config in invoker.sqs_handlers()}
    executor = ThreadPoolExecutor(max_workers=4)
    source = SqsEventSource(invoker, boto3.client("sqs"), executor, poll_interval=3600, retry_visibility=0,
                            queue_urls=queues)
    try:
        yield ran, {"start": source.start, **provisioned}
    finally:
        source.stop()
        executor.shutdown(wait=True)
        install_services(None)


def test_one_bad_job_is_redriven_alone_and_the_others_run_once(app_jobs: tuple[list[int], dict[str, Any]]) -> None:
    ran, stack = app_jobs
    sqs = boto3.client("sqs")
    jobs = [{"kind": "probe", "n": 1}, {"kind": "probe", "n": 2}, {"kind": "no-such-kind"}, {"kind": "probe", "n": 3}]
    sqs.send_message_batch(QueueUrl=stack["JOBS_QUEUE_URL"],
                           Entries=[{"Id": str(i), "MessageBody": json.dumps(j)} for i, j in enumerate(jobs)])
    stack["start"]()  # all four wait: the first batch holds them all

    def dead() -> list[dict[str, Any]]:
        got = sqs.receive_message(QueueUrl=stack["DEAD_LETTER_QUEUE_URL"], MaxNumberOfMessages=10)
        return [json.loads(m["Body"]) for m in got.get("Messages", [])]

    deadline = time.monotonic() + 30
    while not (dead_letters := dead()):
        assert time.monotonic() < deadline, "the bad job never reached the dead-letter queue"
        time.sleep(0.05)
    assert dead_letters == [{"kind": "no-such-kind"}]  # after the template's maxReceiveCount (5) tries
    assert sorted(ran) == [1, 2, 3]  # once each, although their batch had a failure
    attributes = sqs.get_queue_attributes(QueueUrl=stack["JOBS_QUEUE_URL"], AttributeNames=["All"])["Attributes"]
    assert attributes["ApproximateNumberOfMessages"] == attributes["ApproximateNumberOfMessagesNotVisible"] == "0"


def test_a_failed_job_is_handed_back_after_a_backoff_growing_with_its_receives() -> None:
    handed: list[list[tuple[str, int]]] = []

    def check(job: dict[str, Any]) -> None:
        if job["n"] != 2:
            raise RuntimeError("this one breaks")

    batch = [QueuedJob("m1", json.dumps({"kind": "check", "n": 1}), "r1", receives=1),
             QueuedJob("m2", json.dumps({"kind": "check", "n": 2}), "r2", receives=1),
             QueuedJob("m3", json.dumps({"kind": "check", "n": 3}), "r3", receives=3)]
    assert JobRunner({"check": check}).run_batch(batch, retry=handed.append) == ["m1", "m3"]
    assert handed == [[("r1", 2), ("r3", 8)]]  # one call for the batch; 2 s, then doubled per receive


def test_a_batch_near_its_timeout_starts_no_more_jobs_and_hands_them_back_at_once() -> None:
    """A batch the function's timeout would kill holds its jobs for the whole visibility
    timeout: the runner stops starting jobs before that and returns the rest at once."""
    ran: list[int] = []
    handed: list[list[tuple[str, int]]] = []
    left = iter([30_000, 12_000, 9_000, 8_000])  # what the Lambda context says before each job
    batch = [QueuedJob(f"m{n}", json.dumps({"kind": "check", "n": n}), f"r{n}") for n in range(4)]
    failed = JobRunner({"check": lambda job: ran.append(job["n"])}).run_batch(
        batch, retry=handed.append, time_left_ms=lambda: next(left))
    assert ran == [0, 1] and failed == ["m2", "m3"]
    assert handed == [[("r2", 0), ("r3", 0)]]


def test_a_failed_job_returns_after_its_backoff_not_the_visibility_timeout(provisioned: dict[str, str]) -> None:
    """Regression (issue 21, finding 11): a failed ack check came back only after the queue's
    visibility timeout (360 s then), stretching retransmission from 10/40/130 s to ~370 s.
    Through the product's SQS handler, as Lambda invokes it with a received batch."""
    os.environ.update(provisioned)
    attempts: list[int] = []

    def flaky(job: dict[str, Any]) -> None:
        attempts.append(job["n"])
        if len(attempts) == 1:
            raise RuntimeError("a store call failed after its retries")

    install_services(dataclasses.replace(Services.from_env(), jobs=JobRunner({"probe": flaky})))
    try:
        invoker = LambdaInvoker(load_app(), stage=STAGE)
        config, = invoker.sqs_handlers()
        sqs = boto3.client("sqs")
        url = provisioned["JOBS_QUEUE_URL"]
        visibility = int(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["VisibilityTimeout"])
                         ["Attributes"]["VisibilityTimeout"])
        sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"kind": "probe", "n": 1}))
        received = sqs.receive_message(QueueUrl=url, AttributeNames=["All"])["Messages"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        assert invoker.sqs(config, sqs_event(arn, received)) == [received[0]["MessageId"]]
        failed_at = time.monotonic()
        # it is received again after the backoff (2 s), long before the visibility timeout
        again: list[dict[str, Any]] = []
        while not again:
            assert time.monotonic() - failed_at < visibility / 2, "the failed job waited for the visibility timeout"
            again = sqs.receive_message(QueueUrl=url, AttributeNames=["All"], WaitTimeSeconds=1).get("Messages", [])
        assert again[0]["MessageId"] == received[0]["MessageId"]
        assert again[0]["Attributes"]["ApproximateReceiveCount"] == "2"  # counted for the redrive
        assert invoker.sqs(config, sqs_event(arn, again)) == []  # the retry succeeds
        assert attempts == [1, 1]
    finally:
        install_services(None)
