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
from chalicelib.logic.jobs import JobRunner
from chalicelib.storage.jobs_queue import JobsQueue
from chalicelib.wiring import Services, install_services
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
    url = provisioned["ACK_TIMEOUT_QUEUE_URL"]
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
    queues = {config.queue or "": provisioned["ACK_TIMEOUT_QUEUE_URL"] for config in invoker.sqs_handlers()}
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
    sqs.send_message_batch(QueueUrl=stack["ACK_TIMEOUT_QUEUE_URL"],
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
    attributes = sqs.get_queue_attributes(QueueUrl=stack["ACK_TIMEOUT_QUEUE_URL"], AttributeNames=["All"])["Attributes"]
    assert attributes["ApproximateNumberOfMessages"] == attributes["ApproximateNumberOfMessagesNotVisible"] == "0"
