"""Faults on the ack path, the ack check and replayed sends (issue 21, findings 3, 10, 11).

- `delivered` reaches the sender whatever fails between the ack's conditional write and its
  push: a crash before or after any call, an error after retries, the write run twice (the SDK
  retry whose second attempt fails its own condition). The ack check or the next ack tells.
- The ack check queues the next check before it retransmits: a check that dies or fails while
  pushing does not stretch the 10/40/130 s schedule.
- A send whose ack check cannot be queued is answered `internal_error`; its retry pushes and
  queues it again, or tells `delivered` when the receiver acked meanwhile.
- A replayed send id is counted like a fresh send and is never fanned out again.
"""
from __future__ import annotations

import json
from typing import Any

import pytest

from chalicelib.logic.fanout import GROUP_FANOUT
from chalicelib.logic.messaging import ACK_CHECK, REFANOUT_SECONDS, direct_conversation_id
from chalicelib.principal import Identity
from chalicelib.storage.members import Cursor
from tests.messaging_fixtures import Crash
from tests.signal_fixtures import World

BOB = Identity("user", "bob")
POST = "apigatewaymanagementapi.PostToConnection"


@pytest.fixture
def world(provisioned: dict[str, str]) -> World:
    return World(provisioned)


def checks(world: World, **match: Any) -> list[dict[str, Any]]:
    return [j for j in world.jobs if j.get("kind") == ACK_CHECK and all(j.get(k) == v for k, v in match.items())]


def run_checks(world: World, conversation_id: str) -> None:
    """Run every ack check queued for the conversation so far (as SQS would, after its delay)."""
    for job in checks(world, conversation_id=conversation_id):
        world.jobs.remove(job)
        world.services.jobs.run(json.dumps(job))


def answers(world: World, connection: str, **frame: Any) -> list[dict[str, Any]]:
    """A frame with the caller's own id (a replay reuses one); its answers."""
    before = len(world.h.sender.sent)
    world.h.frame(connection, **frame)
    return [json.loads(d) for cid, d in world.h.sender.sent[before:] if cid == connection]


def ack_path(world: World) -> list[str]:
    """The AWS calls of one ack that moves the cursor and tells the sender."""
    sender = world.connect("ws", Identity("user", "probe"))
    receiver = world.connect("ws", BOB)
    world.ask(sender, action="send", to=BOB.to_json(), text="probe")
    world.h.log.calls.clear()
    world.ask(receiver, action="ack", conversation_id=direct_conversation_id(Identity("user", "probe"), BOB), seq=1)
    assert world.received(sender, "delivered"), "the happy path tells the sender"
    return list(world.h.log.calls)


@pytest.mark.parametrize("fault", ["crash", "error"])
def test_the_sender_is_told_delivered_whatever_fails_on_the_ack_path(world: World, fault: str) -> None:
    path = ack_path(world)
    assert POST in path and "dynamodb.UpdateItem" in path
    for at in range(1, len(path) + 1):
        alice = Identity("user", f"{fault}-{at}")
        conversation = direct_conversation_id(alice, BOB)
        sender = world.connect("ws", alice)
        receiver = world.connect("ws", BOB)
        world.ask(sender, action="send", to=BOB.to_json(), text="hello")
        world.h.log.calls.clear()
        if fault == "crash":
            world.h.log.fail_at = at
            with pytest.raises(Crash):
                world.frame(receiver, action="ack", conversation_id=conversation, seq=1)
        else:
            world.h.log.error_at = at
            world.frame(receiver, action="ack", conversation_id=conversation, seq=1)
        world.h.log.fail_at = world.h.log.error_at = None
        run_checks(world, conversation)  # the check due 10 s after the send
        if not world.received(sender, "delivered"):
            # it died before the cursor moved: the check retransmitted, the client acks again
            assert [f["seq"] for f in world.received(receiver, "message") if f["conversation_id"] == conversation]
            world.ask(receiver, action="ack", conversation_id=conversation, seq=1)
        told = world.received(sender, "delivered")
        assert told and {f["seq"] for f in told} == {1}, (fault, path[at - 1])


def test_an_ack_whose_write_ran_twice_still_tells_the_sender(world: World) -> None:
    """The SDK retries an UpdateItem whose response was lost: the first attempt moved the
    cursor, the second fails its own condition and nothing errors."""
    alice = Identity("user", "alice")
    conversation = direct_conversation_id(alice, BOB)
    sender = world.connect("ws", alice)
    receiver = world.connect("ws", BOB)
    world.ask(sender, action="send", to=BOB.to_json(), text="hello")
    assert world.services.messaging._members.advance(BOB, conversation, Cursor.ACKED, 1) is not None
    assert world.ask(receiver, action="ack", conversation_id=conversation, seq=1)["seq"] == 1
    assert [f["seq"] for f in world.received(sender, "delivered")] == [1]
    world.ask(receiver, action="ack", conversation_id=conversation, seq=1)  # told once is enough
    run_checks(world, conversation)
    assert [f["seq"] for f in world.received(sender, "delivered")] == [1]


def test_a_delivered_that_no_connection_took_is_told_again_by_the_ack_check(provisioned: dict[str, str]) -> None:
    """The sender's only connection answers 410 while it is still in its handshake grace (kept,
    not forgotten; the chaos run's spurious 410): `delivered` reached nobody, so it is not
    noted as told, and the ack check tells it again (and, failing again, checks once more)."""
    world = World(provisioned, handshake_grace=3600)  # every connection is "new"
    alice = Identity("user", "alice")
    conversation = direct_conversation_id(alice, BOB)
    sender = world.connect("ws", alice)
    receiver = world.connect("ws", BOB)
    world.ask(sender, action="send", to=BOB.to_json(), text="the last word")
    world.h.sender.gone.add(sender)  # the spurious 410s begin
    world.ask(receiver, action="ack", conversation_id=conversation, seq=1)
    assert world.received(sender, "delivered") == []
    run_checks(world, conversation)  # the send's check and the ack's: acked, not told: tell, 410 again
    assert world.received(sender, "delivered") == [] and checks(world, conversation_id=conversation)
    world.h.sender.gone.discard(sender)  # the connection answers again
    run_checks(world, conversation)
    assert [f["seq"] for f in world.received(sender, "delivered")] == [1]
    assert checks(world, conversation_id=conversation) == []  # told: nothing more to check


def test_an_ack_after_the_last_check_whose_delivered_fails_queues_a_check_to_tell_again(
        provisioned: dict[str, str]) -> None:
    """The receiver acks after the send's checks have all run (at its reconnect, say) and the
    sender's only connection answers 410 in its handshake: `delivered` reached nobody, and no
    check was left to tell it. The ack queues one; it tells the connected sender."""
    world = World(provisioned, handshake_grace=3600)
    alice = Identity("user", "alice")
    conversation = direct_conversation_id(alice, BOB)
    sender = world.connect("ws", alice)
    receiver = world.connect("ws", BOB)
    world.ask(sender, action="send", to=BOB.to_json(), text="hello")
    world.jobs.clear()  # the send's checks: all run, long ago
    world.h.sender.gone.add(sender)
    world.ask(receiver, action="ack", conversation_id=conversation, seq=1)
    world.h.sender.gone.discard(sender)
    assert world.received(sender, "delivered") == []
    assert len(checks(world, conversation_id=conversation)) == 1
    run_checks(world, conversation)
    assert [f["seq"] for f in world.received(sender, "delivered")] == [1]
    assert checks(world, conversation_id=conversation) == []

def send_whose_check_cannot_be_queued(world: World, sender: str, ref: str) -> dict[str, Any]:
    """Alice's send of `ref` to bob, its ack check's SendMessage failing (past its retries); the
    answer. (The job the recorder saw leave never reached the queue: it is dropped.)"""
    path_of = World(world.env)  # a clean run shows where the check is queued
    probe = path_of.connect("ws", Identity("user", "probe"))
    path_of.h.log.calls.clear()
    path_of.h.frame(probe, action="send", id="p", to=BOB.to_json(), text="probe")
    world.h.log.calls.clear()
    world.h.log.error_at = path_of.h.log.calls.index("sqs.SendMessage") + 1
    world.h.log.error_calls = 2  # and the server's second try
    answer, = answers(world, sender, action="send", id=ref, to=BOB.to_json(), text="the last word")
    world.h.log.error_at, world.h.log.error_calls = None, 1
    world.jobs.clear()
    return answer


def test_a_check_whose_first_enqueue_fails_is_queued_by_the_second_and_the_send_answered_sent(
        provisioned: dict[str, str]) -> None:
    """The sender's retry after `internal_error` may never come (a client may settle the send
    from its own copy in a pull), so the server tries the check's enqueue once more first."""
    world = World(provisioned)
    alice = Identity("user", "alice")
    sender = world.connect("ws", alice)
    world.connect("ws", BOB)
    world.h.log.calls.clear()
    world.h.log.error_at = 4  # TransactWriteItems, Query, PostToConnection, then the SendMessage: fails
    sent, = answers(world, sender, action="send", id="m", to=BOB.to_json(), text="hello")
    world.h.log.error_at = None
    assert world.h.log.calls[3:5] == ["sqs.SendMessage", "sqs.SendMessage"]
    assert sent["type"] == "sent" and sent["seq"] == 1
    queued = checks(world, conversation_id=direct_conversation_id(alice, BOB), attempt=1)
    assert len(queued) == 2  # the recorder sees both tries' bodies: the first failed, the second went


def test_a_send_whose_ack_check_cannot_be_queued_is_retried_and_its_retry_delivers(provisioned: dict[str, str]
                                                                                  ) -> None:
    """The chaos run's lost message: the last of a 1:1 conversation, its push reaching nobody
    (a 410 from a connection still in its handshake) and its ack check not queued: nothing
    would push it again, and no later message would show the gap. Now the send answers
    `internal_error` (outcome unknown: send the same frame again, §9a), and the retry pushes
    it and queues the check."""
    world = World(provisioned, handshake_grace=3600)  # a 410 keeps the connection
    alice = Identity("user", "alice")
    conversation = direct_conversation_id(alice, BOB)
    sender = world.connect("ws", alice)
    receiver = world.connect("ws", BOB)
    world.h.sender.gone.add(receiver)  # the push is lost
    refused = send_whose_check_cannot_be_queued(world, sender, "tail")
    assert refused["type"] == "error" and refused["code"] == "internal_error"
    assert world.received(receiver, "message") == [] and checks(world) == []  # stored, delivery not assured
    world.h.sender.gone.discard(receiver)
    sent, = answers(world, sender, action="send", id="tail", to=BOB.to_json(), text="the last word")  # the retry
    assert sent["type"] == "sent" and sent["seq"] == 1
    assert [f["text"] for f in world.received(receiver, "message")] == ["the last word"]
    assert len(checks(world, conversation_id=conversation, attempt=1)) == 1


def test_the_retry_of_such_a_send_tells_delivered_when_the_acks_telling_failed(provisioned: dict[str, str]) -> None:
    """The push arrived and the receiver acked, but its `delivered` reached none of the sender's
    connections, and no ack check was queued to tell it again: the retry of the send (a
    repeat, the receiver has acked) tells it, and pushes nothing to the receiver again."""
    world = World(provisioned, handshake_grace=3600)
    alice = Identity("user", "alice")
    conversation = direct_conversation_id(alice, BOB)
    sender = world.connect("ws", alice)
    receiver = world.connect("ws", BOB)
    assert send_whose_check_cannot_be_queued(world, sender, "tail")["code"] == "internal_error"
    assert [f["seq"] for f in world.received(receiver, "message")] == [1]
    world.h.sender.gone.add(sender)  # its `delivered` reaches nobody
    world.ask(receiver, action="ack", conversation_id=conversation, seq=1)
    world.h.sender.gone.discard(sender)
    assert world.received(sender, "delivered") == []
    retried = answers(world, sender, action="send", id="tail", to=BOB.to_json(), text="the last word")
    assert [(f["type"], f["seq"]) for f in retried] == [("delivered", 1), ("sent", 1)]
    assert len(world.received(receiver, "message")) == 1


def test_the_next_check_is_queued_before_a_retransmission_that_dies(world: World) -> None:
    alice = Identity("user", "alice")
    conversation = direct_conversation_id(alice, BOB)
    sender = world.connect("ws", alice)
    world.connect("ws", BOB)  # connected, but its pushes are lost: it never acks
    world.ask(sender, action="send", to=BOB.to_json(), text="hello")
    first, = checks(world, conversation_id=conversation)
    world.jobs.remove(first)
    world.h.log.calls.clear()
    world.services.jobs.run(json.dumps(first))  # a clean run shows where the retransmission pushes
    path = list(world.h.log.calls)
    calls_before_push = path.index(POST) + 1
    second = checks(world, conversation_id=conversation, attempt=2)
    assert len(second) == 1
    world.jobs.remove(second[0])
    world.h.log.calls.clear()
    world.h.log.fail_at = calls_before_push
    with pytest.raises(Crash):
        world.services.jobs.run(json.dumps(first))  # SQS redelivers the first check; it dies pushing
    world.h.log.fail_at = None
    assert len(checks(world, conversation_id=conversation, attempt=2)) == 1  # the schedule holds


def test_replays_of_a_stored_send_are_counted_like_fresh_sends(provisioned: dict[str, str]) -> None:
    world = World({**provisioned, "SEND_LIMIT": "5", "SEND_WINDOW_SECONDS": "60"})
    alice = Identity("user", "alice")
    sender = world.connect("ws", alice)
    receiver = world.connect("ws", BOB)
    assert answers(world, sender, id="m-1", action="send", to=BOB.to_json(), text="once")[0]["type"] == "sent"
    replays = []
    for _ in range(8):
        replays += answers(world, sender, action="send", id="m-1", text="once", to=BOB.to_json())
    kinds = [f.get("type") if f.get("type") != "error" else f["code"] for f in replays]
    assert kinds == ["sent"] * 4 + ["rate_limited"] * 4  # the send took 1 of 5, each replay 1 more
    assert {f["seq"] for f in replays if f.get("type") == "sent"} == {1}
    # the receiver acked nothing yet: the first retries may push again; once acked, never
    world.ask(receiver, action="ack", conversation_id=direct_conversation_id(alice, BOB), seq=1)
    world.clock.now += 60  # a new window
    pushed = len(world.received(receiver, "message"))
    for _ in range(3):
        world.h.frame(sender, action="send", id="m-1", text="once", to=BOB.to_json())
    assert len(world.received(receiver, "message")) == pushed


def test_a_repeated_group_send_is_fanned_out_again_while_fresh_and_never_once_old(world: World) -> None:
    """A repeat within REFANOUT_SECONDS is a retry whose fan-out may never have started: it
    fans out again (members drop the copy). Later it is a replay: answered `sent` and nothing
    else, however often it comes (issue 21 finding 3)."""
    alice = Identity("user", "alice")
    sender = world.connect("ws", alice)
    member = world.connect("ws", BOB)
    world.wrote_to(alice, BOB)
    group = world.ask(sender, action="group_create", title="g", members=[BOB.to_json()])
    world.run_fanouts()
    assert answers(world, sender, id="g-1", action="send", conversation_id=group["conversation_id"],
                   text="hi all")[0]["type"] == "sent"
    assert world.run_fanouts() == 1
    world.h.frame(sender, action="send", id="g-1", conversation_id=group["conversation_id"], text="hi all")
    assert world.run_fanouts() == 1  # a retry: fanned out again
    pushed = len(world.received(member, "message"))
    key = {"pk": group["conversation_id"], "sk": 2}  # (test-only) the message is older now
    stored = world.messages.get_item(Key=key)["Item"]
    world.messages.update_item(Key=key, UpdateExpression="SET #t = :t", ExpressionAttributeNames={"#t": "time"},
                               ExpressionAttributeValues={":t": int(stored["time"]) - (REFANOUT_SECONDS + 1) * 1000})
    world.h.log.calls.clear()
    for _ in range(20):
        world.h.frame(sender, action="send", id="g-1", conversation_id=group["conversation_id"], text="hi all")
    assert not [j for j in world.jobs if j.get("kind") == GROUP_FANOUT]
    assert world.h.log.calls.count(POST) == 20  # the 20 `sent` answers, nothing else
    assert len(world.received(member, "message")) == pushed


