"""Report (protocol.md §17, issue 26 point 3): a member reports a message or a conversation; the
report keeps copies of the reported message and a bounded context, which stay when the
original is changed or removed; a non-member is refused; bad frames store nothing; the rate
limit; a frame sent again is one report. Both transports."""
from __future__ import annotations

import asyncio
import itertools
from typing import Any

import boto3
import httpx
import pytest

from chalicelib.logic.frames import SendRequest
from chalicelib.logic.messaging import direct_conversation_id
from chalicelib.logic.reports import CONTEXT_BUDGET_BYTES, CONTEXT_EACH_SIDE
from chalicelib.principal import Identity
from chalicelib.storage.reports import ReportsTable
from tests.signal_fixtures import TRANSPORTS, World
from tests.test_chaos_soak import app_stack, dev_token
from webim_client import Client, ClientError, FaultyTransport, LongPollTransport, WebSocketTransport

__all__ = ["app_stack"]
WAIT = 20.0

BOB = Identity("user", "bob-reports")
PAUL = Identity("user", "paul-scammer")
CAROL = Identity("user", "carol-outsider")
CONV = direct_conversation_id(BOB, PAUL)

Frame = dict[str, Any]
_ids = itertools.count()


@pytest.fixture
def world(provisioned: dict[str, str]) -> World:
    return World(provisioned)


def reports(env: dict[str, str]) -> ReportsTable:
    return ReportsTable(boto3.resource("dynamodb").Table(env["MEMBERS_TABLE"]), env["MESSAGES_TABLE"])


def send(world: World, sender: Identity, to: Identity, text: str) -> int:
    request = SendRequest.parse({"id": f"m{next(_ids)}", "text": text, "to": to.to_json()})
    seq = world.services.messaging.send(sender, request)["seq"]
    assert isinstance(seq, int)
    return seq


def exchange(world: World, count: int) -> None:
    """`count` messages, PAUL's on odd seqs and BOB's on even ones."""
    for n in range(1, count + 1):
        assert send(world, PAUL if n % 2 else BOB, BOB if n % 2 else PAUL, f"message {n}") == n


def report_items(world: World) -> list[Frame]:
    """Every report and list entry stored (test-only scan)."""
    _, members = world.stored()
    return [item for item in members if str(item["pk"]).startswith(("P#", "PS#"))]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_member_reports_a_message_with_its_context(world: World, transport: str) -> None:
    exchange(world, 25)
    bob = world.connect(transport, BOB)
    answer = world.ask(bob, action="report", conversation_id=CONV, seq=13, reason="scam",
                       note="asks for my card number\ntwice")
    assert answer["type"] == "reported"
    assert answer["conversation_id"] == CONV and answer["seq"] == 13
    assert answer["report_id"].startswith("r_")

    stored = reports(world.env).get(answer["report_id"])
    assert stored is not None
    assert (stored.reporter, stored.conversation_id, stored.seq, stored.reason, stored.status) == (
        BOB, CONV, 13, "scam", "open")
    assert stored.note == "asks for my card number\ntwice"
    assert stored.message is not None
    assert (stored.message.seq, stored.message.sender, stored.message.text) == (13, PAUL, "message 13")
    assert stored.message.time_ms > 0
    # up to 10 messages each side, oldest first, the reported one not repeated
    assert [m.seq for m in stored.context] == [*range(13 - CONTEXT_EACH_SIDE, 13), *range(14, 14 + CONTEXT_EACH_SIDE)]
    assert [m.text for m in stored.context][:2] == ["message 3", "message 4"]

    entries, more = reports(world.env).entries("open")
    assert [(e.report_id, e.reporter, e.conversation_id, e.seq, e.reason) for e in entries] == [
        (answer["report_id"], BOB, CONV, 13, "scam")]
    assert more is None
    # nothing is pushed to anybody: the reported peer is not told
    paul = world.connect(transport, PAUL)
    assert [f for f in world.received(paul) if f.get("type") not in ("presence",)] == []


def test_a_whole_conversation_is_reported_with_its_last_messages(world: World) -> None:
    exchange(world, 30)
    bob = world.connect("ws", BOB)
    answer = world.ask(bob, action="report", conversation_id=CONV, reason="spam")
    assert "seq" not in answer
    stored = reports(world.env).get(answer["report_id"])
    assert stored is not None and stored.message is None and stored.seq is None and stored.note == ""
    assert [m.seq for m in stored.context] == list(range(30 - 2 * CONTEXT_EACH_SIDE + 1, 31))


def test_the_context_is_bounded_in_bytes_nearest_first(world: World) -> None:
    for n in range(1, 22):
        send(world, PAUL if n % 2 else BOB, BOB if n % 2 else PAUL, f"{n:02d}" + "é" * 3990)
    bob = world.connect("ws", BOB)
    answer = world.ask(bob, action="report", conversation_id=CONV, seq=11, reason="abuse")
    stored = reports(world.env).get(answer["report_id"])
    assert stored is not None and stored.message is not None
    assert stored.message.text.startswith("11")  # the reported message is always kept whole
    seqs = [m.seq for m in stored.context]
    assert 0 < len(seqs) < 2 * CONTEXT_EACH_SIDE
    assert sum(len(m.text.encode()) for m in stored.context) <= CONTEXT_BUDGET_BYTES
    assert all(abs(s - 11) <= max(abs(t - 11) for t in seqs) for s in seqs)
    assert {10, 12} <= set(seqs)  # the nearest first


def test_the_copy_survives_the_original_being_changed_and_removed(world: World) -> None:
    exchange(world, 5)
    bob = world.connect("ws", BOB)
    answer = world.ask(bob, action="report", conversation_id=CONV, seq=3, reason="abuse")
    messages = boto3.resource("dynamodb").Table(world.env["MESSAGES_TABLE"])
    messages.delete_item(Key={"pk": CONV, "sk": 3})  # what a delete for everyone does to the original
    messages.update_item(Key={"pk": CONV, "sk": 4}, UpdateExpression="SET #t = :t",
                         ExpressionAttributeNames={"#t": "text"}, ExpressionAttributeValues={":t": "changed"})
    stored = reports(world.env).get(answer["report_id"])
    assert stored is not None and stored.message is not None
    assert (stored.message.seq, stored.message.text, stored.message.sender) == (3, "message 3", PAUL)
    assert [(m.seq, m.text) for m in stored.context] == [(1, "message 1"), (2, "message 2"), (4, "message 4"),
                                                          (5, "message 5")]


def test_the_copy_survives_the_senders_delete_for_everyone(world: World) -> None:
    exchange(world, 5)
    bob = world.connect("ws", BOB)
    paul = world.connect("ws", PAUL)
    answer = world.ask(bob, action="report", conversation_id=CONV, seq=3, reason="abuse")
    deleted = world.ask(paul, action="delete", conversation_id=CONV, seq=3)  # protocol.md §16
    assert deleted["type"] == "deleted"
    history = world.ask(bob, action="history", conversation_id=CONV)["messages"]
    assert "message 3" not in str(history)
    stored = reports(world.env).get(answer["report_id"])
    assert stored is not None and stored.message is not None
    assert (stored.message.text, stored.message.deleted) == ("message 3", False)
    # a deleted message holds nothing to copy: report the conversation, which copies the tombstone
    again = world.ask(bob, action="report", conversation_id=CONV, seq=3, reason="abuse")
    assert again["code"] == "message_not_found"
    whole = world.ask(bob, action="report", conversation_id=CONV, reason="abuse")
    copied = reports(world.env).get(whole["report_id"])
    assert copied is not None
    assert [(m.seq, m.text, m.deleted) for m in copied.context][2] == (3, "", True)
    assert copied.context[-1].event is not None  # the `deleted` event, seq 6


def test_a_non_member_is_refused_and_nothing_is_stored(world: World) -> None:
    exchange(world, 3)
    carol = world.connect("ws", CAROL)
    for frame in ({"seq": 1}, {}):
        answer = world.ask(carol, action="report", conversation_id=CONV, reason="spam", **frame)
        assert answer["type"] == "error" and answer["code"] == "not_member"
    answer = world.ask(carol, action="report", conversation_id="d_nosuchconversation", reason="spam")
    assert answer["code"] == "not_member"
    assert report_items(world) == []


def test_a_group_member_reports_only_what_it_can_read(world: World) -> None:
    world.wrote_to(BOB, PAUL, CAROL)
    bob = world.connect("ws", BOB)
    group = world.ask(bob, action="group_create", title="market", members=[PAUL.to_json()])["conversation_id"]
    paul = world.connect("ws", PAUL)
    said = world.ask(paul, action="send", conversation_id=group, text="before carol")
    world.ask(bob, action="group_add", conversation_id=group, members=[CAROL.to_json()])
    carol = world.connect("ws", CAROL)
    after = world.ask(paul, action="send", conversation_id=group, text="after carol")
    early = world.ask(carol, action="report", conversation_id=group, seq=said["seq"], reason="spam")
    assert early["code"] == "seq_out_of_range"
    answer = world.ask(carol, action="report", conversation_id=group, seq=after["seq"], reason="spam")
    assert answer["type"] == "reported"
    stored = reports(world.env).get(answer["report_id"])
    assert stored is not None and stored.message is not None and stored.message.text == "after carol"
    assert "before carol" not in [m.text for m in stored.context]  # nothing from before it joined


BAD = [
    ({"reason": "spam"}, "invalid_field"),  # no conversation_id
    ({"conversation_id": CONV}, "invalid_field"),  # no reason
    ({"conversation_id": CONV, "reason": "rude"}, "invalid_field"),
    ({"conversation_id": CONV, "reason": ["spam"]}, "invalid_field"),
    ({"conversation_id": CONV, "reason": "spam", "seq": 0}, "invalid_field"),
    ({"conversation_id": CONV, "reason": "spam", "seq": "1"}, "invalid_field"),
    ({"conversation_id": CONV, "reason": "spam", "seq": True}, "invalid_field"),
    ({"conversation_id": CONV, "reason": "spam", "note": 5}, "invalid_field"),
    ({"conversation_id": CONV, "reason": "spam", "note": "bell\x07"}, "invalid_field"),
    ({"conversation_id": CONV, "reason": "spam", "note": "x" * 1001}, "text_too_long"),
    ({"conversation_id": CONV, "reason": "spam", "seq": 4}, "seq_out_of_range"),  # past the last
    ({"conversation_id": CONV, "reason": "spam", "seq": 2}, "invalid_field"),  # BOB's own message
]


@pytest.mark.parametrize(("fields", "code"), BAD)
def test_bad_reports_are_refused_with_their_code_and_store_nothing(world: World, fields: Frame, code: str) -> None:
    exchange(world, 3)
    bob = world.connect("ws", BOB)
    answer = world.ask(bob, action="report", **fields)
    assert (answer["type"], answer["code"]) == ("error", code)
    assert report_items(world) == []


def test_a_report_without_a_frame_id_is_refused(world: World) -> None:
    exchange(world, 1)
    bob = world.connect("ws", BOB)
    answers = world.frame(bob, action="report", conversation_id=CONV, seq=1, reason="spam")
    assert [(a["type"], a["code"]) for a in answers] == [("error", "invalid_field")]
    assert report_items(world) == []


def test_a_frame_sent_again_is_one_report(world: World) -> None:
    exchange(world, 3)
    bob = world.connect("ws", BOB)
    frame = {"action": "report", "id": "rep-1", "conversation_id": CONV, "seq": 1, "reason": "spam"}
    first = world.frame(bob, **frame)
    again = world.frame(bob, **{**frame, "seq": 3, "reason": "other"})  # a retry answers the original
    assert first == again and first[0]["type"] == "reported" and first[0]["seq"] == 1
    other = world.frame(bob, **{**frame, "id": "rep-2"})
    assert other[0]["report_id"] != first[0]["report_id"]
    entries, _ = reports(world.env).entries("open")
    assert sorted(e.report_id for e in entries) == sorted([first[0]["report_id"], other[0]["report_id"]])
    stored = reports(world.env).get(first[0]["report_id"])
    assert stored is not None and (stored.seq, stored.reason) == (1, "spam")
    # the same frame id from another reporter is its own report
    paul = world.connect("ws", PAUL)
    theirs = world.frame(paul, **{**frame, "seq": 2})
    assert theirs[0]["report_id"] not in (first[0]["report_id"], other[0]["report_id"])


def test_reports_are_rate_limited_per_identity(provisioned: dict[str, str]) -> None:
    world = World({**provisioned, "REPORT_LIMIT": "2", "REPORT_WINDOW_SECONDS": "3600"})
    exchange(world, 3)
    bob = world.connect("ws", BOB)
    for n in (1, 2):
        assert world.ask(bob, action="report", conversation_id=CONV, seq=1, reason="spam", note=str(n))["type"] == \
            "reported"
    refused = world.ask(bob, action="report", conversation_id=CONV, seq=3, reason="spam")
    assert refused["code"] == "rate_limited" and 0 < refused["retry_after"] <= 3600
    assert len(reports(world.env).entries("open")[0]) == 2  # the refused one stored nothing
    paul = world.connect("ws", PAUL)  # per identity: PAUL's own window is untouched
    assert world.ask(paul, action="report", conversation_id=CONV, seq=2, reason="abuse")["type"] == "reported"
    world.clock.now += 3600  # the next window
    assert world.ask(bob, action="report", conversation_id=CONV, seq=3, reason="spam")["type"] == "reported"
    assert len(reports(world.env).entries("open")[0]) == 4


def test_the_operator_list_pages_newest_first(world: World) -> None:
    exchange(world, 3)
    bob = world.connect("ws", BOB)
    ids = [world.ask(bob, action="report", conversation_id=CONV, seq=1, reason="spam")["report_id"]
           for _ in range(3)]
    table = reports(world.env)
    page, cursor = table.entries("open", limit=2)
    assert cursor is not None and len(page) == 2
    rest, end = table.entries("open", limit=2, before=cursor)
    listed = [e.report_id for e in page + rest]
    assert sorted(listed) == sorted(ids) and len(set(listed)) == 3
    times = [e.created_ms for e in page + rest]
    assert times == sorted(times, reverse=True)
    assert table.entries("closed")[0] == []


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_the_sdk_reports_once_although_the_first_answer_is_lost(app_stack: str, provisioned: dict[str, str],
                                                               transport: str) -> None:
    """The Python SDK's `report` against the real app served in-process: its first `reported`
    is lost, the same frame goes again and is answered with the same report; one is stored."""
    lost: list[Frame] = []

    def lose_first_answer(frame: Frame) -> bool:
        if frame.get("type") == "reported" and not lost:
            lost.append(frame)
            return True
        return False

    async def connect(http: httpx.AsyncClient, name: str, drop_in: Any = None) -> Client:
        token = await dev_token(http, app_stack, name)
        inner = (WebSocketTransport(f"ws://{app_stack}/ws?token={token}") if transport == "ws"
                 else LongPollTransport(f"http://{app_stack}/api", token, wait=10))
        client = Client(FaultyTransport(inner, drop_in=drop_in), keepalive=None, ack_timeout=2.0)
        await client.start()
        return client

    async def run() -> Frame:
        async with httpx.AsyncClient() as http:
            seller = await connect(http, f"rp-seller-{transport}")
            buyer = await connect(http, f"rp-buyer-{transport}", drop_in=lose_first_answer)
            try:
                spam = await seller.send("cheap watches", to={"kind": "user", "id": f"rp-buyer-{transport}"})
                await asyncio.wait_for(spam.accepted, WAIT)
                conversation = str(spam.conversation_id)
                await asyncio.wait_for(buyer.inbox.get(), WAIT)
                answer = await asyncio.wait_for(buyer.report(conversation, "spam", seq=1, note="again"), WAIT * 2)
                with pytest.raises(ClientError) as refused:
                    await buyer.report(conversation, "rude", seq=1)
                assert refused.value.code == "invalid_field"
                return answer
            finally:
                for client in (seller, buyer):
                    await client.close()

    answer = asyncio.run(run())
    assert len(lost) == 1 and lost[0]["report_id"] == answer["report_id"]
    assert answer["type"] == "reported" and answer["seq"] == 1
    entries, _ = reports(provisioned).entries("open")
    assert [e.report_id for e in entries] == [answer["report_id"]]
    stored = reports(provisioned).get(answer["report_id"])
    assert stored is not None and stored.message is not None and stored.message.text == "cheap watches"
    assert stored.note == "again"


def test_a_reported_photo_keeps_its_own_copy_past_the_senders_delete(provisioned: dict[str, str]) -> None:
    """The reported photo is copied under r/ (attached once the report is stored): the sender's
    delete for everyone removes the message's object (§16), not the report's."""
    from tests.test_media import ALICE as PHOTO_ALICE
    from tests.test_media import BOB as PHOTO_BOB
    from tests.test_media import CONV as PHOTO_CONV
    from tests.test_media import PNG, Person
    from tests.test_media import World as MediaWorld

    world = MediaWorld(provisioned)
    alice, bob = Person(world, PHOTO_ALICE, "ws"), Person(world, PHOTO_BOB, "ws")
    seq = alice.send_photo(alice.upload(PNG))["seq"]
    (original,) = world.keys("m/")
    answer = bob.ask(action="report", conversation_id=PHOTO_CONV, seq=seq, reason="abuse")
    stored = reports(provisioned).get(answer["report_id"])
    assert stored is not None and stored.message is not None and stored.message.image is not None
    assert stored.message.image.key == original
    assert stored.photo_key == f"r/{answer['report_id']}/{seq}"
    assert world.tag(stored.photo_key) == [{"Key": "webim", "Value": "attached"}]

    assert alice.ask(action="delete", conversation_id=PHOTO_CONV, seq=seq)["type"] == "deleted"
    assert world.keys("m/") == []  # the message's own copy is gone
    kept = world.s3.get_object(Bucket=world.bucket, Key=stored.photo_key)
    assert kept["Body"].read() == PNG and kept["ContentType"] == "image/png"
    # the same frame again (its answer lost) after the delete: the report stands, one copy
    again = bob.ask(action="report", id=answer["ref"], conversation_id=PHOTO_CONV, seq=seq, reason="abuse")
    assert (again["type"], again["report_id"]) == ("reported", answer["report_id"])
    assert world.keys("r/") == [stored.photo_key]
    fresh = bob.ask(action="report", conversation_id=PHOTO_CONV, seq=seq, reason="abuse")  # a new id
    assert fresh["code"] == "message_not_found"


def test_the_benchmark_counts_a_report_and_its_repeat(provisioned: dict[str, str]) -> None:
    """bench/report_calls.py (docs/performance.md `report`): the calls it prices."""
    from bench.report_calls import measure

    calls = {name: [r.call.split(".")[-1] for r in phase.records] for name, phase in measure(provisioned).items()}
    message, conversation, again = calls.values()
    assert message == ["GetItem", "GetItem", "Query", "Query", "TransactWriteItems", "PostToConnection"]
    assert conversation == ["GetItem", "Query", "TransactWriteItems", "PostToConnection"]  # the answer is the push
    assert again == message[:-1] + ["UpdateItem", "PostToConnection"]  # refused by its own condition; counted
