"""Long polling on moto with a controlled clock (protocol version 4: the wait is API Gateway's,
the poll answers at once): the pool, lost answers, releases, ownership, the window, and the
wait tokens that bind a wait to its connection's queue."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import boto3
import pytest

from chalicelib.errors import ForbiddenError, LongPollGoneError
from chalicelib.logic.frames import Release
from chalicelib.logic.identity import Authenticator
from chalicelib.logic.longpoll import LongPollSessions, LongPollTiming, WaitLine
from chalicelib.logic.presence import PresenceService
from chalicelib.logic.protocol import ProtocolCore
from chalicelib.principal import Identity
from chalicelib.routing.router import Router
from chalicelib.routing.sender import MailboxSender
from chalicelib.storage.connections import ConnectionsTable
from chalicelib.storage.doorbells import DoorbellQueues
from chalicelib.storage.jobs_queue import JobsQueue
from chalicelib.storage.mailbox import MAX_FRAMES, MailboxTable
from chalicelib.storage.members import MembersTable
from chalicelib.storage.presence import PresenceTable
from tests.doubles import RecordingSender

BOB = Identity("user", "bob")
ALICE = Identity("user", "alice")


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


WINDOW = 30
WAIT_URL = "https://wait.example/lp/wait"


def build(provisioned: dict[str, str], clock: Clock, session: boto3.session.Session
          ) -> tuple[LongPollSessions, Router, PresenceService, Any]:
    """The long-poll transport and what it stands on, on `session` (so a test can hook its calls)."""
    table = session.resource("dynamodb").Table(provisioned["CONNECTIONS_TABLE"])
    mailboxes = MailboxTable(table)
    sqs = session.client("sqs")
    doorbells = DoorbellQueues(sqs, sqs, provisioned["JOBS_QUEUE_URL"].rsplit("/", 1)[0],
                               provisioned["LONG_POLL_QUEUE_PREFIX"])
    router = Router(ConnectionsTable(table, clock), RecordingSender(), 3600, clock,
                    long_poll_sender=MailboxSender(mailboxes, doorbells))
    members = MembersTable(session.resource("dynamodb").Table(provisioned["MEMBERS_TABLE"]))
    jobs = JobsQueue(session.client("sqs"), provisioned["JOBS_QUEUE_URL"])
    presence = PresenceService(PresenceTable(table), router, members, jobs, 660, 5, clock)
    tickets = Authenticator(b"k" * 32, {}, clock=clock)
    sessions = LongPollSessions(ProtocolCore(32 * 1024), router, mailboxes, presence,
                                LongPollTiming(window_seconds=WINDOW, heartbeat_seconds=12, clock=clock),
                                waits=WaitLine(doorbells, tickets, WAIT_URL))
    return sessions, router, presence, table


@pytest.fixture
def parts(provisioned: dict[str, str], clock: Clock) -> tuple[LongPollSessions, Router]:
    sessions, router, _, _ = build(provisioned, clock, boto3.session.Session())
    return sessions, router


def texts(answer: dict[str, Any]) -> list[str]:
    return [f.get("text", f["type"]) for f in answer["frames"]]


def poll(sessions: LongPollSessions, who: Identity, connection: str, cursor: int = 0, base: int = 1) -> Any:
    return sessions.poll(who, connection, Release(cursor, base))


def test_open_says_where_and_how_often(parts: Any) -> None:
    sessions, _ = parts
    opened = sessions.open(BOB)
    assert (opened["type"], opened["base"], opened["window"], opened["heartbeat"], opened["wait_url"]) == (
        "opened", 1, WINDOW, 12, WAIT_URL)
    assert sessions.wait_queue(opened["wait_token"]).endswith("-lp-" + opened["connection_id"])


def test_a_poll_answers_at_once_with_what_waits_in_the_pool(parts: Any) -> None:
    sessions, router = parts
    connection = sessions.open(BOB)["connection_id"]
    assert poll(sessions, BOB, connection)["frames"] == []
    for i in range(3):
        router.push_to(BOB, {"type": "message", "text": f"m{i}"})
    answer = poll(sessions, BOB, connection)
    assert texts(answer) == ["m0", "m1", "m2"] and (answer["base"], answer["cursor"]) == (1, 3)
    assert sessions.wait_queue(answer["wait_token"]) is not None  # a fresh token with every answer


def test_every_push_rings_the_connections_queue_with_its_number_and_copy(parts: Any, provisioned: dict[str, str]
                                                                        ) -> None:
    """What a wait receives: the frames' numbers and copies (the wait API's ReceiveMessage)."""
    sessions, router = parts
    opened = sessions.open(BOB)
    for i in range(2):
        router.push_to(BOB, {"type": "message", "text": f"m{i}"})
    sqs = boto3.client("sqs")
    got = sqs.receive_message(QueueUrl=sessions.wait_queue(opened["wait_token"]), MaxNumberOfMessages=10)
    rings = sorted((json.loads(m["Body"]) for m in got["Messages"]), key=lambda ring: ring["n"])
    assert [(r["n"], json.loads(r["f"])["text"]) for r in rings] == [(1, "m0"), (2, "m1")]


def test_a_lost_answer_loses_nothing(parts: Any) -> None:
    sessions, router = parts
    connection = sessions.open(BOB)["connection_id"]
    router.push_to(BOB, {"type": "message", "text": "one"})
    assert texts(poll(sessions, BOB, connection)) == ["one"]
    # the answer never reached the client (or its wait's answer was lost): it polls with its old cursor
    again = poll(sessions, BOB, connection)
    assert texts(again) == ["one"]
    router.push_to(BOB, {"type": "message", "text": "two"})
    moved = poll(sessions, BOB, connection, again["cursor"], again["base"])
    assert texts(moved) == ["two"] and moved["base"] == 2
    # a client whose view of the base is stale (its last answer was lost) still converges
    assert texts(poll(sessions, BOB, connection, 1, 1)) == ["two"]
    done = poll(sessions, BOB, connection, 2, 2)
    assert done["frames"] == [] and done["base"] == 3


def test_a_stale_release_racing_another_release_of_the_same_client_settles(
        provisioned: dict[str, str], clock: Clock) -> None:
    """Regression (the browser chaos test, issue 23 point 7): a poll whose view of the base is
    old looks at the mailbox, and before it releases, the client's send carrying the same cursor
    moves the base. The poll used to answer gone (the client then dropped a live connection);
    now it looks again and releases from where the mailbox is."""
    session = boto3.session.Session()
    armed, raced = [False], []

    def send_releases_meanwhile(**_: Any) -> None:  # after the poll's look, before its release
        if armed[0] and not raced:
            raced.append(True)
            sessions.send(BOB, connection, json.dumps({"action": "ping"}), Release(2, 2))

    session.events.register("after-call.dynamodb.GetItem", send_releases_meanwhile)  # before the clients exist
    sessions, router, _, _ = build(provisioned, clock, session)
    connection = sessions.open(BOB)["connection_id"]
    for text in ("one", "two", "three"):
        router.push_to(BOB, {"type": "message", "text": text})
    assert texts(poll(sessions, BOB, connection, 1, 1)) == ["two", "three"]  # base 2 now; this answer is lost
    armed[0] = True
    answer = poll(sessions, BOB, connection, 2, 1)  # the client still thinks the base is 1
    assert raced == [True]
    assert answer["frames"] == [] or texts(answer) == ["three"]
    assert texts(poll(sessions, BOB, connection, 3, 3)) == [] and poll(sessions, BOB, connection, 3, 3)["base"] == 4


def test_a_send_carrying_the_cursor_releases_on_its_way(parts: Any) -> None:
    sessions, router = parts
    connection = sessions.open(BOB)["connection_id"]
    router.push_to(BOB, {"type": "message", "text": "one"})
    router.push_to(BOB, {"type": "message", "text": "two"})
    pong, = sessions.send(BOB, connection, json.dumps({"action": "ping"}), Release(1, 1))
    assert pong["type"] == "pong"
    assert texts(poll(sessions, BOB, connection, 1, 1)) == ["two"]  # "one" was released by the send


def test_a_poll_only_ever_returns_the_callers_own_frames(parts: Any) -> None:
    sessions, router = parts
    bobs = sessions.open(BOB)["connection_id"]
    router.push_to(BOB, {"type": "message", "text": "for bob"})
    with pytest.raises(ForbiddenError):
        poll(sessions, ALICE, bobs)
    with pytest.raises(ForbiddenError):
        sessions.send(ALICE, bobs, json.dumps({"action": "ping"}))
    with pytest.raises(ForbiddenError):
        sessions.send(ALICE, bobs, json.dumps({"action": "ping"}), Release(1, 1))  # no release of bob's either
    with pytest.raises(LongPollGoneError):
        poll(sessions, ALICE, "lp-not-a-connection")
    assert texts(poll(sessions, BOB, bobs)) == ["for bob"]


def test_a_wait_token_opens_its_own_connections_queue_and_nothing_else(parts: Any) -> None:
    sessions, _ = parts
    bobs, alices = sessions.open(BOB), sessions.open(ALICE)
    assert sessions.wait_queue(bobs["wait_token"]) != sessions.wait_queue(alices["wait_token"])
    assert sessions.wait_queue(bobs["wait_token"]).endswith(bobs["connection_id"])
    # an identity's own token, a forged one, another key's, a truncated one: refused
    bob_token = Authenticator(b"k" * 32, {}, dev_login=True).dev_login("bob").token
    forged = Authenticator(b"x" * 32, {}).wait_token(alices["connection_id"])
    for token in (bob_token, forged, bobs["wait_token"][:-3], "", None, "Bearer " + bobs["wait_token"]):
        assert sessions.wait_queue(token) is None
    # and a wait token is no identity: no route that asks who is calling accepts it
    with pytest.raises(Exception, match="credential"):
        Authenticator(b"k" * 32, {}).authenticate(bobs["wait_token"])


def test_a_wait_token_expires(parts: Any, clock: Clock) -> None:
    sessions, _ = parts
    token = sessions.open(BOB)["wait_token"]
    clock.now += 3600 + 31  # past its hour and the leeway
    assert sessions.wait_queue(token) is None


def test_upstream_frames_get_the_same_answers_as_on_websocket(parts: Any) -> None:
    sessions, _ = parts
    connection = sessions.open(BOB)["connection_id"]
    pong, = sessions.send(BOB, connection, json.dumps({"action": "ping", "id": "p"}))
    assert pong["type"] == "pong" and pong["ref"] == "p" and pong["identity"] == BOB.to_json()
    error, = sessions.send(BOB, connection, "{nope")
    assert error["code"] == "malformed_json"


def test_a_long_poll_connection_lapses_without_a_poll_within_its_window(parts: Any, clock: Clock) -> None:
    sessions, router = parts
    connection = sessions.open(BOB)["connection_id"]
    assert [r.connection_id for r in router.connections_of(BOB)] == [connection]
    clock.now += WINDOW - 5
    poll(sessions, BOB, connection)  # the heartbeat: WINDOW more from now
    clock.now += WINDOW - 1
    assert router.push_to(BOB, {"type": "message", "text": "still here"}) == 1
    clock.now += 2  # no poll came within the window (waits do not count: no function ran for them)
    assert router.connections_of(BOB) == []
    assert router.push_to(BOB, {"type": "message", "text": "gone"}) == 0
    with pytest.raises(LongPollGoneError):
        poll(sessions, BOB, connection)
    with pytest.raises(LongPollGoneError):
        sessions.send(BOB, connection, json.dumps({"action": "ping"}))


def test_a_full_mailbox_tells_the_client_to_resync(parts: Any) -> None:
    sessions, router = parts
    connection = sessions.open(BOB)["connection_id"]
    for i in range(MAX_FRAMES + 2):
        router.push_to(BOB, {"type": "message", "text": str(i)})
    answer = poll(sessions, BOB, connection)
    assert len(answer["frames"]) == MAX_FRAMES + 1 and answer["frames"][-1] == {"type": "resync"}


def test_close_ends_the_connection_and_its_queue(parts: Any) -> None:
    sessions, router = parts
    opened = sessions.open(BOB)
    queue = sessions.wait_queue(opened["wait_token"])
    sessions.close(BOB, opened["connection_id"])
    assert router.connections_of(BOB) == []
    with pytest.raises(LongPollGoneError):
        poll(sessions, BOB, opened["connection_id"])
    with pytest.raises(Exception, match="NonExistentQueue|QueueDoesNotExist"):
        boto3.client("sqs").receive_message(QueueUrl=queue)  # a cached authorizer answer waits on nothing


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
    answer = poll(counted.sessions, BOB, connection, cursor, 1)
    # clamped, no error: frames 1-3 (all there ever were) released, nothing left
    assert answer["frames"] == [] and answer["base"] == 4 and answer["cursor"] == 3
    assert max(len(expression) for expression in counted.updates) < 1_500  # DynamoDB's cap is 4 KB
    assert len(counted.updates) <= 5  # refresh (2), presence, the refused release, the clamped one
    counted.router.push_to(BOB, {"type": "message", "text": "next"})
    later = poll(counted.sessions, BOB, connection, 3, 4)
    assert texts(later) == ["next"] and later["base"] == 4


def test_a_full_mailbox_can_be_released_in_one_poll(counted: Counted) -> None:
    """501 frames (a full mailbox and its resync) released at once: before, one expression of
    501 REMOVE terms (over DynamoDB's 4 KB; moto's parser overflowed) answered 500."""
    connection = counted.sessions.open(BOB)["connection_id"]
    for i in range(MAX_FRAMES + 2):
        counted.router.push_to(BOB, {"type": "message", "text": str(i)})
    full = poll(counted.sessions, BOB, connection)
    counted.updates.clear()
    done = poll(counted.sessions, BOB, connection, full["cursor"], full["base"])
    assert done["frames"] == [] and done["base"] == MAX_FRAMES + 2
    assert max(len(expression) for expression in counted.updates) < 1_500


# -- the window (protocol.md §2b) -------------------------------------------------------------

def test_presence_ends_with_the_window(counted: Counted, clock: Clock) -> None:
    opened = clock.now
    connection = counted.sessions.open(BOB)["connection_id"]
    clock.now = opened + 10
    poll(counted.sessions, BOB, connection)  # lives to 10 + WINDOW
    clock.now = opened + 10 + WINDOW - 1
    assert counted.router.push_to(BOB, {"type": "message", "text": "still here"}) == 1
    assert counted.presence.batch([BOB])[0]["online"] is True
    clock.now = opened + 10 + WINDOW + 1
    assert counted.router.connections_of(BOB) == []
    counted.presence.settle({"identity": BOB.key})  # the check the poll scheduled for this moment
    assert counted.presence.batch([BOB])[0]["online"] is False
