"""Long polling on moto with a controlled clock: the held poll, the pool, lost responses,
ownership, and the re-poll window."""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import boto3
import pytest

from chalicelib.errors import ForbiddenError, LongPollGoneError
from chalicelib.logic.longpoll import LongPollSessions, LongPollTiming
from chalicelib.logic.presence import PresenceService
from chalicelib.logic.protocol import ProtocolCore
from chalicelib.principal import Identity
from chalicelib.routing.router import Router
from chalicelib.routing.sender import MailboxSender
from chalicelib.storage.connections import ConnectionsTable
from chalicelib.storage.jobs_queue import JobsQueue
from chalicelib.storage.mailbox import MAX_FRAMES, MailboxTable
from chalicelib.storage.members import MembersTable
from chalicelib.storage.presence import PresenceTable
from tests.doubles import RecordingSender

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


def build(provisioned: dict[str, str], clock: Clock, session: boto3.session.Session
          ) -> tuple[LongPollSessions, Router, PresenceService, Any]:
    """The long-poll transport and what it stands on, on `session` (so a test can hook its calls)."""
    table = session.resource("dynamodb").Table(provisioned["CONNECTIONS_TABLE"])
    mailboxes = MailboxTable(table)
    router = Router(ConnectionsTable(table, clock), RecordingSender(), 3600, clock,
                    long_poll_sender=MailboxSender(mailboxes))
    members = MembersTable(session.resource("dynamodb").Table(provisioned["MEMBERS_TABLE"]))
    jobs = JobsQueue(session.client("sqs"), provisioned["JOBS_QUEUE_URL"])
    presence = PresenceService(PresenceTable(table), router, members, jobs, 660, 5, clock)
    sessions = LongPollSessions(ProtocolCore(32 * 1024), router, mailboxes, presence,
                                LongPollTiming(interval_seconds=0.05, grace_seconds=10, clock=clock, sleep=clock.sleep))
    return sessions, router, presence, table


@pytest.fixture
def parts(provisioned: dict[str, str], clock: Clock) -> tuple[LongPollSessions, Router]:
    sessions, router, _, _ = build(provisioned, clock, boto3.session.Session())
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
    clock.now += 20  # `open` gave 30 s (default wait 20 + grace 10)
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


# -- the cursor is client input: nothing may grow with it (issue 11, finding 1) ---------------

@dataclass
class Counted:
    sessions: LongPollSessions
    router: Router
    presence: PresenceService
    table: Any
    updates: list[str]  # every UpdateItem's UpdateExpression, in order


@pytest.fixture
def counted(provisioned: dict[str, str], clock: Clock) -> Counted:
    """The parts above on a session whose UpdateItem expressions are recorded (a botocore hook)."""
    updates: list[str] = []
    session = boto3.session.Session()
    session.events.register("before-parameter-build.dynamodb.UpdateItem",
                            lambda params, **_: updates.append(params.get("UpdateExpression", "")))
    return Counted(*build(provisioned, clock, session), updates)


# (2**53 is the largest cursor the API accepts; before the fix it built a 2**53-term expression)
@pytest.mark.parametrize("cursor", [1_000, 2**53])
def test_a_cursor_far_past_the_last_frame_releases_what_is_there(counted: Counted, cursor: int) -> None:
    connection = counted.sessions.open(BOB)["connection_id"]
    for i in range(3):
        counted.router.push_to(BOB, {"type": "message", "text": f"m{i}"})
    counted.updates.clear()
    answer = counted.sessions.poll(BOB, connection, cursor=cursor, base=1, wait=0)
    # clamped, no error: frames 1-3 (all there ever were) released, nothing left
    assert answer["frames"] == [] and answer["base"] == 4 and answer["cursor"] == 3
    assert max(len(expression) for expression in counted.updates) < 1_500  # DynamoDB's cap is 4 KB
    assert len(counted.updates) <= 5  # refresh (2), presence, the refused release, the clamped one
    counted.router.push_to(BOB, {"type": "message", "text": "next"})
    later = counted.sessions.poll(BOB, connection, cursor=3, base=4, wait=0)
    assert texts(later) == ["next"] and later["base"] == 4


def test_a_full_mailbox_can_be_released_in_one_poll(counted: Counted) -> None:
    """501 frames (a full mailbox and its resync) released at once: before, one expression of
    501 REMOVE terms (over DynamoDB's 4 KB; moto's parser overflowed) answered 500."""
    connection = counted.sessions.open(BOB)["connection_id"]
    for i in range(MAX_FRAMES + 2):
        counted.router.push_to(BOB, {"type": "message", "text": str(i)})
    full = counted.sessions.poll(BOB, connection, cursor=0, base=1, wait=0)
    counted.updates.clear()
    done = counted.sessions.poll(BOB, connection, cursor=full["cursor"], base=full["base"], wait=0)
    assert done["frames"] == [] and done["base"] == MAX_FRAMES + 2
    assert max(len(expression) for expression in counted.updates) < 1_500


# -- the window (protocol.md §2b) -------------------------------------------------------------

def test_a_shorter_poll_never_shortens_the_window_and_presence_ends_with_it(counted: Counted,
                                                                             clock: Clock) -> None:
    """`open` grants 30 s here (default wait 20 + grace 10); a poll with wait 2 would give
    12 s from its start. The connection lives until the later of the two, and presence says
    online exactly as long (before: routing lapsed at 13 s while presence stayed online to 30 s)."""
    opened = clock.now
    connection = counted.sessions.open(BOB)["connection_id"]
    clock.now += 1
    counted.sessions.poll(BOB, connection, cursor=0, base=1, wait=2)
    clock.now = opened + 29
    assert counted.router.push_to(BOB, {"type": "message", "text": "still here"}) == 1
    assert counted.presence.batch([BOB])[0]["online"] is True
    clock.now = opened + 31  # no poll since: the window `open` gave has ended
    assert counted.router.connections_of(BOB) == []
    counted.presence.settle({"identity": BOB.key})  # the check `open` scheduled for this moment
    assert counted.presence.batch([BOB])[0]["online"] is False
    with pytest.raises(LongPollGoneError):
        counted.sessions.poll(BOB, connection, cursor=0, base=1, wait=0)


def test_a_poll_extends_past_the_open_window(counted: Counted, clock: Clock) -> None:
    opened = clock.now
    connection = counted.sessions.open(BOB)["connection_id"]
    clock.now = opened + 25
    counted.sessions.poll(BOB, connection, cursor=0, base=1, wait=0)  # lives to 25 + 0 + 10 = 35
    clock.now = opened + 34
    assert counted.router.push_to(BOB, {"type": "message", "text": "still here"}) == 1
    assert counted.presence.batch([BOB])[0]["online"] is True
