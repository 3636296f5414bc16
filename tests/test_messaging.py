"""Reliable 1:1 messaging on moto, with pushes recorded and faults injected between AWS calls."""
from __future__ import annotations

import json
import threading
from typing import Any

import boto3
import pytest

from chalicelib.logic.frames import SendRequest
from chalicelib.logic.messaging import ACK_CHECK, direct_conversation_id
from chalicelib.principal import Identity
from chalicelib.wiring import Services
from tests.messaging_fixtures import Crash, Harness, build_harness

ALICE = Identity("user", "alice")
BOB = Identity("user", "bob")
CONV = direct_conversation_id(ALICE, BOB)


@pytest.fixture
def harness(provisioned: dict[str, str]) -> Harness:
    h = build_harness(provisioned)
    h.connect("a1", ALICE)
    h.connect("b1", BOB)
    h.log.calls.clear()
    return h


def send(h: Harness, connection: str, text: str, client_id: str, to: Identity = BOB) -> None:
    h.frame(connection, action="send", id=client_id, text=text, to=to.to_json())


def stored(env: dict[str, str], conversation_id: str = CONV) -> list[dict[str, Any]]:
    table = boto3.resource("dynamodb").Table(env["MESSAGES_TABLE"])
    items = table.query(KeyConditionExpression="pk = :c", ExpressionAttributeValues={":c": conversation_id})["Items"]
    return [i for i in items if int(i["sk"]) > 0]


def queued_checks(env: dict[str, str]) -> int:
    attributes = boto3.client("sqs").get_queue_attributes(
        QueueUrl=env["JOBS_QUEUE_URL"], AttributeNames=["ApproximateNumberOfMessagesDelayed"])
    return int(attributes["Attributes"]["ApproximateNumberOfMessagesDelayed"])


def test_the_six_packets(harness: Harness) -> None:
    send(harness, "a1", "hello", "m1")
    sent, = harness.frames_to("a1", "sent")
    message, = harness.frames_to("b1", "message")
    assert sent == {"type": "sent", "ref": "m1", "conversation_id": CONV, "seq": 1, "time": message["time"]}
    assert message["from"] == ALICE.to_json() and message["text"] == "hello" and message["seq"] == 1
    harness.frame("b1", action="ack", id="k1", conversation_id=CONV, seq=1)
    assert harness.frames_to("b1", "acked") == [{"type": "acked", "ref": "k1", "conversation_id": CONV, "seq": 1}]
    assert harness.frames_to("a1", "delivered") == [
        {"type": "delivered", "conversation_id": CONV, "seq": 1, "by": BOB.to_json()}]


def test_repeated_send_returns_the_original_seq_and_stores_nothing_new(harness: Harness,
                                                                       provisioned: dict[str, str]) -> None:
    send(harness, "a1", "hello", "m1")
    send(harness, "a1", "hello", "m1")  # the msg:A was lost, the client retries
    first, second = harness.frames_to("a1", "sent")
    assert first == second
    assert len(stored(provisioned)) == 1
    # the retry re-sends msg:N (the receiver drops the duplicate by seq)
    assert [m["seq"] for m in harness.frames_to("b1", "message")] == [1, 1]


def test_a_retry_in_another_container_is_recognised(harness: Harness, provisioned: dict[str, str]) -> None:
    send(harness, "a1", "hello", "m1")
    other = build_harness(provisioned)  # a fresh container: no cache, its own clients
    other.frame("a1", action="send", id="m1", text="hello", to=BOB.to_json())
    assert other.frames_to("a1", "sent") == harness.frames_to("a1", "sent")
    assert len(stored(provisioned)) == 1


def test_a_reused_id_with_other_text_cannot_overwrite(harness: Harness, provisioned: dict[str, str]) -> None:
    send(harness, "a1", "hello", "m1")
    send(harness, "a1", "tampered", "m1")
    assert [m["text"] for m in harness.frames_to("b1", "message")] == ["hello", "hello"]
    assert [m["text"] for m in stored(provisioned)] == ["hello"]


def test_seq_is_gap_free_in_order_from_both_sides(harness: Harness, provisioned: dict[str, str]) -> None:
    for i in range(3):
        send(harness, "a1", f"a{i}", f"a{i}")
        harness.frame("b1", action="send", id=f"b{i}", text=f"b{i}", to=ALICE.to_json())
    assert [int(m["sk"]) for m in stored(provisioned)] == [1, 2, 3, 4, 5, 6]
    assert [m["text"] for m in stored(provisioned)] == ["a0", "b0", "a1", "b1", "a2", "b2"]


def test_twenty_concurrent_senders_get_gap_free_seqs(provisioned: dict[str, str]) -> None:
    """Twenty containers (own caches, own clients) sending into one conversation at once."""
    senders = [Identity("user", f"s{i}") for i in range(20)]
    target = Identity("user", "shared")
    harnesses = [build_harness(provisioned) for _ in senders]
    # all twenty write into the conversation of s0 and `shared`, by id, as members of it
    conversation = direct_conversation_id(senders[0], target)
    for h in harnesses:
        h.connect("c0", senders[0])
    barrier = threading.Barrier(20)
    errors: list[BaseException] = []

    def run(h: Harness, index: int) -> None:
        try:
            barrier.wait()
            for round_ in range(3):
                h.frame("c0", action="send", id=f"w{index}-{round_}", text=f"{index}/{round_}", to=target.to_json())
        except BaseException as error:  # surfaced below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(h, i)) for i, h in enumerate(harnesses)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    seqs = sorted(int(m["sk"]) for m in stored(provisioned, conversation))
    assert seqs == list(range(1, 61))
    assert len({m["client_id"] for m in stored(provisioned, conversation)}) == 60
    accepted = sorted(f["seq"] for h in harnesses for f in h.frames_to("c0", "sent"))
    assert accepted == list(range(1, 61))


def test_a_crash_between_any_two_aws_calls_converges_to_one_message(provisioned: dict[str, str]) -> None:
    probe = build_harness(provisioned)
    probe.connect("a1", ALICE)
    probe.connect("b1", BOB)
    probe.log.calls.clear()
    probe.frame("a1", action="send", id="probe", text="x", to=BOB.to_json())
    path = list(probe.log.calls)
    assert len(path) >= 5, path  # the store, the receiver's connections, msg:N, the check, msg:A
    for crash_at in range(1, len(path) + 1):
        sender = Identity("user", f"crash{crash_at}")
        conversation = direct_conversation_id(sender, BOB)
        h = build_harness(provisioned)
        h.connect(f"x{crash_at}", sender)
        h.log.calls.clear()
        h.log.fail_at = crash_at
        with pytest.raises(Crash):
            h.frame(f"x{crash_at}", action="send", id="m", text="once", to=BOB.to_json())
        h.log.fail_at = None
        retry = build_harness(provisioned)  # the client's retry, maybe in another container
        retry.frame(f"x{crash_at}", action="send", id="m", text="once", to=BOB.to_json())
        kept = [(int(m["sk"]), m["text"]) for m in stored(provisioned, conversation)]
        assert kept == [(1, "once")], path[crash_at - 1]
        assert retry.frames_to(f"x{crash_at}", "sent")[0]["seq"] == 1
        pushed = h.frames_to("b1", "message") + retry.frames_to("b1", "message")
        assert {m["seq"] for m in pushed} == {1}  # the receiver got it, at most repeated


def test_a_failing_aws_call_answers_internal_error_and_the_retry_succeeds(harness: Harness,
                                                                        provisioned: dict[str, str]) -> None:
    harness.log.error_at = 1  # the store call fails (say, throttled beyond its retries)
    send(harness, "a1", "hello", "m1")
    error = harness.frames_to("a1")[-1]
    assert error == {"type": "error", "code": "internal_error", "message": "an internal error occurred", "ref": "m1"}
    assert stored(provisioned) == []
    harness.log.error_at = None
    send(harness, "a1", "hello", "m1")
    assert harness.frames_to("a1")[-1]["type"] == "sent" and len(stored(provisioned)) == 1


def test_bad_input_gets_error_frames_and_stores_nothing(harness: Harness, provisioned: dict[str, str]) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"action": "send", "id": "e1", "text": "hi", "to": ALICE.to_json()}, "invalid_recipient"),
        ({"action": "send", "id": "e2", "text": "hi"}, "invalid_field"),
        ({"action": "send", "id": "e3", "text": "hi", "to": BOB.to_json(), "conversation_id": CONV}, "invalid_field"),
        ({"action": "send", "id": "e4", "text": "", "to": BOB.to_json()}, "invalid_field"),
        ({"action": "send", "id": "e5", "text": 7, "to": BOB.to_json()}, "invalid_field"),
        ({"action": "send", "id": "e6", "text": "x" * 4001, "to": BOB.to_json()}, "text_too_long"),
        ({"action": "send", "id": "e7", "text": "hi", "to": {"kind": "robot", "id": "r"}}, "invalid_field"),
        ({"action": "send", "id": "e8", "text": "hi", "conversation_id": "d_someone_elses"}, "not_member"),
        ({"action": "send", "id": "e9", "text": "hi", "to": BOB.to_json(), "last_seq": "3"}, "invalid_field"),
        ({"action": "ack", "id": "e10", "conversation_id": CONV, "seq": 1}, "not_member"),
        ({"action": "ack", "id": "e11", "conversation_id": CONV, "seq": 0}, "invalid_field"),
        ({"action": "history", "id": "e12", "conversation_id": CONV}, "not_member"),
        ({"action": "sync", "id": "e13", "since": [1]}, "invalid_field"),
        ({"action": "send", "text": "hi", "to": BOB.to_json()}, "invalid_field"),
    ]
    for frame, code in cases:
        harness.frame("a1", **frame)
        error = harness.frames_to("a1")[-1]
        assert error["type"] == "error" and error["code"] == code, (frame, error)
        if "id" in frame:
            assert error["ref"] == frame["id"]
    assert stored(provisioned) == []
    send(harness, "a1", "still works", "ok")  # the connection stays usable
    assert harness.frames_to("a1")[-1]["type"] == "sent"


def test_ack_is_cumulative_never_backwards_nor_past_the_last(harness: Harness) -> None:
    for i in range(3):
        send(harness, "a1", f"m{i}", f"m{i}")
    harness.frame("b1", action="ack", id="k1", conversation_id=CONV, seq=3)
    harness.frame("b1", action="ack", id="k2", conversation_id=CONV, seq=2)  # late, older
    harness.frame("b1", action="ack", id="k3", conversation_id=CONV, seq=9)  # past the last
    acked = harness.frames_to("b1", "acked")
    assert [a["seq"] for a in acked] == [3, 3]
    assert harness.frames_to("b1", "error")[-1]["code"] == "seq_out_of_range"
    assert [d["seq"] for d in harness.frames_to("a1", "delivered")] == [3]  # once, for the move


def test_gone_connection_is_dropped_and_the_message_kept_for_pull(harness: Harness) -> None:
    harness.connect("b2", BOB)
    harness.sender.gone.add("b1")  # API Gateway answers 410 for b1
    send(harness, "a1", "hello", "m1")
    assert harness.services.router.lookup("b1") is None
    assert [m["seq"] for m in harness.frames_to("b2", "message")] == [1]
    harness.frame("b2", action="sync", id="s")
    assert [m["text"] for m in harness.frames_to("b2", "sync")[0]["messages"]] == ["hello"]


def test_a_410_during_the_handshake_does_not_forget_the_new_connection(provisioned: dict[str, str]) -> None:
    """A push can reach a connection registered by `$connect` before API Gateway has opened
    it; that 410 means "not yet", and the connection must survive it (the client pulls)."""
    h = build_harness(provisioned, handshake_grace=10)
    h.connect("a1", ALICE)
    h.connect("b-new", BOB)
    h.sender.gone.add("b-new")  # still in its handshake
    send(h, "a1", "hello", "m1")
    assert h.services.router.lookup("b-new") is not None
    h.sender.gone.discard("b-new")
    h.frame("b-new", action="sync", id="s")
    assert [m["text"] for m in h.frames_to("b-new", "sync")[0]["messages"]] == ["hello"]


def test_every_connection_of_both_sides_gets_its_frames(harness: Harness) -> None:
    harness.connect("a2", ALICE)
    harness.connect("b2", BOB)
    send(harness, "a1", "hello", "m1")
    assert len(harness.frames_to("b1", "message")) == len(harness.frames_to("b2", "message")) == 1
    assert harness.frames_to("a2", "sent") == []  # msg:A answers the sending connection
    harness.frame("b2", action="ack", id="k", conversation_id=CONV, seq=1)
    assert len(harness.frames_to("a1", "delivered")) == len(harness.frames_to("a2", "delivered")) == 1


def test_offline_receiver_gets_nothing_pushed_then_pulls_everything(harness: Harness) -> None:
    carol = Identity("user", "carol")
    conversation = direct_conversation_id(ALICE, carol)
    for i in range(5):
        send(harness, "a1", f"m{i}", f"m{i}", to=carol)
    harness.connect("c1", carol)
    assert harness.frames_to("c1") == []
    harness.frame("c1", action="sync", id="s1", limit=3)
    page = harness.frames_to("c1", "sync")[0]
    assert [m["seq"] for m in page["messages"]] == [1, 2, 3] and page["more"] is True
    # the pull is repeatable until acked: a lost pull-ack gives the same page again
    harness.frame("c1", action="sync", id="s2", limit=3)
    assert harness.frames_to("c1", "sync")[1]["messages"] == page["messages"]
    harness.frame("c1", action="ack", id="k", conversation_id=conversation, seq=3)
    harness.frame("c1", action="sync", id="s3", limit=3)
    rest = harness.frames_to("c1", "sync")[2]
    assert [m["seq"] for m in rest["messages"]] == [4, 5] and rest["more"] is False
    # `since` continues without waiting for the ack
    harness.frame("c1", action="sync", id="s4", since={conversation: 4})
    assert [m["seq"] for m in harness.frames_to("c1", "sync")[3]["messages"]] == [5]


def test_history_pages_backwards(harness: Harness) -> None:
    for i in range(25):
        send(harness, "a1", f"m{i}", f"m{i}")
    harness.frame("b1", action="history", id="h1", conversation_id=CONV, limit=10)
    first = harness.frames_to("b1", "history")[0]
    assert [m["seq"] for m in first["messages"]] == list(range(16, 26)) and first["more"]
    harness.frame("b1", action="history", id="h2", conversation_id=CONV, before=16, limit=10)
    harness.frame("b1", action="history", id="h3", conversation_id=CONV, before=6, limit=10)
    second, third = harness.frames_to("b1", "history")[1:]
    assert [m["seq"] for m in second["messages"]] == list(range(6, 16))
    assert [m["seq"] for m in third["messages"]] == [1, 2, 3, 4, 5] and not third["more"]


def test_conversation_list_has_last_message_and_unread_count(harness: Harness) -> None:
    carol = Identity("user", "carol")
    send(harness, "a1", "first", "m1")
    send(harness, "a1", "second", "m2")
    harness.frame("b1", action="send", id="b1m", text="to carol", to=carol.to_json())
    harness.frame("b1", action="conversations", id="l")
    listed = harness.frames_to("b1", "conversations")[0]["conversations"]
    assert [c["peer"] for c in listed] == [carol.to_json(), ALICE.to_json()]  # newest first
    with_alice = listed[1]
    assert with_alice["unread"] == 2 and with_alice["last_message"]["text"] == "second"
    assert listed[0]["unread"] == 0  # what I sent myself is read
    harness.frame("b1", action="read", id="r", conversation_id=CONV, seq=1)
    harness.frame("b1", action="conversations", id="l2")
    assert harness.frames_to("b1", "conversations")[1]["conversations"][1]["unread"] == 1


def test_conversation_list_tells_how_far_the_peer_has_received(harness: Harness) -> None:
    """A client that missed the live `delivered` (a reload, another device) learns it here."""
    send(harness, "a1", "one", "m1")
    send(harness, "a1", "two", "m2")
    harness.frame("a1", action="conversations", id="l1")
    assert harness.frames_to("a1", "conversations")[0]["conversations"][0]["peer_acked_seq"] == 0
    harness.frame("b1", action="ack", id="k", conversation_id=CONV, seq=1)
    harness.frame("a1", action="conversations", id="l2")
    assert harness.frames_to("a1", "conversations")[1]["conversations"][0]["peer_acked_seq"] == 1
    harness.frame("b1", action="conversations", id="l3")
    assert harness.frames_to("b1", "conversations")[0]["conversations"][0]["peer_acked_seq"] == 0  # alice acked nothing


def run_check(services: Services, **job: Any) -> None:
    services.jobs.run(json.dumps({"kind": ACK_CHECK, **job}))


def test_check_retransmits_to_a_connected_receiver_until_acked(harness: Harness,
                                                               provisioned: dict[str, str]) -> None:
    send(harness, "a1", "one", "m1")
    send(harness, "a1", "two", "m2")
    before = queued_checks(provisioned)
    job = {"conversation_id": CONV, "seq": 2, "receiver": BOB.key, "attempt": 1}
    run_check(harness.services, **job)
    assert [m["seq"] for m in harness.frames_to("b1", "message")] == [1, 2, 1, 2]
    assert queued_checks(provisioned) == before + 1  # the next attempt, with backoff
    # SQS delivers the same job twice: it pushes again, harmlessly
    run_check(harness.services, **job)
    assert len(harness.frames_to("b1", "message")) == 6
    harness.frame("b1", action="ack", id="k", conversation_id=CONV, seq=2)
    run_check(harness.services, **job)
    assert len(harness.frames_to("b1", "message")) == 6  # acked: nothing more


def test_check_stops_at_the_last_attempt_and_for_offline_receivers(harness: Harness,
                                                                   provisioned: dict[str, str]) -> None:
    send(harness, "a1", "one", "m1")
    before = queued_checks(provisioned)
    run_check(harness.services, conversation_id=CONV, seq=1, receiver=BOB.key, attempt=3)
    assert len(harness.frames_to("b1", "message")) == 2 and queued_checks(provisioned) == before
    harness.services.sessions.close("b1")
    before = queued_checks(provisioned)  # (closing scheduled a presence check)
    run_check(harness.services, conversation_id=CONV, seq=1, receiver=BOB.key, attempt=1)
    assert len(harness.frames_to("b1", "message")) == 2 and queued_checks(provisioned) == before
    harness.connect("b9", BOB)  # and when bob is back, the pull has it
    harness.frame("b9", action="sync", id="s")
    assert [m["text"] for m in harness.frames_to("b9", "sync")[0]["messages"]] == ["one"]


def test_the_sender_is_the_connection_never_a_field(harness: Harness) -> None:
    harness.frame("a1", action="send", id="m", text="hi", to=BOB.to_json(), **{"from": {"kind": "user", "id": "eve"}})
    assert harness.frames_to("b1", "message")[0]["from"] == ALICE.to_json()


def test_send_request_parsing_rejects_a_hint_that_is_not_an_int() -> None:
    with pytest.raises(Exception, match="last_seq"):
        SendRequest.parse({"id": "x", "text": "t", "to": BOB.to_json(), "last_seq": True})


def test_a_linked_user_receives_acks_and_pulls_in_the_visitors_conversation(harness: Harness) -> None:
    visitor, buyer = Identity("visitor", "v-9"), Identity("user", "buyer-9")
    harness.connect("v", visitor)
    harness.frame("v", action="send", id="q", text="is it still for sale?", to=BOB.to_json())
    conversation = direct_conversation_id(visitor, BOB)
    harness.services.linking.link(buyer, visitor)
    harness.connect("u", buyer)
    harness.frame("b1", action="send", id="r", text="yes it is", conversation_id=conversation)
    assert [m["text"] for m in harness.frames_to("u", "message")] == ["yes it is"]  # pushed live
    harness.frame("u", action="sync", id="s")
    # what the visitor wrote (1) and the reply (2): the pull starts at the carried-over cursor
    assert [m["seq"] for m in harness.frames_to("u", "sync")[0]["messages"]] == [1, 2]
    harness.frame("u", action="ack", id="k", conversation_id=conversation, seq=2)
    assert harness.frames_to("u", "acked")[0]["seq"] == 2
    assert harness.frames_to("b1", "delivered")[-1]["by"] == buyer.to_json()
    harness.frame("u", action="send", id="u1", text="great, I'll take it", conversation_id=conversation)
    assert harness.frames_to("b1", "message")[-1]["from"] == buyer.to_json()


def test_pages_fit_in_one_websocket_message(harness: Harness) -> None:
    for i in range(40):
        send(harness, "a1", f"{i:04d}" + "ü" * 3996, f"big{i}")
    harness.frame("b1", action="sync", id="s", limit=200)
    harness.frame("b1", action="history", id="h", conversation_id=CONV, limit=200)
    for data in [d for cid, d in harness.sender.sent if cid == "b1"][-2:]:
        assert len(data) < 128 * 1024
    page = harness.frames_to("b1", "sync")[0]
    assert page["more"] and 0 < len(page["messages"]) < 40
    assert [m["seq"] for m in page["messages"]] == list(range(1, len(page["messages"]) + 1))
    history = harness.frames_to("b1", "history")[0]
    assert history["more"] and history["messages"][-1]["seq"] == 40
    harness.frame("b1", action="history", id="h0", conversation_id=CONV, before=1)
    assert harness.frames_to("b1", "history")[1]["messages"] == []
