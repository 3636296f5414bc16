"""The SQS event source: polls each queue an `on_sqs_message` handler names and invokes it
the way Lambda's event source mapping does.

Batches of up to `batch_size` (gathered for up to the batching window). As a mapping with
ReportBatchItemFailures (which `make deploy` turns on): the records the handler names in
`batchItemFailures` stay for their visibility timeout and redrive, the others are deleted; a
handler that raises (or answers an invalid response) leaves the whole batch. SQS itself (moto)
honours delays and visibility timeouts in real time, and moves a message to the dead-letter
queue after `maxReceiveCount` receives. In the fault mode (devstack/faults.py, `dup_job`) a
message is delivered a second time, in a batch of its own after its first.

It receives when a message is due, not on a timer: moto tells it of every message added to a
queue (with its delay), so it sleeps until the earliest one is visible. A ReceiveMessage every
50 ms cost more CPU than the rest of a message exchange's AWS calls together (moto scans the
queue, delayed messages included, on each). A slow look every `poll_interval` catches what no
send announces (a visibility timeout running out).

It is AWS's machinery, not the app's: it receives, deletes and changes visibility through moto's
SQS backend directly (`MotoQueue`), as boto3 through moto's routing would, under the same lock,
without the client's work (signing, serialising, parsing) that Lambda's own poller does not
charge to the function.
"""
from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

from chalice.app import SQSEventConfig

from devstack import faults
from devstack.embedded_aws import moto_lock
from devstack.events import sqs_event
from devstack.invoker import LambdaInvoker

log = logging.getLogger("devstack.sqs")

MAX_RECEIVE = 10  # SQS ReceiveMessage ceiling per call
WINDOW_LOOK = 0.05  # how often a batching window looks for more
DUE_MARGIN = 0.002  # moto counts a message visible only strictly after its time, in ms

# Told (queue name, epoch seconds the message becomes visible) of every message moto adds.
_listeners: list[Callable[[str, float], None]] = []
_hook_lock = threading.Lock()
_hooked = False


def _announce_added_messages() -> None:
    """Make moto announce each message it adds to a queue, with the time it becomes visible."""
    global _hooked
    with _hook_lock:
        if _hooked:
            return
        from moto.sqs.models import Queue  # noqa: PLC0415  (the local stack's SQS only)

        original = Queue.add_message

        def add_message(queue: Queue, message: Any) -> None:
            original(queue, message)
            due = max(message.delayed_until, message.visible_at) / 1000
            for listener in list(_listeners):
                listener(queue.name, due)

        Queue.add_message = add_message  # type: ignore[method-assign,assignment]
        _hooked = True


# ReceiveMessage's system attributes, as moto answers AttributeNames=["All"] (in its order)
_OPTIONAL_ATTRIBUTES = (("MessageDeduplicationId", "deduplication_id"), ("MessageGroupId", "group_id"))


class MotoQueue:
    """One queue of moto's SQS backend, called as boto3's ReceiveMessage (all attributes, all
    message attributes), DeleteMessageBatch and ChangeMessageVisibilityBatch would."""

    def __init__(self, queue_url: str) -> None:
        from moto.sqs.models import sqs_backends  # noqa: PLC0415  (the local stack's SQS only)

        host, _, path = queue_url.partition("://")[2].partition("/")
        account, self.name = path.split("/")[:2]
        region = host.split(".")[1] if host.startswith("sqs.") else host.split(".")[0]
        self._backend = sqs_backends[account][region]

    def receive(self, count: int) -> list[dict[str, Any]]:
        with moto_lock:
            queue: Any = self._backend.get_queue(self.name)
            found = self._backend.receive_message(self.name, count, 0, queue.visibility_timeout, ["All"])
            return [self._as_received(m) for m in found]

    @staticmethod
    def _as_received(message: Any) -> dict[str, Any]:
        received: dict[str, Any] = {"MessageId": message.id, "ReceiptHandle": message.receipt_handle,
                                    "MD5OfBody": message.body_md5, "Body": message.body}
        if message.message_attributes:
            received["MessageAttributes"] = {k: dict(v) for k, v in message.message_attributes.items()}
            received["MD5OfMessageAttributes"] = message.attribute_md5
        attributes = {"SenderId": message.sender_id, "SentTimestamp": str(message.sent_timestamp),
                      "ApproximateReceiveCount": str(message.approximate_receive_count),
                      "ApproximateFirstReceiveTimestamp": str(message.approximate_first_receive_timestamp)}
        for name, field in _OPTIONAL_ATTRIBUTES:
            if getattr(message, field) is not None:
                attributes[name] = getattr(message, field)
        trace = (message.system_attributes or {}).get("AWSTraceHeader")
        if trace:
            attributes["AWSTraceHeader"] = trace.get("StringValue")
        if message.sequence_number is not None:
            attributes["SequenceNumber"] = message.sequence_number
        received["Attributes"] = attributes
        return received

    def delete(self, entries: list[dict[str, Any]]) -> None:
        with moto_lock:
            self._backend.delete_message_batch(self.name, entries)

    def change_visibility(self, entries: list[dict[str, Any]]) -> None:
        with moto_lock:
            self._backend.change_message_visibility_batch(self.name, entries)


class SqsEventSource:
    def __init__(
        self,
        invoker: LambdaInvoker,
        sqs: Any,
        executor: Executor,
        poll_interval: float = 1.0,
        retry_visibility: int | None = None,
        max_concurrent_batches: int = 4,
        queue_urls: dict[str, str] | None = None,
    ) -> None:
        self._invoker = invoker
        self._sqs = sqs  # a boto3 SQS client (to find the queues)
        self._queues: dict[str, MotoQueue] = {}  # URL -> moto's queue
        self._executor = executor
        self._poll_interval = poll_interval  # the slow look for what no send announced
        self._wake = threading.Condition()
        self._due: dict[str, list[float]] = {}  # queue name -> heap of times messages become visible
        # On failure Lambda leaves the batch until its visibility timeout ends. Locally a
        # shorter retry can be asked for, so redrive is observable in seconds, not minutes.
        self._retry_visibility = retry_visibility
        self._slots = threading.Semaphore(max_concurrent_batches)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        # handler queue name -> URL, where the name the app was imported with is not the
        # queue's (tests importing app.py before provisioning a stage of another name)
        self._queue_urls = queue_urls or {}

    def _heard(self, queue_name: str, due: float) -> None:
        with self._wake:
            heap = self._due.get(queue_name)
            if heap is not None:
                heapq.heappush(heap, due + DUE_MARGIN)
                self._wake.notify_all()

    def _sleep_until_due(self, queue_name: str) -> None:
        """Until a message of this queue is due, the slow look's time, or stop."""
        look_at = time.time() + self._poll_interval
        with self._wake:
            heap = self._due[queue_name]
            while not self._stop.is_set():
                now = time.time()
                if heap and heap[0] <= now:
                    while heap and heap[0] <= now:
                        heapq.heappop(heap)
                    return
                wait = min(look_at, heap[0] if heap else look_at) - now
                if wait <= 0:
                    return
                self._wake.wait(wait)

    def start(self) -> None:
        _announce_added_messages()
        _listeners.append(self._heard)
        for config in self._invoker.sqs_handlers():
            queue_url = self._queue_urls.get(config.queue or "")
            if queue_url is None:
                queue_url = self._sqs.get_queue_url(QueueName=config.queue)["QueueUrl"]
            arn = self._sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
                "Attributes"
            ]["QueueArn"]
            self._due.setdefault(queue_url.rsplit("/", 1)[-1], [])
            self._queues[queue_url] = MotoQueue(queue_url)
            thread = threading.Thread(
                target=self._poll, args=(config, queue_url, arn), name=f"sqs-{config.name}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        with self._wake:
            self._wake.notify_all()
        if self._heard in _listeners:
            _listeners.remove(self._heard)
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
            if batch:
                # wait for a free slot, but not past stop(): the executor is shut down then, and
                # a submit would raise (the batch stays invisible in the queue, as on a crash)
                while not self._slots.acquire(timeout=0.2):
                    if self._stop.is_set():
                        return
                try:
                    if self._stop.is_set():
                        raise RuntimeError("stopped")
                    self._executor.submit(self._run_batch, config, queue_url, arn, batch)
                except RuntimeError:  # stopped, or the executor shut down just now
                    self._slots.release()
                    return
            if len(batch) < config.batch_size:
                # every visible message was taken: the next one is announced when it is due
                self._sleep_until_due(queue_url.rsplit("/", 1)[-1])

    def _receive_batch(self, config: SQSEventConfig, queue_url: str) -> list[dict[str, Any]]:
        window_ends = time.monotonic() + (config.maximum_batching_window_in_seconds or 0)
        batch: list[dict[str, Any]] = []
        while len(batch) < config.batch_size:
            received = self._queues[queue_url].receive(min(MAX_RECEIVE, config.batch_size - len(batch)))
            batch.extend(received)
            if time.monotonic() >= window_ends or self._stop.is_set():
                break
            if not received:  # within a batching window: look again shortly
                self._stop.wait(min(self._poll_interval, WINDOW_LOOK))
        return batch

    def _run_batch(self, config: SQSEventConfig, queue_url: str, arn: str, batch: list[dict[str, Any]]) -> None:
        try:
            failed = set(self._invoker.sqs(config, sqs_event(arn, batch)))
            entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)]
            done = [e for e, m in zip(entries, batch, strict=True) if m["MessageId"] not in failed]
            kept = [e for e, m in zip(entries, batch, strict=True) if m["MessageId"] in failed]
            if done:
                self._queues[queue_url].delete(done)
            if kept and self._retry_visibility is not None:
                self._queues[queue_url].change_visibility(
                    [{**e, "VisibilityTimeout": self._retry_visibility} for e in kept])
                self._heard(queue_url.rsplit("/", 1)[-1], time.time() + self._retry_visibility)
            # the fault mode's duplicate delivery (devstack/faults.py): SQS is at-least-once
            twice = [m for m in batch if faults.chance("dup_job")]
            if twice:
                log.warning("fault: %d job(s) delivered a second time", len(twice))
                self._invoker.sqs(config, sqs_event(arn, twice))
        except Exception:
            log.exception("finishing a batch of %s failed", config.queue)
        finally:
            self._slots.release()
