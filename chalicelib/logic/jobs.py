"""Queued jobs: the SQS handler's dispatch table from a job's `kind` to its handler.

SQS redelivers, duplicates and reorders; every job handler must be idempotent. A job of an
unknown kind raises, so the message is retried and finally redriven to the dead-letter queue.
A batch reports its failed jobs one by one (`run_batch`): the others are deleted and never run
again because of a neighbour (the event source mapping's ReportBatchItemFailures).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from chalicelib.errors import UnknownJobError
from chalicelib.observability import bind, module_logger, start_job
from chalicelib.storage.jobs_queue import parse_job

JobHandler = Callable[[dict[str, Any]], None]
log = module_logger(__name__)  # JSON, with the invocation's keys


class JobRunner:
    def __init__(self, handlers: dict[str, JobHandler] | None = None) -> None:
        self._handlers: dict[str, JobHandler] = dict(handlers or {})

    def run(self, body: str) -> None:
        start_job()  # none of the previous job's keys
        job = parse_job(body)
        bind(job=job["kind"], conversation_id=job.get("conversation_id"), seq=job.get("seq"))
        handler = self._handlers.get(job["kind"])
        if handler is None:
            raise UnknownJobError(f"no handler for job kind {job['kind']!r}")
        handler(job)

    def run_batch(self, jobs: Iterable[tuple[str, str]]) -> list[str]:
        """Runs every (message id, body) of a batch; returns the ids of the jobs that failed.

        One job's failure does not stop the others (a standard queue has no order to keep)."""
        failed: list[str] = []
        for message_id, body in jobs:
            try:
                self.run(body)
            except Exception:
                log.exception("job failed; it is retried after the visibility timeout",
                              extra={"message_id": message_id})
                failed.append(message_id)
        return failed
