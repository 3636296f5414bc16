"""The SQS event source: polls each queue an `on_sqs_message` handler names and invokes it
the way Lambda's event source mapping does.

Batches of up to `batch_size` (gathered for up to the batching window); the batch is
deleted when the handler returns and left for redrive when it raises. SQS itself (moto)
honours delays and visibility timeouts in real time, and moves a message to the dead-letter
queue after `maxReceiveCount` receives.
"""
from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Executor
from typing import Any

from chalice.app import SQSEventConfig

from devstack.events import sqs_event
from devstack.invoker import LambdaInvoker

log = logging.getLogger("devstack.sqs")

MAX_RECEIVE = 10  # SQS ReceiveMessage ceiling per call


class SqsEventSource:
    def __init__(
        self,
        invoker: LambdaInvoker,
        sqs: Any,
        executor: Executor,
        poll_interval: float = 0.05,
        retry_visibility: int | None = None,
        max_concurrent_batches: int = 4,
        queue_urls: dict[str, str] | None = None,
    ) -> None:
        self._invoker = invoker
        self._sqs = sqs  # a boto3 SQS client
        self._executor = executor
        self._poll_interval = poll_interval
        # On failure Lambda leaves the batch until its visibility timeout ends. Locally a
        # shorter retry can be asked for, so redrive is observable in seconds, not minutes.
        self._retry_visibility = retry_visibility
        self._slots = threading.Semaphore(max_concurrent_batches)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        # handler queue name -> URL, where the name the app was imported with is not the
        # queue's (tests importing app.py before provisioning a stage of another name)
        self._queue_urls = queue_urls or {}

    def start(self) -> None:
        for config in self._invoker.sqs_handlers():
            queue_url = self._queue_urls.get(config.queue or "")
            if queue_url is None:
                queue_url = self._sqs.get_queue_url(QueueName=config.queue)["QueueUrl"]
            arn = self._sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
                "Attributes"
            ]["QueueArn"]
            thread = threading.Thread(
                target=self._poll, args=(config, queue_url, arn), name=f"sqs-{config.name}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)

    def _poll(self, config: SQSEventConfig, queue_url: str, arn: str) -> None:
        while not self._stop.is_set():
            try:
                batch = self._receive_batch(config, queue_url)
            except Exception:
                log.exception("polling %s failed", config.queue)
                self._stop.wait(1.0)
                continue
            if not batch:
                self._stop.wait(self._poll_interval)
                continue
            self._slots.acquire()
            self._executor.submit(self._run_batch, config, queue_url, arn, batch)

    def _receive_batch(self, config: SQSEventConfig, queue_url: str) -> list[dict[str, Any]]:
        window_ends = time.monotonic() + (config.maximum_batching_window_in_seconds or 0)
        batch: list[dict[str, Any]] = []
        while len(batch) < config.batch_size:
            received = self._sqs.receive_message(
                QueueUrl=queue_url,
                MaxNumberOfMessages=min(MAX_RECEIVE, config.batch_size - len(batch)),
                WaitTimeSeconds=0,
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
            ).get("Messages", [])
            batch.extend(received)
            if time.monotonic() >= window_ends or self._stop.is_set():
                break
            if not received:
                self._stop.wait(self._poll_interval)
        return batch

    def _run_batch(self, config: SQSEventConfig, queue_url: str, arn: str, batch: list[dict[str, Any]]) -> None:
        try:
            ok = self._invoker.sqs(config, sqs_event(arn, batch))
            entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)]
            if ok:
                self._sqs.delete_message_batch(QueueUrl=queue_url, Entries=entries)
            elif self._retry_visibility is not None:
                self._sqs.change_message_visibility_batch(
                    QueueUrl=queue_url,
                    Entries=[{**e, "VisibilityTimeout": self._retry_visibility} for e in entries],
                )
        except Exception:
            log.exception("finishing a batch of %s failed", config.queue)
        finally:
            self._slots.release()
