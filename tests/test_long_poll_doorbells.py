"""Long-poll doorbells on moto: a held poll waits on its connection's SQS queue and wakes when
a push rings it; a lost ring is covered by the safety-net look; queues live exactly as long
as their connections (open, close, failed open, the sweeper).

The held polls run in a thread and really wait in moto's SQS (which the local stack's moto lock
must not serialise). Nothing here is timed: which wake found the frame is read from what each
ReceiveMessage returned (botocore hooks), never from a clock.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from botocore.exceptions import EndpointConnectionError

from chalicelib.errors import RateLimitedError
from chalicelib.logic import longpoll
from chalicelib.logic.limits import Limits, Rates
from chalicelib.logic.longpoll import LongPollSessions, LongPollTiming
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
HOLD = 25  # the longest hold: every test's frame must come back long before it would end
RESULT_TIMEOUT = 120  # only so that a broken test fails instead of hanging


class Receives:
    """What every ReceiveMessage on the session did: `started` counts calls made, `got` holds
    how many doorbells each returned (-1: it failed). `on_start(n)` runs as call n starts."""

    def __init__(self, session: boto3.session.Session) -> None:
        self.started = 0
        self.got: list[int] = []
        self.on_start: Callable[[int], None] = lambda n: None
        session.events.register("before-call.sqs.ReceiveMessage", self._before)
        session.events.register("after-call.sqs.ReceiveMessage", self._after)
        session.events.register("after-call-error.sqs.ReceiveMessage", self._failed)

    def _before(self, **_: Any) -> None:
        self.started += 1
        self.on_start(self.started)

    def _after(self, parsed: dict[str, Any], **_: Any) -> None:
        if "Error" in parsed:
            self.got.append(-1)
        else:
            self.got.append(len(parsed.get("Messages", [])))

    def _failed(self, **_: Any) -> None:
        self.got.append(-1)


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
    receives: Receives
    clock: Clock

    def queues(self) -> set[str]:
        urls = self.sqs.list_queues(QueueNamePrefix=self.doorbells.prefix).get("QueueUrls", [])
        return {url.rsplit("/", 1)[-1][len(self.doorbells.prefix):] for url in urls}


def build(provisioned: dict[str, str], safety: int, rings: Any = None, max_connections: int = 0,
          mailboxes: type[MailboxTable] = MailboxTable) -> Parts:
    session = boto3.session.Session()
    receives = Receives(session)
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
                                LongPollTiming(interval_seconds=0.02, grace_seconds=10, safety_seconds=safety,
                                               clock=clock),
                                limits=limits, doorbells=doorbells)
    return Parts(sessions, router, doorbells, sqs, receives, clock)


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=2) as executor:
        yield executor


def hold(parts: Parts, pool: ThreadPoolExecutor, connection: str) -> Future[dict[str, Any]]:
    return pool.submit(parts.sessions.poll, BOB, connection, 0, 1, HOLD)


def push_when_receive(parts: Parts, n: int, text: str = "hi") -> threading.Event:
    """Push a frame to bob as the poll's n-th ReceiveMessage starts (from the poll's thread: the
    wait itself is what must wake). Returns an event set once it was pushed and stored."""
    pushed = threading.Event()

    def on_start(started: int) -> None:
        if started == n:
            threading.Thread(target=lambda: (parts.router.push_to(BOB, {"type": "message", "text": text}),
                                             pushed.set())).start()

    parts.receives.on_start = on_start
    return pushed


def texts(answer: dict[str, Any]) -> list[str]:
    return [f.get("text", f["type"]) for f in answer["frames"]]


# -- waking ----------------------------------------------------------------------------------

def test_a_held_poll_wakes_on_its_doorbell(provisioned: dict[str, str], pool: ThreadPoolExecutor) -> None:
    # safety 20 s (SQS's longest wait): only a ring can end the first wait early
    parts = build(provisioned, safety=20)
    connection = parts.sessions.open(BOB)["connection_id"]
    pushed = push_when_receive(parts, 1)
    answer = hold(parts, pool, connection).result(RESULT_TIMEOUT)
    assert pushed.wait(RESULT_TIMEOUT) and texts(answer) == ["hi"] and (answer["base"], answer["cursor"]) == (1, 1)
    # one wait, ended by the doorbell (not by its timeout: that would have returned none)
    assert parts.receives.got == [1]
    # the answer (from the doorbell's copy) is the mailbox's frame 1: the next poll releases it
    after = parts.sessions.poll(BOB, connection, cursor=1, base=1, wait=0)
    assert after["frames"] == [] and after["base"] == 2


def test_a_doorbell_without_its_copy_reads_the_mailbox(provisioned: dict[str, str],
                                                       pool: ThreadPoolExecutor) -> None:
    parts = build(provisioned, safety=20)
    connection = parts.sessions.open(BOB)["connection_id"]
    boxes = MailboxTable(boto3.resource("dynamodb").Table(provisioned["CONNECTIONS_TABLE"]))

    def on_start(started: int) -> None:
        if started == 1:  # a frame stored, and a ring that carries no number (say a big frame)
            boxes.append(connection, '{"type":"message","text":"big"}')
            parts.doorbells.ring(connection, 0, None)

    parts.receives.on_start = lambda n: threading.Thread(target=on_start, args=(n,)).start()
    answer = hold(parts, pool, connection).result(RESULT_TIMEOUT)
    assert texts(answer) == ["big"] and (answer["base"], answer["cursor"]) == (1, 1)
    assert parts.receives.got == [1]


def test_a_stale_doorbell_wakes_for_nothing_and_the_poll_waits_again(provisioned: dict[str, str],
                                                                      pool: ThreadPoolExecutor) -> None:
    parts = build(provisioned, safety=20)
    connection = parts.sessions.open(BOB)["connection_id"]
    parts.router.push_to(BOB, {"type": "message", "text": "early"})
    early = parts.sessions.poll(BOB, connection, cursor=0, base=1, wait=20)  # at once: its doorbell stays
    assert texts(early) == ["early"] and parts.receives.started == 0
    pushed = push_when_receive(parts, 2, "later")
    answer = pool.submit(parts.sessions.poll, BOB, connection, early["cursor"], early["base"], HOLD
                         ).result(RESULT_TIMEOUT)
    # the stale ring woke the first wait; the mailbox was empty, so no empty answer: a second
    # wait, which the real ring ended
    assert texts(answer) == ["later"] and pushed.wait(RESULT_TIMEOUT)
    assert parts.receives.got == [1, 1]


def test_a_doorbell_wakes_one_wait_only(provisioned: dict[str, str]) -> None:
    """Received doorbells are not deleted: they stay invisible until SQS drops them."""
    parts = build(provisioned, safety=1)
    connection = parts.sessions.open(BOB)["connection_id"]
    parts.doorbells.ring(connection, 1, "x")
    assert [(bell.number, bell.frame) for bell in parts.doorbells.wait(connection, 1)] == [(1, "x")]
    assert parts.doorbells.wait(connection, 1) == []  # the same doorbell does not ring again
    attributes = parts.sqs.get_queue_attributes(QueueUrl=parts.doorbells.url(connection), AttributeNames=[
        "ApproximateNumberOfMessages"])["Attributes"]
    assert attributes == {"ApproximateNumberOfMessages": "0"}


# -- a lost ring -----------------------------------------------------------------------------

def test_a_failing_ring_fails_no_push_and_the_safety_net_delivers(provisioned: dict[str, str],
                                                                   pool: ThreadPoolExecutor) -> None:
    parts = build(provisioned, safety=1, rings=FailingRings())
    connection = parts.sessions.open(BOB)["connection_id"]
    assert parts.router.push_to(BOB, {"type": "message", "text": "stored"}) == 1  # the ring failed, the push not
    first = parts.sessions.poll(BOB, connection, cursor=0, base=1, wait=0)
    assert texts(first) == ["stored"]
    push_when_receive(parts, 1)
    answer = pool.submit(parts.sessions.poll, BOB, connection, first["cursor"], first["base"], HOLD
                         ).result(RESULT_TIMEOUT)
    assert texts(answer) == ["hi"]
    assert parts.receives.got[-1] == 0  # found by the look after a wait that no ring ended


def test_a_deleted_queue_falls_back_to_looking(provisioned: dict[str, str], pool: ThreadPoolExecutor) -> None:
    parts = build(provisioned, safety=1)
    connection = parts.sessions.open(BOB)["connection_id"]
    parts.doorbells.delete(connection)
    push_when_receive(parts, 1)
    answer = hold(parts, pool, connection).result(RESULT_TIMEOUT)
    assert texts(answer) == ["hi"]
    assert parts.receives.got[0] == -1  # the wait failed; interval looks found it


def test_a_ring_after_the_queue_is_gone_is_no_warning(provisioned: dict[str, str],
                                                      caplog: pytest.LogCaptureFixture) -> None:
    # the connection closed between the mailbox append and the ring (a tab going away while a
    # group's fan-out pushes to it): nobody waits, so nothing is wrong
    parts = build(provisioned, safety=1)
    connection = parts.sessions.open(BOB)["connection_id"]
    parts.doorbells.delete(connection)
    assert parts.doorbells.ring(connection, 1, "x") is False
    with caplog.at_level(logging.INFO):
        assert parts.router.push_to(BOB, {"type": "message", "text": "stored"}) == 1
    assert [r.levelname for r in caplog.records if "doorbell" in r.getMessage()] == ["INFO"]


# -- the queue's life is the connection's -----------------------------------------------------

def test_open_makes_the_queue_and_close_deletes_it(provisioned: dict[str, str]) -> None:
    parts = build(provisioned, safety=5)
    connection = parts.sessions.open(BOB)["connection_id"]
    assert parts.queues() == {connection}
    parts.sessions.close(BOB, connection)
    assert parts.queues() == set()


def test_a_refused_open_makes_no_queue(provisioned: dict[str, str]) -> None:
    parts = build(provisioned, safety=5, max_connections=1)
    kept = parts.sessions.open(BOB)["connection_id"]
    with pytest.raises(RateLimitedError):
        parts.sessions.open(BOB)
    assert parts.queues() == {kept}


class BrokenMailboxes(MailboxTable):
    def create(self, connection_id: str, owner: Identity, expires_at: int) -> None:
        raise RuntimeError("DynamoDB is down")


def test_a_failed_open_leaves_no_queue(provisioned: dict[str, str]) -> None:
    parts = build(provisioned, safety=5, mailboxes=BrokenMailboxes)
    with pytest.raises(RuntimeError):
        parts.sessions.open(BOB)
    assert parts.queues() == set()
    assert parts.router.connections_of(BOB) == []


def test_the_sweeper_deletes_only_abandoned_queues(provisioned: dict[str, str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doorbells_module, "LIST_PAGE", 2)  # several pages of ListQueues
    monkeypatch.setattr(longpoll, "SWEEP_BATCH", 2)  # several BatchGetItems
    parts = build(provisioned, safety=5)
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
    """A copy too large rings without it (the poll reads the mailbox); a frame holding a
    character SQS refuses in a body (U+FFFF) rings with its copy escaped, not raw."""
    parts = build(provisioned, safety=1)
    bodies: list[str] = []
    parts.sqs.meta.events.register("provide-client-params.sqs.SendMessage",
                                   lambda params, **_: bodies.append(params["MessageBody"]))
    connection = parts.sessions.open(BOB)["connection_id"]
    odd = '{"type":"message","text":"a\uffffb\U0001F600"}'
    huge = '{"type":"message","text":"' + "\u00e9" * 40_000 + '"}'  # 80 KB of UTF-8
    assert parts.doorbells.ring(connection, 1, odd) and parts.doorbells.ring(connection, 2, huge)
    assert [(bell.number, bell.frame) for bell in parts.doorbells.wait(connection, 1)] == [(1, odd), (2, None)]
    assert "\uffff" not in bodies[0] and all(len(b.encode()) <= doorbells_module.MAX_COPY for b in bodies)
