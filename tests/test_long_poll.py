"""Long polling on moto with a controlled clock: the held poll, the pool, lost responses,
ownership, and the re-poll window."""
from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import boto3
import pytest

from chalicelib.errors import ForbiddenError, LongPollGoneError
from chalicelib.logic.longpoll import LongPollSessions
from chalicelib.logic.presence import PresenceService
from chalicelib.logic.protocol import ProtocolCore
from chalicelib.principal import Identity
from chalicelib.routing.router import Router
from chalicelib.routing.sender import MailboxSender, RecordingSender
from chalicelib.storage.connections import ConnectionsTable
from chalicelib.storage.jobs_queue import JobsQueue
from chalicelib.storage.mailbox import MAX_FRAMES, MailboxTable
from chalicelib.storage.members import MembersTable
from chalicelib.storage.presence import PresenceTable

BOB = Identity("user", "bob")
ALICE = Identity("user", "alice")


class Clock:
    """Time that moves only when the poll sleeps; `on_sleep` runs during the hold."""

    def __init__(self) -> None:
        self.now = 1_000_000.0
        self.sleeps = 0
        self.on_sleep: Callable[[int], None] = lambda n: None

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.sleeps += 1
        self.on_sleep(self.sleeps)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def parts(provisioned: dict[str, str], clock: Clock) -> tuple[LongPollSessions, Router]:
    table = boto3.resource("dynamodb").Table(provisioned["CONNECTIONS_TABLE"])
    mailboxes = MailboxTable(table)
    router = Router(ConnectionsTable(table, clock), RecordingSender(), 3600, clock,
                    long_poll_sender=MailboxSender(mailboxes))
    members = MembersTable(boto3.resource("dynamodb").Table(provisioned["MEMBERS_TABLE"]))
    jobs = JobsQueue(boto3.client("sqs"), provisioned["ACK_TIMEOUT_QUEUE_URL"])
    presence = PresenceService(PresenceTable(table), router, members, jobs, 660, 5, clock)
    sessions = LongPollSessions(ProtocolCore(32 * 1024), router, mailboxes, presence, interval_seconds=0.05,
                                grace_seconds=10, clock=clock, sleep=clock.sleep)
    return sessions, router


def texts(answer: dict[str, Any]) -> list[str]:
    return [f.get("text", f["type"]) for f in answer["frames"]]


def test_a_held_poll_returns_when_a_frame_arrives_not_at_its_timeout(parts: Any, clock: Clock) -> None:
    sessions, router = parts
    connection = sessions.open(BOB)["connection_id"]
    clock.on_sleep = lambda n: router.push_to(BOB, {"type": "message", "text": "hi"}) if n == 3 else None
    answer = sessions.poll(BOB, connection, cursor=0, base=1, wait=20)
    assert texts(answer) == ["hi"]
    assert clock.sleeps == 3  # found on the first look after it was stored: one interval
    assert answer["cursor"] == 1


def test_a_poll_with_nothing_returns_empty_at_its_timeout(parts: Any, clock: Clock) -> None:
    sessions, _ = parts
    connection = sessions.open(BOB)["connection_id"]
    started = clock.now
    answer = sessions.poll(BOB, connection, cursor=0, base=1, wait=2)
    assert answer["frames"] == [] and clock.now - started == pytest.approx(2, abs=0.06)


def test_frames_pushed_between_polls_wait_in_the_pool(parts: Any, clock: Clock) -> None:
    sessions, router = parts
    connection = sessions.open(BOB)["connection_id"]
    for i in range(3):
        router.push_to(BOB, {"type": "message", "text": f"m{i}"})
    answer = sessions.poll(BOB, connection, cursor=0, base=1, wait=20)
    assert texts(answer) == ["m0", "m1", "m2"] and clock.sleeps == 0  # at once


def test_a_lost_response_loses_nothing(parts: Any) -> None:
    sessions, router = parts
    connection = sessions.open(BOB)["connection_id"]
    router.push_to(BOB, {"type": "message", "text": "one"})
    lost = sessions.poll(BOB, connection, cursor=0, base=1, wait=0)
    assert texts(lost) == ["one"]
    # the response never reached the client: it polls again with its old cursor
    again = sessions.poll(BOB, connection, cursor=0, base=1, wait=0)
    assert texts(again) == ["one"]
    router.push_to(BOB, {"type": "message", "text": "two"})
    moved = sessions.poll(BOB, connection, cursor=again["cursor"], base=again["base"], wait=0)
    assert texts(moved) == ["two"] and moved["base"] == 2
    # a client whose view of the base is stale (its last response was lost) still converges
    stale = sessions.poll(BOB, connection, cursor=1, base=1, wait=0)
    assert texts(stale) == ["two"]
    done = sessions.poll(BOB, connection, cursor=2, base=2, wait=0)
    assert done["frames"] == [] and done["base"] == 3


def test_a_poll_only_ever_returns_the_callers_own_frames(parts: Any) -> None:
    sessions, router = parts
    bobs = sessions.open(BOB)["connection_id"]
    router.push_to(BOB, {"type": "message", "text": "for bob"})
    with pytest.raises(ForbiddenError):
        sessions.poll(ALICE, bobs, cursor=0, base=1, wait=0)
    with pytest.raises(ForbiddenError):
        sessions.send(ALICE, bobs, json.dumps({"action": "ping"}))
    with pytest.raises(LongPollGoneError):
        sessions.poll(ALICE, "lp-not-a-connection", cursor=0, base=1, wait=0)
    assert texts(sessions.poll(BOB, bobs, cursor=0, base=1, wait=0)) == ["for bob"]


def test_upstream_frames_get_the_same_answers_as_on_websocket(parts: Any) -> None:
    sessions, _ = parts
    connection = sessions.open(BOB)["connection_id"]
    pong, = sessions.send(BOB, connection, json.dumps({"action": "ping", "id": "p"}))
    assert pong["type"] == "pong" and pong["ref"] == "p" and pong["identity"] == BOB.to_json()
    error, = sessions.send(BOB, connection, "{nope")
    assert error["code"] == "malformed_json"


def test_a_long_poll_connection_lapses_after_a_missed_re_poll_window(parts: Any, clock: Clock) -> None:
    sessions, router = parts
    connection = sessions.open(BOB)["connection_id"]
    assert [r.connection_id for r in router.connections_of(BOB)] == [connection]
    sessions.poll(BOB, connection, cursor=0, base=1, wait=5)  # held 5 s; then 10 s of grace to re-poll
    clock.now += 9
    assert router.push_to(BOB, {"type": "message", "text": "still here"}) == 1
    clock.now += 2  # no poll came within the window
    assert router.connections_of(BOB) == []
    assert router.push_to(BOB, {"type": "message", "text": "gone"}) == 0
    with pytest.raises(LongPollGoneError):
        sessions.poll(BOB, connection, cursor=0, base=1, wait=0)


def test_a_full_mailbox_tells_the_client_to_resync(parts: Any) -> None:
    sessions, router = parts
    connection = sessions.open(BOB)["connection_id"]
    for i in range(MAX_FRAMES + 2):
        router.push_to(BOB, {"type": "message", "text": str(i)})
    answer = sessions.poll(BOB, connection, cursor=0, base=1, wait=0)
    assert len(answer["frames"]) == MAX_FRAMES + 1 and answer["frames"][-1] == {"type": "resync"}


def test_close_ends_the_connection(parts: Any) -> None:
    sessions, router = parts
    connection = sessions.open(BOB)["connection_id"]
    sessions.close(BOB, connection)
    assert router.connections_of(BOB) == []
    with pytest.raises(LongPollGoneError):
        sessions.poll(BOB, connection, cursor=0, base=1, wait=0)
