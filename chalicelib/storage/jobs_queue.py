"""The ack-timeout queue: delayed jobs that the app's SQS handler runs later.

A job is a JSON object with a `kind` and its own fields; it crosses as `Job` (its kind, and
the whole object, kind included, as an immutable mapping). SQS delivers at least once and in
no order, so every job handler must be idempotent.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

MAX_DELAY_SECONDS = 900  # SQS per-message DelaySeconds ceiling


class JobsQueue:
    def __init__(self, client: Any, queue_url: str) -> None:
        self._client = client  # a boto3 SQS client
        self._url = queue_url

    def enqueue(self, kind: str, delay_seconds: int = 0, **fields: Any) -> None:
        if not 0 <= delay_seconds <= MAX_DELAY_SECONDS:
            raise ValueError(f"delay_seconds must be within 0..{MAX_DELAY_SECONDS}")
        self._client.send_message(
            QueueUrl=self._url,
            MessageBody=json.dumps({"kind": kind, **fields}, separators=(",", ":")),
            DelaySeconds=delay_seconds,
        )

    def retry_later(self, jobs: list[tuple[str, int]]) -> None:
        """Make received jobs (receipt handle, seconds) visible again after those seconds,
        instead of after the queue's visibility timeout: one ChangeMessageVisibilityBatch per
        10. A job SQS no longer holds (deleted, its receipt expired) is skipped by SQS."""
        for start in range(0, len(jobs), 10):
            entries = [{"Id": str(i), "ReceiptHandle": receipt, "VisibilityTimeout": seconds}
                       for i, (receipt, seconds) in enumerate(jobs[start:start + 10])]
            self._client.change_message_visibility_batch(QueueUrl=self._url, Entries=entries)


@dataclass(frozen=True)
class Job:
    kind: str
    fields: Mapping[str, Any]  # the job's JSON object, `kind` included

    def get(self, name: str) -> Any:
        """One field (None when absent)."""
        return self.fields.get(name)


def parse_job(body: str) -> Job:
    job = json.loads(body)
    if not isinstance(job, dict) or not isinstance(job.get("kind"), str):
        raise ValueError("a job is a JSON object with a string 'kind'")
    return Job(job["kind"], MappingProxyType(job))
