"""Delete for everyone (protocol.md §16, issue 26 point 2): the tombstone in the conversation's
seq, who may delete, every read returning the tombstone only, the photo's object removed, and
the races (a delete against the receiver's ack and the server's retransmission, two deletes at
once, a send retried after its message was deleted). Both transports where cheap.

Interleavings are made with botocore's own events on the app's DynamoDB client (the real call
path, nothing mocked): a step runs exactly between two of the app's AWS calls.
"""
from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from chalicelib.logic.frames import DeleteRequest, SendRequest
from chalicelib.logic.messaging import direct_conversation_id
from chalicelib.principal import Identity
from tests.signal_fixtures import TRANSPORTS, World
from tests.test_chaos_soak import app_stack
from tests.test_client_signals import WAIT, connect
from webim_client.client import Client, ClientError

__all__ = ["app_stack"]

ALICE, BOB, CAROL = Identity("user", "alice-del"), Identity("user", "bob-del"), Identity("user", "carol-del")
CONV = direct_conversation_id(ALICE, BOB)
SECRET = "my card number is 4242"
HOURS = 3600 * 1000
_ids = itertools.count()

Frame = dict[str, Any]


@pytest.fixture
def world(provisioned: dict[str, str]) -> World:
    return World(provisioned)


def send(world: World, sender: Identity, text: str, to: Identity = BOB, conversation_id: str | None = None,
         client_id: str | None = None) -> Frame:
    fields: Frame = {"id": client_id or f"c-{next(_ids)}", "text": text}  # never the text (its key stays)
    fields.update({"conversation_id": conversation_id} if conversation_id else {"to": to.to_json()})
    return world.services.messaging.send(sender, SendRequest.parse(fields))


def delete(world: World, who: Identity, seq: int, conversation_id: str = CONV) -> Frame:
    return world.services.messaging.deletion.delete(who, DeleteRequest(conversation_id, seq))


def run_jobs(world: World, kind: str) -> int:
    pending = [j for j in world.jobs if j.get("kind") == kind]
    world.jobs[:] = [j for j in world.jobs if j.get("kind") != kind]
    for job in pending:
        world.services.jobs.run(json.dumps(job))
    return len(pending)


def age(world: World, conversation_id: str, seq: int, hours: int) -> None:
    """Make message `seq` `hours` old (its stored send time moved back; a test-only write)."""
    item = world.messages.get_item(Key={"pk": conversation_id, "sk": seq})["Item"]
    world.messages.update_item(Key={"pk": conversation_id, "sk": seq}, UpdateExpression="SET #t = :t",
                               ExpressionAttributeNames={"#t": "time"},
                               ExpressionAttributeValues={":t": int(item["time"]) - hours * HOURS})


def between(world: World, operation: str, step: Callable[[], None]) -> None:
    """Run `step` once, just before the app's next DynamoDB `operation` call."""
    events = world.services.messaging.deletion._messages._table.meta.client.meta.events
    done: list[bool] = []

    def hook(**_: Any) -> None:
        if not done:
            done.append(True)
            step()
    events.register(f"before-call.dynamodb.{operation}", hook)


def tombstone_of(seq: int, by: Identity) -> Frame:
    return {"type": "deleted", "seq": seq, "by": by.to_json()}


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_the_sender_deletes_within_the_window_and_every_read_returns_only_the_tombstone(
        world: World, transport: str) -> None:
    bob = world.connect(transport, BOB)
    alice = world.connect(transport, ALICE)
    send(world, ALICE, SECRET)
    send(world, ALICE, "sorry, wrong chat")

    answer = world.ask(alice, action="delete", conversation_id=CONV, seq=1)

    assert {k: v for k, v in answer.items() if k not in ("time", "ref")} == {
        "type": "deleted", "conversation_id": CONV, "seq": 1, "tombstone_seq": 3}
    pushed = [f for f in world.received(bob, "message") if f["seq"] == 3]
    assert [f["event"] for f in pushed] == [tombstone_of(1, ALICE)]
    assert pushed[0]["text"] == "" and pushed[0]["from"] == ALICE.to_json()
    for who in (alice, bob):
        history = world.ask(who, action="history", conversation_id=CONV)["messages"]
        assert [(m["seq"], m["text"], m.get("deleted"), m.get("event")) for m in history] == [
            (1, "", True, None), (2, "sorry, wrong chat", None, None), (3, "", None, tombstone_of(1, ALICE))]
    synced = world.ask(bob, action="sync")["messages"]
    assert [m["seq"] for m in synced] == [1, 2, 3] and synced[0]["deleted"] is True
    listed = world.ask(bob, action="conversations")["conversations"]
    for who in (alice, bob):  # the list says "Message deleted" on both sides, as a group's does
        (entry,) = world.ask(who, action="conversations")["conversations"]
        assert entry["last_message"] == {"seq": 3, "time": entry["last_message"]["time"], "text": "",
                                         "from": ALICE.to_json(), "event": tombstone_of(1, ALICE)}
    messages, members = world.stored()
    for text in (json.dumps(messages, default=str), json.dumps(members, default=str), json.dumps(synced),
                 json.dumps(listed)):
        assert SECRET not in text


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_repeated_delete_answers_the_same_and_stores_nothing_more(world: World, transport: str) -> None:
    bob = world.connect(transport, BOB)
    alice = world.connect(transport, ALICE)
    send(world, ALICE, SECRET)
    first = world.ask(alice, action="delete", conversation_id=CONV, seq=1)
    stored = world.stored()

    again = world.ask(alice, action="delete", conversation_id=CONV, seq=1)

    assert {**again, "ref": None} == {**first, "ref": None}
    assert world.stored() == stored
    assert [f["seq"] for f in world.received(bob, "message")] == [1, 2]


def test_the_senders_window_is_48_hours_by_default(world: World) -> None:
    send(world, ALICE, "old news")
    send(world, ALICE, "also old")
    age(world, CONV, 1, hours=49)
    age(world, CONV, 2, hours=47)
    stored = world.stored()

    bob = world.connect("ws", BOB)
    alice = world.connect("ws", ALICE)
    assert world.ask(alice, action="delete", conversation_id=CONV, seq=1)["code"] == "delete_window_passed"
    assert world.stored() == stored
    assert world.received(bob, "message") == []
    assert world.ask(alice, action="delete", conversation_id=CONV, seq=2)["tombstone_seq"] == 3


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_refusals_have_stable_codes_and_store_nothing(world: World, transport: str) -> None:
    send(world, ALICE, SECRET)
    send(world, BOB, "ok", to=ALICE)
    delete(world, ALICE, 1)  # seq 3: its tombstone
    stored = world.stored()
    alice, bob, carol = (world.connect(transport, who) for who in (ALICE, BOB, CAROL))
    cases: list[tuple[str, Frame, str]] = [
        (bob, {"conversation_id": CONV, "seq": 1}, "not_your_message"),  # a deleted one too: not its
        (alice, {"conversation_id": CONV, "seq": 2}, "not_your_message"),
        (alice, {"conversation_id": CONV, "seq": 3}, "not_deletable"),  # the tombstone is an event
        (alice, {"conversation_id": CONV, "seq": 4}, "message_not_found"),
        (carol, {"conversation_id": CONV, "seq": 1}, "not_member"),
        (alice, {"conversation_id": CONV, "seq": 0}, "invalid_field"),
        (alice, {"conversation_id": CONV, "seq": "1"}, "invalid_field"),
        (alice, {"conversation_id": CONV, "seq": True}, "invalid_field"),
        (alice, {"seq": 1}, "invalid_field"),
        (alice, {"conversation_id": "", "seq": 1}, "invalid_field"),
        (alice, {"conversation_id": CONV}, "invalid_field"),
    ]
    for connection, fields, code in cases:
        answer = world.ask(connection, action="delete", **fields)
        assert (answer["type"], answer.get("code")) == ("error", code), (fields, answer)
    assert world.stored() == stored


def _group(world: World, owner: Identity, *members: Identity) -> tuple[str, dict[Identity, str]]:
    world.wrote_to(owner, *members)
    connections = {who: world.connect("ws", who) for who in (owner, *members)}
    created = world.ask(connections[owner], action="group_create", title="Bikes",
                        members=[m.to_json() for m in members])
    return str(created["conversation_id"]), connections


def test_a_groups_owner_and_admins_delete_any_message_a_member_only_its_own(world: World) -> None:
    group, on = _group(world, ALICE, BOB, CAROL)  # created: seq 1
    send(world, BOB, SECRET, conversation_id=group)  # 2
    send(world, CAROL, "carol's", conversation_id=group)  # 3
    send(world, CAROL, "carol's second", conversation_id=group)  # 4
    world.run_fanouts()
    age(world, group, 2, hours=100)  # a manager's delete has no window

    assert world.ask(on[CAROL], action="delete", conversation_id=group, seq=2)["code"] == "not_your_message"
    assert world.ask(on[CAROL], action="delete", conversation_id=group, seq=1)["code"] == "not_deletable"
    by_owner = world.ask(on[ALICE], action="delete", conversation_id=group, seq=2)
    assert by_owner["tombstone_seq"] == 5
    world.ask(on[ALICE], action="group_role", conversation_id=group, member=BOB.to_json(), role="admin")  # 6
    assert world.ask(on[BOB], action="delete", conversation_id=group, seq=3)["tombstone_seq"] == 7
    assert world.ask(on[CAROL], action="delete", conversation_id=group, seq=4)["tombstone_seq"] == 8
    world.run_fanouts()

    for who, by in ((5, ALICE), (7, BOB), (8, CAROL)):
        seen = {m["seq"]: m for m in world.received(on[CAROL], "message")} if by != CAROL else {
            m["seq"]: m for m in world.received(on[ALICE], "message")}
        assert seen[who]["event"]["type"] == "deleted" and seen[who]["event"]["by"] == by.to_json()
    history = world.ask(on[CAROL], action="history", conversation_id=group)["messages"]
    assert [m["seq"] for m in history if m.get("deleted")] == [2, 3, 4]
    assert SECRET not in json.dumps(history) and "carol's" not in json.dumps(history)
    listed = world.ask(on[CAROL], action="conversations")["conversations"]
    assert listed[0]["last_message"]["event"] == tombstone_of(4, CAROL)


def test_a_demoted_admin_racing_its_own_delete_is_refused_and_nothing_is_stored(world: World) -> None:
    group, on = _group(world, ALICE, BOB, CAROL)
    world.ask(on[ALICE], action="group_role", conversation_id=group, member=BOB.to_json(), role="admin")  # 2
    send(world, CAROL, SECRET, conversation_id=group)  # 3
    # BOB's delete read its admin role; the owner takes it back before its transaction
    between(world, "TransactWriteItems", lambda: world.services.groups.set_role(
        ALICE, None, _role_request(group, BOB, "member")))
    with pytest.raises(Exception) as refused:
        delete(world, BOB, 3, group)
    assert getattr(refused.value, "code", None) == "not_your_message"
    assert world.messages.get_item(Key={"pk": group, "sk": 3})["Item"]["text"] == SECRET
    assert "Item" not in world.messages.get_item(Key={"pk": group, "sk": 5})


def _role_request(group: str, who: Identity, role: str) -> Any:
    from chalicelib.logic.frames import GroupRoleRequest
    return GroupRoleRequest.parse({"id": f"role-{who.id}-{role}", "conversation_id": group,
                                   "member": who.to_json(), "role": role})


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_delete_racing_the_ack_and_the_retransmission_the_tombstone_wins(world: World, transport: str) -> None:
    bob = world.connect(transport, BOB)
    send(world, ALICE, SECRET)  # pushed to BOB, who has not acked: an ack check is queued
    # BOB's ack lands between the delete's reads and its transaction
    between(world, "TransactWriteItems", lambda: world.ask(bob, action="ack", conversation_id=CONV, seq=1))
    assert delete(world, ALICE, 1)["tombstone_seq"] == 2

    while run_jobs(world, "ack_check"):  # every check and retransmission there is
        pass

    retransmitted = [f for f in world.received(bob, "message")]
    assert SECRET not in json.dumps(retransmitted[1:])  # only the first push, before the delete, had it
    assert any(f.get("event") == tombstone_of(1, ALICE) for f in retransmitted)
    assert world.ask(bob, action="ack", conversation_id=CONV, seq=2)["seq"] == 2
    synced = world.ask(bob, action="sync", since={CONV: 0})["messages"]
    assert [(m["seq"], m["text"], m.get("deleted")) for m in synced] == [(1, "", True), (2, "", None)]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_retransmission_after_the_delete_sends_the_tombstone_never_the_text(world: World, transport: str) -> None:
    bob = world.connect(transport, BOB)
    send(world, ALICE, SECRET)
    pushed_before = len(world.received(bob, "message"))
    delete(world, ALICE, 1)

    assert run_jobs(world, "ack_check") >= 1  # the send's check: BOB acked nothing, it retransmits

    again = world.received(bob, "message")[pushed_before:]
    assert {f["seq"] for f in again} == {1, 2}
    assert all(f["text"] == "" for f in again) and SECRET not in json.dumps(again)
    assert [f.get("deleted") for f in again if f["seq"] == 1] == [True] * len([f for f in again if f["seq"] == 1])


def test_two_racing_deletes_store_one_tombstone_and_answer_the_same(world: World) -> None:
    send(world, ALICE, SECRET)
    second: list[Frame] = []
    # the second delete runs entirely after the first read the message and before its transaction
    between(world, "TransactWriteItems", lambda: second.append(delete(world, ALICE, 1)))

    first = delete(world, ALICE, 1)

    assert first == second[0] and first["tombstone_seq"] == 2
    assert "Item" not in world.messages.get_item(Key={"pk": CONV, "sk": 3})
    assert int(world.messages.get_item(Key={"pk": CONV, "sk": 0})["Item"]["last_seq"]) == 2


def test_a_send_retried_after_its_message_was_deleted_answers_sent_and_brings_nothing_back(world: World) -> None:
    bob = world.connect("ws", BOB)
    sent = send(world, ALICE, SECRET, client_id="c-1")
    delete(world, ALICE, 1)
    before = len(world.h.sender.sent)

    retried = send(world, ALICE, SECRET, client_id="c-1")  # its `sent` was lost: the client sends again

    assert {**retried, "time": 0} == {**sent, "time": 0}
    assert SECRET.encode() not in b"".join(bytes(data) if isinstance(data, bytes) else str(data).encode()
                                           for _, data in world.h.sender.sent[before:])
    history = world.ask(bob, action="history", conversation_id=CONV)["messages"]
    assert [(m["seq"], m["text"]) for m in history] == [(1, ""), (2, "")]


def test_a_deleted_photos_object_is_gone_and_no_read_names_it(provisioned: dict[str, str]) -> None:
    from tests.test_media import BOB as PHOTO_BOB
    from tests.test_media import CONV as PHOTO_CONV
    from tests.test_media import PNG, Person, copies_of
    from tests.test_media import World as MediaWorld
    world = MediaWorld(provisioned)
    alice = Person(world, Identity("user", "alice"), "ws")
    bob = Person(world, PHOTO_BOB, "ws")
    upload_id = alice.upload(PNG)
    assert alice.send_photo(upload_id)["seq"] == 1
    (key,) = world.keys(copies_of(upload_id))

    answer = alice.ask(action="delete", conversation_id=PHOTO_CONV, seq=1)

    assert answer["tombstone_seq"] == 2
    assert world.keys(copies_of(upload_id)) == [] and world.keys() == []
    item = world.messages.get_item(Key={"pk": PHOTO_CONV, "sk": 1})["Item"]
    assert "image" not in item and item["text"] == ""
    history = bob.ask(action="history", conversation_id=PHOTO_CONV)["messages"]
    assert "image" not in history[0] and key not in json.dumps(history)
    assert bob.ask(action="media_url", conversation_id=PHOTO_CONV, seq=1)["code"] == "not_found"
    listed = bob.ask(action="conversations")["conversations"]
    assert "image" not in listed[0]["last_message"]
    assert listed[0]["last_message"]["event"] == tombstone_of(1, Identity("user", "alice"))
    assert alice.ask(action="send", to=PHOTO_BOB.to_json(), text="again")["type"] == "sent"
    (entry,) = bob.ask(action="conversations")["conversations"]
    assert entry["last_message"]["text"] == "again" and "event" not in entry["last_message"]  # the next one
    assert alice.ask(action="delete", conversation_id=PHOTO_CONV, seq=1)["tombstone_seq"] == 2  # a repeat


def test_a_photo_send_retried_after_its_message_was_deleted_answers_sent(provisioned: dict[str, str]) -> None:
    from tests.test_media import CONV as PHOTO_CONV
    from tests.test_media import PNG, Person
    from tests.test_media import World as MediaWorld
    world = MediaWorld(provisioned)
    alice = Person(world, Identity("user", "alice"), "ws")
    upload_id = alice.upload(PNG)
    sent = alice.send_photo(upload_id, id="photo-1")
    alice.ask(action="delete", conversation_id=PHOTO_CONV, seq=1)
    def tables() -> list[dict[str, Any]]:  # (a replay is counted as a send: the rate window moves)
        return [i for i in world.tables() if not str(i["pk"]).startswith("R#")]
    stored = tables()

    retried = alice.send_photo(upload_id, id="photo-1")  # the first `sent` was lost

    assert {**retried, "time": 0} == {**sent, "time": 0}
    assert tables() == stored and world.keys() == []
    assert alice.send_photo(upload_id, id="photo-2")["code"] == "upload_not_found"  # a new send: refused


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_delete_through_the_sdk_the_peer_is_told_and_an_offline_one_learns_it_by_its_pull(
        app_stack: str, transport: str) -> None:
    """The Python SDK's `delete_message` against the real app served in-process: a stranger's
    delete is refused; the deleter's own event fills its seq and is told; the peer, offline
    meanwhile, learns it by its pull on reconnect (the event after its cursor), and its history
    holds the tombstone only."""
    async def run() -> None:
        async with httpx.AsyncClient() as http:
            alice = await connect(http, app_stack, f"d-alice-{transport}", transport, [])
            try:
                await exchange(http, alice)
            finally:
                await alice.close()

    async def exchange(http: httpx.AsyncClient, alice: Client) -> None:
        bob = await connect(http, app_stack, f"d-bob-{transport}", transport, [])
        first = await alice.send(SECRET, to={"kind": "user", "id": f"d-bob-{transport}"})
        await asyncio.wait_for(first.accepted, WAIT)
        cid = str(first.conversation_id)
        assert (await asyncio.wait_for(bob.inbox.get(), WAIT))["text"] == SECRET
        with pytest.raises(ClientError) as refused:
            await bob.delete_message(cid, 1)
        assert refused.value.code == "not_your_message"
        await bob.close()  # its ack of seq 1 goes first (answered): bob is offline from here

        answer = await alice.delete_message(cid, 1)
        assert (answer["type"], answer["seq"], answer["tombstone_seq"]) == ("deleted", 1, 2)
        again = await alice.delete_message(cid, 1)  # a repeat: the same answer
        assert {**again, "ref": None} == {**answer, "ref": None}
        own = await asyncio.wait_for(alice.deletions.get(), WAIT)  # our own, from the answer
        assert (own["conversation_id"], own["seq"], own["tombstone_seq"]) == (cid, 1, 2)

        bob = await connect(http, app_stack, f"d-bob-{transport}", transport, [])  # back online: its pull
        try:
            event = await asyncio.wait_for(bob.inbox.get(), WAIT)
            assert (event["seq"], event["event"]) == (2, {"type": "deleted", "seq": 1, "by": alice.identity})
            told = await asyncio.wait_for(bob.deletions.get(), WAIT)
            assert (told["conversation_id"], told["seq"], told["by"]) == (cid, 1, alice.identity)
            history = (await bob.history(cid))["messages"]
            assert [(m["seq"], m["text"], m.get("deleted")) for m in history] == [(1, "", True), (2, "", None)]
        finally:
            await bob.close()

    asyncio.run(run())


def test_the_benchmark_counts_a_delete_a_repeat_and_a_group_delete(provisioned: dict[str, str]) -> None:
    """bench/delete_calls.py (docs/performance.md `delete`): the calls it prices."""
    from bench.delete_calls import measure

    calls = {name: [r.call.split(".")[-1] for r in phase.records] for name, phase in measure(provisioned).items()}
    direct, repeat, group = calls.values()
    # two reads, one transaction; the peer's connections, its push, the answer, its ack check
    assert sorted(direct) == sorted(["GetItem", "GetItem", "TransactWriteItems", "Query", "PostToConnection",
                                     "PostToConnection", "SendMessage"])
    assert repeat == ["GetItem", "GetItem", "PostToConnection"]  # nothing written, nothing pushed
    assert sorted(group) == sorted(["GetItem", "GetItem", "TransactWriteItems", "SendMessage", "PostToConnection"])


def test_a_delete_counts_as_a_send_toward_the_send_rate(provisioned: dict[str, str]) -> None:
    world = World({**provisioned, "SEND_LIMIT": "3"})
    for text in ("one", "two"):
        send(world, ALICE, text)
    assert delete(world, ALICE, 1)["tombstone_seq"] == 3  # the third in the window
    stored = world.stored()
    alice = world.connect("ws", ALICE)
    refused = world.ask(alice, action="delete", conversation_id=CONV, seq=2)
    assert (refused["code"], refused["retry_after"] >= 1) == ("rate_limited", True)
    assert world.stored() == stored
    assert world.ask(alice, action="delete", conversation_id=CONV, seq=1)["tombstone_seq"] == 3  # a repeat: free


def test_a_delete_that_dies_before_removing_the_photo_removes_it_on_the_retry(provisioned: dict[str, str]) -> None:
    """The transaction committed, then the process died at the photo's DeleteObject: the object
    is still there and the client got no answer; its retry is a repeat, answered the same, and
    deletes the object (the blanked item keeps its key as `purge_key`)."""
    from tests.messaging_fixtures import Crash
    from tests.test_media import CONV as PHOTO_CONV
    from tests.test_media import PNG, Person, copies_of
    from tests.test_media import World as MediaWorld

    def arm(events: Any) -> None:
        fired: list[bool] = []

        def die(params: dict[str, Any], **_: Any) -> None:
            if str(params.get("Key", "")).startswith("m/") and not fired:
                fired.append(True)
                raise Crash("injected death at the photo's DeleteObject")
        events.register("provide-client-params.s3.DeleteObject", die)

    world = MediaWorld(provisioned, faults=arm)
    alice = Person(world, Identity("user", "alice"), "ws")
    upload_id = alice.upload(PNG)
    alice.send_photo(upload_id)
    with pytest.raises(Crash):
        alice.ask(action="delete", conversation_id=PHOTO_CONV, seq=1)
    assert len(world.keys(copies_of(upload_id))) == 1  # committed, the object not yet deleted
    assert world.messages.get_item(Key={"pk": PHOTO_CONV, "sk": 1})["Item"]["deleted"] is True

    answer = alice.ask(action="delete", conversation_id=PHOTO_CONV, seq=1)

    assert (answer["type"], answer["tombstone_seq"]) == ("deleted", 2)
    assert world.keys() == []
