"""Queued jobs: dispatch by kind; unknown or malformed jobs fail so SQS redrives them."""
from __future__ import annotations

import json
from typing import Any

import boto3
import pytest

from chalicelib.errors import UnknownJobError
from chalicelib.logic.jobs import JobRunner
from chalicelib.storage.jobs_queue import JobsQueue


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
