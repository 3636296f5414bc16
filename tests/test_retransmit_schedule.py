"""protocol.md §9e: retransmission checks are due 10, 40 and 130 s after the send (ack timeout
10 s, backoff x3), measured as the DelaySeconds each check is queued with, on an injected clock.

On the local stack they were observed at 10.6 / 54.2 / 147.2 s under load: each check was
scheduled from the moment the previous one ran, so every late run pushed the later ones back.
"""
from __future__ import annotations

import json
from typing import Any

import boto3
import pytest

from chalicelib.logic.frames import SendRequest
from chalicelib.logic.messaging import Messaging, MessagingParts
from chalicelib.principal import Identity
from chalicelib.settings import Settings
from chalicelib.storage.jobs_queue import JobsQueue
from chalicelib.storage.members import MembersTable
from chalicelib.storage.messages import MessagesTable
from tests.messaging_fixtures import Harness, build_harness

ALICE = Identity("user", "alice")
BOB = Identity("user", "bob")
SENT_AT = 1_800_000_000.0


class FakeSqs:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send_message(self, **call: Any) -> None:
        self.sent.append(call)


class Clock:
    def __init__(self) -> None:
        self.now = SENT_AT

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def harness(provisioned: dict[str, str]) -> Harness:
    h = build_harness(provisioned)
    h.connect("a1", ALICE)
    h.connect("b1", BOB)  # bob is connected and never acks
    return h


def messaging(harness: Harness, env: dict[str, str], sqs: FakeSqs, clock: Clock) -> Messaging:
    settings = Settings.from_env(env)
    dynamodb = boto3.resource("dynamodb")
    return Messaging(MessagingParts(MessagesTable(dynamodb.Table(settings.messages_table), settings.members_table),
                                    MembersTable(dynamodb.Table(settings.members_table)), harness.services.router,
                                    JobsQueue(sqs, "https://queue")), ack_timeout_seconds=10, clock=clock)


def due_times(sqs: FakeSqs, enqueued_at: list[float]) -> list[float]:
    return [at + call["DelaySeconds"] - SENT_AT for at, call in zip(enqueued_at, sqs.sent, strict=True)]


def test_checks_are_due_10_40_130_s_after_the_send_even_when_a_check_runs_late(
        harness: Harness, provisioned: dict[str, str]) -> None:
    sqs, clock = FakeSqs(), Clock()
    service = messaging(harness, provisioned, sqs, clock)
    service.send(ALICE, SendRequest.parse({"id": "m1", "text": "hi", "to": BOB.to_json()}))
    enqueued_at = [clock.now]
    for runs_at in (SENT_AT + 15, SENT_AT + 41):  # the first check 5 s late, the second 1 s
        clock.now = runs_at
        service.ack_check.run(json.loads(sqs.sent[-1]["MessageBody"]), max_attempts=3)
        enqueued_at.append(runs_at)
    assert [call["DelaySeconds"] for call in sqs.sent] == [10, 25, 89]
    assert due_times(sqs, enqueued_at) == [10, 40, 130]
    # each late run still retransmitted (bob got the message 1 + 2 times)
    assert len(harness.frames_to("b1", "message")) == 3


def test_a_check_past_its_due_time_queues_the_next_without_delay(
        harness: Harness, provisioned: dict[str, str]) -> None:
    sqs, clock = FakeSqs(), Clock()
    service = messaging(harness, provisioned, sqs, clock)
    service.send(ALICE, SendRequest.parse({"id": "m1", "text": "hi", "to": BOB.to_json()}))
    clock.now = SENT_AT + 50  # the queue was 40 s behind: check 2 is already due
    service.ack_check.run(json.loads(sqs.sent[-1]["MessageBody"]), max_attempts=3)
    assert sqs.sent[-1]["DelaySeconds"] == 0


def test_a_job_queued_before_the_send_time_was_recorded_backs_off_from_now(
        harness: Harness, provisioned: dict[str, str]) -> None:
    sqs, clock = FakeSqs(), Clock()
    service = messaging(harness, provisioned, sqs, clock)
    service.send(ALICE, SendRequest.parse({"id": "m1", "text": "hi", "to": BOB.to_json()}))
    job = json.loads(sqs.sent[-1]["MessageBody"])
    del job["sent_ms"]
    service.ack_check.run(job, max_attempts=3)
    assert sqs.sent[-1]["DelaySeconds"] == 30
