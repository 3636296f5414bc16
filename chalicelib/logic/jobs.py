"""Queued jobs: the SQS handler's dispatch table from a job's `kind` to its handler.

SQS redelivers, duplicates and reorders; every job handler must be idempotent. A job of an
unknown kind raises, so the message is retried and finally redriven to the dead-letter queue.

A batch reports its failed jobs one by one (`run_batch`): the others are deleted and never run
again because of a neighbour (the event source mapping's ReportBatchItemFailures). A failed job
does not wait out the queue's visibility timeout either (an ack check that failed would stretch
the retransmission schedule by it): its visibility is cut to a short backoff that grows with
its receive count (2, 4, 8, 16 s), which SQS counts for the redrive to the dead-letter queue.
A batch also stops starting jobs when its invocation nears its timeout and hands the rest back
at once, so a batch is never killed by the timeout with jobs it never began.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from chalicelib.errors import UnknownJobError
from chalicelib.observability import bind, module_logger, start_job
from chalicelib.storage.jobs_queue import parse_job

JobHandler = Callable[[dict[str, Any]], None]
# (receipt handle, seconds until the job is visible again) for each job handed back
Retry = Callable[[list[tuple[str, int]]], None]
log = module_logger(__name__)  # JSON, with the invocation's keys

RETRY_BASE_SECONDS = 2  # a failed job's first retry; doubled at each receive
RETRY_MAX_SECONDS = 60
# A batch starts no job with less time left than this (the function's timeout is 20 s,
# .chalice/config.json): a job takes well under it, a group fan-out page of 100 a few seconds.
START_MARGIN_MS = 10_000


@dataclass(frozen=True)
class QueuedJob:
    """One SQS record of a batch."""

    message_id: str
    body: str
    receipt_handle: str = ""
    receives: int = 1  # ApproximateReceiveCount: 1 on the first delivery

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> QueuedJob:
        """From a record of Lambda's SQS event."""
        receives = str((record.get("attributes") or {}).get("ApproximateReceiveCount", "1"))
        return cls(str(record["messageId"]), str(record.get("body", "")), str(record.get("receiptHandle", "")),
                   int(receives) if receives.isdigit() else 1)


def retry_delay(receives: int) -> int:
    """Seconds before a job that failed at its `receives`-th delivery runs again."""
    return int(min(RETRY_BASE_SECONDS * 2 ** max(0, receives - 1), RETRY_MAX_SECONDS))


class JobRunner:
    def __init__(self, handlers: dict[str, JobHandler] | None = None) -> None:
        self._handlers: dict[str, JobHandler] = dict(handlers or {})

    def run(self, body: str) -> None:
        start_job()  # none of the previous job's keys
        job = parse_job(body)
        bind(job=job.kind, conversation_id=job.get("conversation_id"), seq=job.get("seq"))
        handler = self._handlers.get(job.kind)
        if handler is None:
            raise UnknownJobError(f"no handler for job kind {job.kind!r}")
        handler(dict(job.fields))

    def run_batch(self, jobs: Iterable[QueuedJob | tuple[str, str]], retry: Retry | None = None,
                  time_left_ms: Callable[[], int] | None = None) -> list[str]:
        """Runs every job of a batch; returns the message ids of those that failed or were not
        started (for the partial batch response).

        One job's failure does not stop the others (a standard queue has no order to keep).
        `retry` makes each failed job visible again after its backoff, and each job not started
        (less than START_MARGIN_MS left, by `time_left_ms`) at once; without it they wait out
        the queue's visibility timeout."""
        failed: list[str] = []
        handed_back: list[tuple[str, int]] = []
        for item in jobs:
            job = item if isinstance(item, QueuedJob) else QueuedJob(*item)
            if time_left_ms is not None and time_left_ms() < START_MARGIN_MS:
                failed.append(job.message_id)  # not started: back to the queue now
                handed_back.append((job.receipt_handle, 0))
                continue
            try:
                self.run(job.body)
            except Exception:
                delay = retry_delay(job.receives)
                log.exception("job failed; it is retried after a backoff",
                              extra={"message_id": job.message_id, "receives": job.receives,
                                     "retry_in": delay if retry is not None else None})
                failed.append(job.message_id)
                handed_back.append((job.receipt_handle, delay))
        handed_back = [(receipt, delay) for receipt, delay in handed_back if receipt]
        if retry is not None and handed_back:
            try:
                retry(handed_back)
            except Exception:  # they come back after the visibility timeout instead
                log.exception("failed jobs could not be handed back early")
        return failed
