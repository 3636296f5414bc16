"""Queued jobs: the SQS handler's dispatch table from a job's `kind` to its handler.

SQS redelivers, duplicates and reorders; every job handler must be idempotent. A job of an
unknown kind raises, so the message is retried and finally redriven to the dead-letter queue.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from chalicelib.errors import UnknownJobError
from chalicelib.storage.jobs_queue import parse_job

JobHandler = Callable[[dict[str, Any]], None]


class JobRunner:
    def __init__(self, handlers: dict[str, JobHandler] | None = None) -> None:
        self._handlers: dict[str, JobHandler] = dict(handlers or {})

    def run(self, body: str) -> None:
        job = parse_job(body)
        handler = self._handlers.get(job["kind"])
        if handler is None:
            raise UnknownJobError(f"no handler for job kind {job['kind']!r}")
        handler(job)
