"""Long-poll doorbells on moto: every push rings its connection's SQS queue (what the wait API
hands a waiting client); a failed ring fails no push (the frame is in the mailbox, and the
client's next poll returns it); queues live exactly as long as their connections (open, close,
failed open, the sweeper); every ring is a body SQS takes.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from botocore.exceptions import EndpointConnectionError

from chalicelib.errors import RateLimitedError
from chalicelib.logic import longpoll
from chalicelib.logic.frames import Release
from chalicelib.logic.identity import Authenticator
from chalicelib.logic.limits import Limits, Rates
from chalicelib.logic.longpoll import LongPollSessions, LongPollTiming, WaitLine
from chalicelib.logic.presence import PresenceService
from chalicelib.logic.protocol import ProtocolCore
from chalicelib.principal import Identity
from chalicelib.routing.router import Router
from chalicelib.routing.sender import MailboxSender
from chalicelib.storage import doorbells as doorbells_module
from chalicelib.storage.connections import ConnectionsTable
from chalicelib.storage.doorbells import DoorbellQueues
from chalicelib.storage.jobs_queue import JobsQueue
from chalicelib.storage.mailbox import MailboxTable
from chalicelib.storage.members import MembersTable
from chalicelib.storage.presence import PresenceTable
from chalicelib.storage.rate_limits import RateLimitTable
from tests.doubles import RecordingSender

BOB = Identity("user", "bob")


class FailingRings:
    """An SQS client for rings whose every send fails, as an unreachable SQS would."""

    def send_message(self, **_: Any) -> None:
        raise EndpointConnectionError(endpoint_url="https://sqs.invalid")


class Clock:
    """Real time, moved forward by `offset` (a connection's window ends without waiting)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@dataclass
class Parts:
    sessions: LongPollSessions
    router: Router
    doorbells: DoorbellQueues
    sqs: Any
    clock: Clock

    def queues(self) -> set[str]:
        urls = self.sqs.list_queues(QueueNamePrefix=self.doorbells.prefix).get("QueueUrls", [])
        return {url.rsplit("/", 1)[-1][len(self.doorbells.prefix):] for url in urls}


def build(provisioned: dict[str, str], rings: Any = None, max_connections: int = 0,
          mailboxes: type[MailboxTable] = MailboxTable) -> Parts:
    session = boto3.session.Session()
    clock = Clock()
    sqs = session.client("sqs")
    table = session.resource("dynamodb").Table(provisioned["CONNECTIONS_TABLE"])
    doorbells = DoorbellQueues(sqs, rings or sqs, provisioned["JOBS_QUEUE_URL"].rsplit("/", 1)[0],
                               provisioned["LONG_POLL_QUEUE_PREFIX"])
    boxes = mailboxes(table)
    router = Router(ConnectionsTable(table, clock), RecordingSender(), 3600, clock,
                    long_poll_sender=MailboxSender(boxes, doorbells))
    members = MembersTable(session.resource("dynamodb").Table(provisioned["MEMBERS_TABLE"]))
    presence = PresenceService(PresenceTable(table), router, members,
                               JobsQueue(sqs, provisioned["JOBS_QUEUE_URL"]), 660, 5, clock)
    limits = Limits(RateLimitTable(session.resource("dynamodb").Table(provisioned["MESSAGES_TABLE"])), Rates(),
                    max_connections=max_connections, clock=clock, slots=PresenceTable(table))
    sessions = LongPollSessions(ProtocolCore(32 * 1024), router, boxes, presence,
                                LongPollTiming(window_seconds=30, clock=clock), limits=limits,
                                waits=WaitLine(doorbells, Authenticator(b"k" * 32, {}, clock=clock), "https://w/lp/wait"))
    return Parts(sessions, router, doorbells, sqs, clock)


def texts(answer: dict[str, Any]) -> list[str]:
    return [f.get("text", f["type"]) for f in answer["frames"]]


# -- rings ------------------------------------------------------------------------------------

def rings(parts: Parts, connection: str) -> list[dict[str, Any]]:
    got = parts.sqs.receive_message(QueueUrl=parts.doorbells.url(connection), MaxNumberOfMessages=10)
    return sorted((json.loads(m["Body"]) for m in got.get("Messages", [])), key=lambda ring: ring["n"])


def test_every_push_rings_with_its_number_and_copy(provisioned: dict[str, str]) -> None:
    parts = build(provisioned)
    connection = parts.sessions.open(BOB)["connection_id"]
    parts.router.push_to(BOB, {"type": "message", "text": "one"})
    parts.router.push_to(BOB, {"type": "message", "text": "two"})
    assert [(r["n"], json.loads(r["f"])["text"]) for r in rings(parts, connection)] == [(1, "one"), (2, "two")]


def test_a_failing_ring_fails_no_push_and_the_next_poll_delivers(provisioned: dict[str, str]) -> None:
    parts = build(provisioned, rings=FailingRings())
    connection = parts.sessions.open(BOB)["connection_id"]
    assert parts.router.push_to(BOB, {"type": "message", "text": "stored"}) == 1  # the ring failed, the push not
    assert rings(parts, connection) == []  # nothing to wake a wait: the client's heartbeat or next gap polls
    assert texts(parts.sessions.poll(BOB, connection, Release(0, 1))) == ["stored"]


def test_a_ring_after_the_queue_is_gone_is_no_warning(provisioned: dict[str, str],
                                                      caplog: pytest.LogCaptureFixture) -> None:
    # the connection closed between the mailbox append and the ring (a tab going away while a
    # group's fan-out pushes to it): nobody waits, so nothing is wrong
    parts = build(provisioned)
    connection = parts.sessions.open(BOB)["connection_id"]
    parts.doorbells.delete(connection)
    assert parts.doorbells.ring(connection, 1, "x") is False
    with caplog.at_level(logging.INFO):
        assert parts.router.push_to(BOB, {"type": "message", "text": "stored"}) == 1
    assert [r.levelname for r in caplog.records if "doorbell" in r.getMessage()] == ["INFO"]


# -- the queue's life is the connection's -----------------------------------------------------

def test_open_makes_the_queue_and_close_deletes_it(provisioned: dict[str, str]) -> None:
    parts = build(provisioned)
    connection = parts.sessions.open(BOB)["connection_id"]
    assert parts.queues() == {connection}
    parts.sessions.close(BOB, connection)
    assert parts.queues() == set()


def test_a_refused_open_makes_no_queue(provisioned: dict[str, str]) -> None:
    parts = build(provisioned, max_connections=1)
    kept = parts.sessions.open(BOB)["connection_id"]
    with pytest.raises(RateLimitedError):
        parts.sessions.open(BOB)
    assert parts.queues() == {kept}


class BrokenMailboxes(MailboxTable):
    def create(self, connection_id: str, owner: Identity, expires_at: int) -> None:
        raise RuntimeError("DynamoDB is down")


def test_a_failed_open_leaves_no_queue(provisioned: dict[str, str]) -> None:
    parts = build(provisioned, mailboxes=BrokenMailboxes)
    with pytest.raises(RuntimeError):
        parts.sessions.open(BOB)
    assert parts.queues() == set()
    assert parts.router.connections_of(BOB) == []


def test_the_sweeper_deletes_only_abandoned_queues(provisioned: dict[str, str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doorbells_module, "LIST_PAGE", 2)  # several pages of ListQueues
    monkeypatch.setattr(longpoll, "SWEEP_BATCH", 2)  # several BatchGetItems
    parts = build(provisioned)
    vanished = parts.sessions.open(BOB)["connection_id"]  # its client never polls again
    parts.clock.offset += 25
    live = parts.sessions.open(BOB)["connection_id"]
    closed_late = parts.sessions.open(BOB)["connection_id"]
    parts.router.unregister(parts.router.lookup(closed_late))  # closed, but its queue stayed (a crash)
    parts.doorbells.create("lp-stray")  # a queue whose connection was never registered
    parts.clock.offset += 10  # `vanished`'s window (30 s) is over; `live`'s is not
    ack_queue = provisioned["JOBS_QUEUE_URL"]
    assert parts.queues() == {vanished, live, closed_late, "lp-stray"}

    assert parts.sessions.sweep() == 3
    assert parts.queues() == {live}
    assert parts.sqs.get_queue_attributes(QueueUrl=ack_queue, AttributeNames=["QueueArn"])  # not under the prefix
    assert parts.sessions.sweep() == 0


# -- every doorbell fits SQS (issue 21, finding 6) ----------------------------------------------

def test_a_doorbell_body_is_always_one_sqs_takes(provisioned: dict[str, str]) -> None:
    """A copy too large rings without it (the client polls for it); a frame holding a
    character SQS refuses in a body (U+FFFF) rings with its copy escaped, not raw."""
    parts = build(provisioned)
    bodies: list[str] = []
    parts.sqs.meta.events.register("provide-client-params.sqs.SendMessage",
                                   lambda params, **_: bodies.append(params["MessageBody"]))
    connection = parts.sessions.open(BOB)["connection_id"]
    odd = '{"type":"message","text":"a\uffffb\U0001F600"}'
    huge = '{"type":"message","text":"' + "\u00e9" * 40_000 + '"}'  # 80 KB of UTF-8
    assert parts.doorbells.ring(connection, 1, odd) and parts.doorbells.ring(connection, 2, huge)
    assert [(ring["n"], ring.get("f")) for ring in rings(parts, connection)] == [(1, odd), (2, None)]
    assert "\uffff" not in bodies[0] and all(len(b.encode()) <= doorbells_module.MAX_COPY for b in bodies)
