"""Group management (protocol.md §13) on moto, through the protocol core: create, add, remove,
leave, rename, roles, the member list and receipts; who may do what, and that every refusal
changes nothing.

Nobody is added to a group by a stranger (§13.2): whoever is added has first written to the
adder in their 1:1 conversation (`wrote_to`, the real send path); `create` does it for the
members it names."""
from __future__ import annotations

import json
import threading
from typing import Any

import boto3
import pytest
from hypothesis import given
from hypothesis import strategies as st

from chalicelib.logic.frames import SendRequest
from chalicelib.principal import KINDS, Identity, valid_id
from chalicelib.storage.groups import member_keys
from tests.messaging_fixtures import Crash, Harness, build_harness

ALICE = Identity("user", "alice")
BOB = Identity("user", "bob")
CAROL = Identity("user", "carol")
DAVE = Identity("user", "dave")
EVE = Identity("visitor", "v_eve")
PEOPLE = {"a1": ALICE, "b1": BOB, "c1": CAROL, "d1": DAVE, "e1": EVE}
CONNECTION = {identity: connection for connection, identity in PEOPLE.items()}


def make_harness(env: dict[str, str], **settings: int) -> Harness:
    h = build_harness({**env, **{name.upper(): str(value) for name, value in settings.items()}})
    for connection, identity in PEOPLE.items():
        h.connect(connection, identity)
    return h


@pytest.fixture
def harness(provisioned: dict[str, str]) -> Harness:
    return make_harness(provisioned)


_ids = iter(range(1, 1_000_000))


def ask(h: Harness, who: Identity, action: str, frame_id: str | None = None, **fields: Any) -> dict[str, Any]:
    """Send one frame from `who`'s connection and return its answer (the frame with its ref)."""
    ref = frame_id or f"f-{next(_ids)}"
    connection = CONNECTION[who]
    h.frame(connection, action=action, id=ref, **fields)
    answers = [f for f in h.frames_to(connection) if f.get("ref") == ref]
    assert answers, f"no answer to {action}"
    return answers[-1]


def wrote_to(h: Harness, adder: Identity, *writers: Identity) -> None:
    """Each writer sends `adder` one 1:1 message (the real send path, no connection needed):
    what lets the adder put it in a group (protocol.md §13.2)."""
    for writer in writers:
        request = SendRequest.parse({"id": f"hi-{next(_ids)}", "text": "hi", "to": adder.to_json()})
        assert h.services.messaging.send(writer, request)["type"] == "sent"


def create(h: Harness, owner: Identity, *members: Identity, title: str = "Bike parts") -> str:
    """A group of `owner` and `members`, each of whom has first written to the owner."""
    wrote_to(h, owner, *members)
    answer = ask(h, owner, "group_create", title=title, members=[m.to_json() for m in members])
    assert answer["type"] == "group", answer
    return str(answer["conversation_id"])


def drain_jobs(h: Harness, env: dict[str, str]) -> None:
    """Run every job that is due (the fan-out pages), as the SQS event source would."""
    sqs = boto3.client("sqs")
    while True:
        received = sqs.receive_message(QueueUrl=env["JOBS_QUEUE_URL"], MaxNumberOfMessages=10,
                                       WaitTimeSeconds=0).get("Messages", [])
        if not received:
            return
        for message in received:
            h.services.jobs.run(message["Body"])
            sqs.delete_message(QueueUrl=env["JOBS_QUEUE_URL"], ReceiptHandle=message["ReceiptHandle"])


def tables(env: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    """Every item of the messages and members tables: a refusal must leave both as they were."""
    dynamodb = boto3.resource("dynamodb")
    found = {}
    for name in ("MESSAGES_TABLE", "MEMBERS_TABLE"):
        items = dynamodb.Table(env[name]).scan()["Items"]
        found[name] = sorted(items, key=lambda i: (str(i["pk"]), str(i["sk"])))
    return found


def log_of(env: dict[str, str], group_id: str) -> list[dict[str, Any]]:
    table = boto3.resource("dynamodb").Table(env["MESSAGES_TABLE"])
    return table.query(KeyConditionExpression="pk = :c", ExpressionAttributeValues={":c": group_id},
                       ConsistentRead=True)["Items"]


def head(env: dict[str, str], group_id: str) -> dict[str, Any]:
    return log_of(env, group_id)[0]


def events(env: dict[str, str], group_id: str) -> list[tuple[int, str]]:
    return [(int(i["sk"]), i["event"]["type"]) for i in log_of(env, group_id)[1:]]


def membership(env: dict[str, str], who: Identity, group_id: str) -> dict[str, Any] | None:
    table = boto3.resource("dynamodb").Table(env["MEMBERS_TABLE"])
    item: dict[str, Any] | None = table.get_item(Key=member_keys(who, group_id)["membership"]).get("Item")
    return item


def group_count(env: dict[str, str], who: Identity) -> int:
    table = boto3.resource("dynamodb").Table(env["MEMBERS_TABLE"])
    item = table.get_item(Key=member_keys(who, "g_x")["count"]).get("Item")
    return int(item["n"]) if item else 0


def roster(h: Harness, who: Identity, group_id: str) -> dict[str, str]:
    answer = ask(h, who, "group_members", conversation_id=group_id, limit=200)
    assert answer["type"] == "group_members", answer
    return {Identity(**m["member"]).key: m["role"] for m in answer["members"]}


def pushed_events(h: Harness, who: Identity, group_id: str) -> list[tuple[int, str]]:
    return [(m["seq"], m["event"]["type"]) for m in h.frames_to(CONNECTION[who], "message")
            if m["conversation_id"] == group_id and "event" in m]


# -- create -----------------------------------------------------------------------------------
def test_create_makes_the_creator_owner_and_stores_the_created_event_as_seq_1(
        harness: Harness, provisioned: dict[str, str]) -> None:
    wrote_to(harness, ALICE, BOB, CAROL)
    answer = ask(harness, ALICE, "group_create", "g-1", title="Bike parts",
                 members=[BOB.to_json(), CAROL.to_json(), BOB.to_json(), ALICE.to_json()])
    group_id = answer["conversation_id"]
    assert group_id.startswith("g_") and len(group_id) == 24
    assert answer == {"type": "group", "ref": "g-1", "conversation_id": group_id, "title": "Bike parts",
                      "role": "owner", "seq": 1, "time": answer["time"], "members_count": 3}
    stored_head = head(provisioned, group_id)
    assert (stored_head["kind"], stored_head["title"], stored_head["owner"], stored_head["members_count"],
            stored_head["last_seq"]) == ("group", "Bike parts", ALICE.key, 3, 1)
    first = log_of(provisioned, group_id)[1]
    assert first["event"] == {"type": "created", "title": "Bike parts",
                              "members": [ALICE.to_json(), BOB.to_json(), CAROL.to_json()]}
    assert (first["text"], first["sender"], first["client_id"]) == ("", ALICE.key, "g-1")
    assert roster(harness, ALICE, group_id) == {ALICE.key: "owner", BOB.key: "member", CAROL.key: "member"}
    mine, bobs = membership(provisioned, ALICE, group_id), membership(provisioned, BOB, group_id)
    assert mine is not None and bobs is not None
    assert (mine["joined_seq"], mine["acked_seq"], mine["read_seq"]) == (1, 0, 1)  # read its own event
    assert (bobs["joined_seq"], bobs["acked_seq"], bobs["read_seq"]) == (1, 0, 0)
    assert "last_time" not in bobs and "peer" not in bobs  # not in the 1:1 list's index
    assert [group_count(provisioned, who) for who in (ALICE, BOB, CAROL, DAVE)] == [1, 1, 1, 0]
    drain_jobs(harness, provisioned)
    assert pushed_events(harness, BOB, group_id) == [(1, "created")]
    assert pushed_events(harness, CAROL, group_id) == [(1, "created")]
    assert pushed_events(harness, ALICE, group_id) == []  # the creating connection has `group`
    assert pushed_events(harness, DAVE, group_id) == []


def test_create_is_idempotent_by_frame_id_even_in_another_container(harness: Harness,
                                                                    provisioned: dict[str, str]) -> None:
    wrote_to(harness, ALICE, BOB)
    first = ask(harness, ALICE, "group_create", "g-1", title="Bike parts", members=[BOB.to_json()])
    before = tables(provisioned)
    again = ask(harness, ALICE, "group_create", "g-1", title="Bike parts", members=[BOB.to_json()])
    other = make_harness(provisioned)  # a fresh container: nothing cached
    elsewhere = ask(other, ALICE, "group_create", "g-1", title="Other", members=[CAROL.to_json()])
    assert first == again == elsewhere
    assert tables(provisioned) == before
    assert group_count(provisioned, ALICE) == 1 and group_count(provisioned, CAROL) == 0


@pytest.mark.parametrize("title", ["", "   ", "x" * 101, "a\nb", None, 5])
def test_a_bad_title_is_invalid_and_stores_nothing(harness: Harness, provisioned: dict[str, str],
                                                   title: object) -> None:
    before = tables(provisioned)
    answer = ask(harness, ALICE, "group_create", title=title, members=[])
    assert answer["code"] == "invalid_field"
    assert tables(provisioned) == before


def test_at_most_20_members_per_frame(harness: Harness, provisioned: dict[str, str]) -> None:
    many = [Identity("user", f"u{i}").to_json() for i in range(21)]
    assert ask(harness, ALICE, "group_create", title="t", members=many)["code"] == "invalid_field"
    group_id = create(harness, ALICE)
    assert ask(harness, ALICE, "group_add", conversation_id=group_id, members=many)["code"] == "invalid_field"
    assert ask(harness, ALICE, "group_add", conversation_id=group_id, members=[])["code"] == "invalid_field"
    assert len(create(harness, ALICE, *(Identity(**m) for m in many[:20]))) == 24


# -- changes, in seq order --------------------------------------------------------------------
def test_every_change_is_an_event_in_the_groups_seq_gap_free(harness: Harness,
                                                              provisioned: dict[str, str]) -> None:
    group_id = create(harness, ALICE, BOB, CAROL)
    wrote_to(harness, ALICE, DAVE, EVE)
    changes: list[tuple[Identity, str, dict[str, Any]]] = [
        (ALICE, "group_add", {"members": [DAVE.to_json()]}),
        (ALICE, "group_rename", {"title": "Wheels"}),
        (ALICE, "group_role", {"member": BOB.to_json(), "role": "admin"}),
        (BOB, "group_remove", {"member": CAROL.to_json()}),
        (DAVE, "group_leave", {}),
        (ALICE, "group_add", {"members": [EVE.to_json()], "role": "admin"}),
    ]
    answers = []
    for who, action, fields in changes:
        answers.append(ask(harness, who, action, conversation_id=group_id, **fields))
        drain_jobs(harness, provisioned)  # each fan-out pushes to the members of its moment
    assert [(a["type"], a["seq"]) for a in answers] == [("group_changed", n) for n in range(2, 8)]
    assert events(provisioned, group_id) == [(1, "created"), (2, "joined"), (3, "renamed"), (4, "role"),
                                             (5, "removed"), (6, "left"), (7, "joined")]
    log = log_of(provisioned, group_id)
    assert log[2]["event"] == {"type": "joined", "members": [DAVE.to_json()], "role": "member"}
    assert log[3]["event"] == {"type": "renamed", "title": "Wheels"}
    assert log[4]["event"] == {"type": "role", "member": BOB.to_json(), "role": "admin"}
    assert log[5]["event"] == {"type": "removed", "member": CAROL.to_json()} and log[5]["sender"] == BOB.key
    assert log[6]["event"] == {"type": "left"} and log[6]["sender"] == DAVE.key
    stored_head = head(provisioned, group_id)
    assert (stored_head["last_seq"], stored_head["title"], stored_head["members_count"]) == (7, "Wheels", 3)
    assert roster(harness, BOB, group_id) == {ALICE.key: "owner", BOB.key: "admin", EVE.key: "admin"}
    assert [group_count(provisioned, who) for who in (ALICE, BOB, CAROL, DAVE, EVE)] == [1, 1, 0, 0, 1]
    eves = membership(provisioned, EVE, group_id)
    assert eves is not None and (eves["joined_seq"], eves["acked_seq"], eves["read_seq"]) == (7, 6, 6)
    drain_jobs(harness, provisioned)
    # every member then in the group gets each event (not the connection that made it)
    assert pushed_events(harness, BOB, group_id) == [(1, "created"), (2, "joined"), (3, "renamed"), (4, "role"),
                                                     (6, "left"), (7, "joined")]
    assert pushed_events(harness, EVE, group_id) == [(7, "joined")]  # starts at its own joined
    # the leaver gets its own `left` pushed directly (its other devices learn it), then nothing
    assert pushed_events(harness, DAVE, group_id) == [(2, "joined"), (3, "renamed"), (4, "role"), (5, "removed"),
                                                      (6, "left")]


def test_a_repeated_change_returns_the_original_answer_and_changes_nothing(
        harness: Harness, provisioned: dict[str, str]) -> None:
    group_id = create(harness, ALICE, BOB, CAROL)
    wrote_to(harness, ALICE, DAVE)
    frames: list[tuple[Identity, str, dict[str, Any]]] = [
        (ALICE, "group_add", {"members": [DAVE.to_json()]}),
        (ALICE, "group_rename", {"title": "Wheels"}),
        (ALICE, "group_role", {"member": BOB.to_json(), "role": "admin"}),
        (ALICE, "group_remove", {"member": CAROL.to_json()}),
        (DAVE, "group_leave", {}),
    ]
    for n, (who, action, fields) in enumerate(frames):
        first = ask(harness, who, action, f"r-{n}", conversation_id=group_id, **fields)
        before = tables(provisioned)
        # after the change, the same frame would now be refused (not a member) or change
        # nothing; by its id it gets the original answer
        again = ask(harness, who, action, f"r-{n}", conversation_id=group_id, **fields)
        assert again == first and first["seq"] == n + 2
        assert tables(provisioned) == before


def test_nothing_to_change_answers_seq_null_and_stores_nothing(harness: Harness,
                                                               provisioned: dict[str, str]) -> None:
    group_id = create(harness, ALICE, BOB)
    ask(harness, ALICE, "group_role", conversation_id=group_id, member=BOB.to_json(), role="admin")
    before = tables(provisioned)
    for who, action, fields in [
        (ALICE, "group_add", {"members": [BOB.to_json(), ALICE.to_json()]}),
        (ALICE, "group_rename", {"title": "Bike parts"}),
        (ALICE, "group_role", {"member": BOB.to_json(), "role": "admin"}),
        (ALICE, "group_role", {"member": ALICE.to_json(), "role": "owner"}),
    ]:
        answer = ask(harness, who, action, conversation_id=group_id, **fields)
        assert (answer["type"], answer["seq"], answer["time"]) == ("group_changed", None, None)
    assert tables(provisioned) == before


def test_add_skips_members_already_in(harness: Harness, provisioned: dict[str, str]) -> None:
    group_id = create(harness, ALICE, BOB)
    wrote_to(harness, ALICE, CAROL)
    answer = ask(harness, ALICE, "group_add", conversation_id=group_id, members=[BOB.to_json(), CAROL.to_json()])
    assert answer["seq"] == 2
    assert log_of(provisioned, group_id)[2]["event"]["members"] == [CAROL.to_json()]
    assert head(provisioned, group_id)["members_count"] == 3


# -- consent: nobody is added by a stranger ----------------------------------------------------
def test_a_stranger_cannot_put_anyone_in_a_group_and_learns_nothing_about_them(
        harness: Harness, provisioned: dict[str, str]) -> None:
    """Dave never got a message from Bob (Dave writing to Bob is not Bob's consent): naming Bob
    in a create or an add is refused whole, nothing is stored, Bob's count does not move, and the
    answer is word for word the one for an identity that does not exist."""
    wrote_to(harness, BOB, DAVE)  # dave writes to bob; bob never answers
    wrote_to(harness, DAVE, CAROL)  # carol did write to dave
    daves = create(harness, DAVE, CAROL)
    before = tables(provisioned)
    nobody = Identity("user", "nobody-at-all")
    answers = [
        ask(harness, DAVE, "group_create", title="t", members=[BOB.to_json()]),
        ask(harness, DAVE, "group_create", title="t", members=[CAROL.to_json(), BOB.to_json()]),  # whole frame
        ask(harness, DAVE, "group_create", title="t", members=[nobody.to_json()]),
        ask(harness, DAVE, "group_add", conversation_id=daves, members=[BOB.to_json()]),
        ask(harness, DAVE, "group_add", conversation_id=daves, members=[nobody.to_json()]),
        ask(harness, DAVE, "group_add", conversation_id=daves, members=[EVE.to_json(), ALICE.to_json()]),
    ]
    assert {(a["type"], a["code"], a["message"]) for a in answers} == {
        ("error", "cannot_add", "you can add only people who have written to you")}
    assert tables(provisioned) == before
    assert group_count(provisioned, BOB) == 0 and group_count(provisioned, CAROL) == 1
    drain_jobs(harness, provisioned)
    assert [f for f in harness.frames_to(CONNECTION[BOB], "message") if f["conversation_id"].startswith("g_")] == []


def test_at_its_cap_an_added_identity_gets_the_strangers_answer_never_its_count(provisioned: dict[str, str]) -> None:
    """Bob wrote to Carol but is in the most groups allowed: Carol's create and add naming him
    get exactly the answer a non-existent identity gets; Carol's own cap is too_many_groups."""
    h = make_harness(provisioned, groups_per_identity_limit=2)
    create(h, BOB)
    create(h, BOB)
    wrote_to(h, CAROL, BOB, DAVE)
    carols = create(h, CAROL, DAVE)
    before = tables(provisioned)
    nobody = Identity("user", "nobody-at-all")
    at_cap = [ask(h, CAROL, "group_create", title="t", members=[BOB.to_json()]),
              ask(h, CAROL, "group_add", conversation_id=carols, members=[BOB.to_json()])]
    missing = [ask(h, CAROL, "group_create", title="t", members=[nobody.to_json()]),
               ask(h, CAROL, "group_add", conversation_id=carols, members=[nobody.to_json()])]
    assert [{k: v for k, v in a.items() if k != "ref"} for a in at_cap] == \
        [{k: v for k, v in a.items() if k != "ref"} for a in missing]
    assert at_cap[0]["code"] == "cannot_add"
    assert tables(provisioned) == before and group_count(provisioned, BOB) == 2
    create(h, CAROL)  # carol's second group: her own cap is hers to know
    assert ask(h, CAROL, "group_create", title="t", members=[])["code"] == "too_many_groups"


def test_someone_who_wrote_to_you_may_be_added_by_you(harness: Harness, provisioned: dict[str, str]) -> None:
    """A buyer who wrote to a seller may be put in the seller's group, at create or by add."""
    wrote_to(harness, ALICE, BOB, EVE)  # eve is a visitor
    group_id = create(harness, ALICE, BOB)
    assert ask(harness, ALICE, "group_add", conversation_id=group_id, members=[EVE.to_json()])["seq"] == 2
    assert roster(harness, ALICE, group_id) == {ALICE.key: "owner", BOB.key: "member", EVE.key: "member"}
    assert [group_count(provisioned, who) for who in (ALICE, BOB, EVE)] == [1, 1, 1]
    # an admin adds only people who wrote to it, not to the owner
    ask(harness, ALICE, "group_role", conversation_id=group_id, member=BOB.to_json(), role="admin")
    wrote_to(harness, ALICE, CAROL)
    assert ask(harness, BOB, "group_add", conversation_id=group_id, members=[CAROL.to_json()])["code"] == "cannot_add"
    wrote_to(harness, BOB, CAROL)
    assert ask(harness, BOB, "group_add", conversation_id=group_id, members=[CAROL.to_json()])["seq"] == 4


def test_a_visitors_link_widens_nothing(harness: Harness, provisioned: dict[str, str]) -> None:
    """Visitor Eve wrote to Alice, then signed in as user Frank: Alice may add the visitor, not
    the user (Frank never wrote to her); Frank may not add someone who wrote only to Eve."""
    frank = Identity("user", "frank")
    harness.connect("f1", frank)
    CONNECTION[frank] = "f1"
    try:
        wrote_to(harness, ALICE, EVE)
        wrote_to(harness, EVE, CAROL)
        harness.services.linking.link(frank, EVE)
        group_id = create(harness, ALICE)
        assert ask(harness, ALICE, "group_add", conversation_id=group_id, members=[frank.to_json()])["code"] == \
            "cannot_add"
        assert ask(harness, ALICE, "group_add", conversation_id=group_id, members=[EVE.to_json()])["seq"] == 2
        assert ask(harness, frank, "group_create", title="t", members=[CAROL.to_json()])["code"] == "cannot_add"
        assert group_count(provisioned, frank) == 0 and group_count(provisioned, CAROL) == 0
    finally:
        del CONNECTION[frank]


def test_many_strangers_cannot_move_a_victims_group_count(provisioned: dict[str, str]) -> None:
    """The attack of issue 21: strangers, each creating groups that name the victim and adding
    it to their groups, never fill its quota; it can still create as many groups as allowed."""
    h = make_harness(provisioned, groups_per_identity_limit=3)
    strangers = [ALICE, CAROL, DAVE, EVE]
    their_groups = {who: create(h, who) for who in strangers}
    before = tables(provisioned)
    for round_ in range(3):
        for who in strangers:
            crowd = [BOB.to_json(), *(Identity("user", f"other-{round_}-{n}").to_json() for n in range(19))]
            assert ask(h, who, "group_create", title="for you", members=crowd)["code"] == "cannot_add"
            assert ask(h, who, "group_add", conversation_id=their_groups[who], members=[BOB.to_json()])["code"] == \
                "cannot_add"
    assert tables(provisioned) == before
    assert group_count(provisioned, BOB) == 0
    mine = [create(h, BOB, title=f"mine {n}") for n in range(3)]
    assert len(set(mine)) == 3 and group_count(provisioned, BOB) == 3


# -- limits -----------------------------------------------------------------------------------
def test_the_member_limit_refuses_with_group_full_and_stores_nothing(provisioned: dict[str, str]) -> None:
    h = make_harness(provisioned, group_member_limit=3)
    wrote_to(h, ALICE, BOB, CAROL, DAVE)
    before = tables(provisioned)
    assert ask(h, ALICE, "group_create", title="t", members=[BOB.to_json(), CAROL.to_json(),
                                                             DAVE.to_json()])["code"] == "group_full"
    assert tables(provisioned) == before
    group_id = create(h, ALICE, BOB)
    assert ask(h, ALICE, "group_add", conversation_id=group_id, members=[CAROL.to_json()])["seq"] == 2
    before = tables(provisioned)
    answer = ask(h, ALICE, "group_add", conversation_id=group_id, members=[DAVE.to_json()])
    assert (answer["type"], answer["code"]) == ("error", "group_full")
    assert tables(provisioned) == before
    # leaving makes room again
    ask(h, CAROL, "group_leave", conversation_id=group_id)
    assert ask(h, ALICE, "group_add", conversation_id=group_id, members=[DAVE.to_json()])["seq"] == 4


def test_groups_per_identity_refuses_with_too_many_groups_and_stores_nothing(provisioned: dict[str, str]) -> None:
    """The creator's own count is `too_many_groups`; an added identity's is `cannot_add`, the
    answer a stranger gets (it never tells the adder another identity's count)."""
    h = make_harness(provisioned, groups_per_identity_limit=2)
    create(h, BOB)
    alices = create(h, ALICE, BOB)
    wrote_to(h, CAROL, DAVE, BOB)
    before = tables(provisioned)
    refused = ask(h, CAROL, "group_create", title="t", members=[DAVE.to_json(), BOB.to_json()])
    assert refused["code"] == "cannot_add" and "bob" not in refused["message"] and "2" not in refused["message"]
    assert ask(h, BOB, "group_create", title="mine", members=[])["code"] == "too_many_groups"
    assert tables(provisioned) == before
    carols = create(h, CAROL, DAVE)
    before = tables(provisioned)
    assert ask(h, CAROL, "group_add", conversation_id=carols, members=[BOB.to_json()])["code"] == "cannot_add"
    assert tables(provisioned) == before
    assert group_count(provisioned, BOB) == 2
    # leaving one frees a place
    ask(h, BOB, "group_leave", conversation_id=alices)
    assert group_count(provisioned, BOB) == 1
    assert ask(h, CAROL, "group_add", conversation_id=carols, members=[BOB.to_json()])["seq"] == 2
    assert group_count(provisioned, BOB) == 2


def test_group_changes_count_toward_the_send_rate(provisioned: dict[str, str]) -> None:
    h = make_harness(provisioned, send_limit=2)
    group_id = create(h, ALICE, BOB)
    assert ask(h, ALICE, "group_rename", conversation_id=group_id, title="two")["seq"] == 2
    before = tables(provisioned)
    refused = ask(h, ALICE, "group_rename", conversation_id=group_id, title="three")
    assert refused["code"] == "rate_limited" and refused["retry_after"] >= 1
    assert tables(provisioned) == before


# -- the owner --------------------------------------------------------------------------------
def test_the_owner_must_stay_while_others_remain_and_may_hand_ownership_on(
        harness: Harness, provisioned: dict[str, str]) -> None:
    group_id = create(harness, ALICE, BOB, CAROL)
    before = tables(provisioned)
    assert ask(harness, ALICE, "group_leave", conversation_id=group_id)["code"] == "owner_must_stay"
    assert ask(harness, ALICE, "group_role", conversation_id=group_id, member=ALICE.to_json(),
               role="member")["code"] == "not_allowed"
    assert tables(provisioned) == before
    handed = ask(harness, ALICE, "group_role", conversation_id=group_id, member=BOB.to_json(), role="owner")
    assert handed["seq"] == 2
    assert log_of(provisioned, group_id)[2]["event"] == {"type": "role", "member": BOB.to_json(), "role": "owner"}
    assert head(provisioned, group_id)["owner"] == BOB.key
    assert roster(harness, CAROL, group_id) == {ALICE.key: "admin", BOB.key: "owner", CAROL.key: "member"}
    # the old owner is an admin now: it may leave; the new owner may not, nor be removed
    assert ask(harness, ALICE, "group_remove", conversation_id=group_id, member=BOB.to_json())["code"] == "not_allowed"
    assert ask(harness, ALICE, "group_leave", conversation_id=group_id)["seq"] == 3
    assert ask(harness, BOB, "group_leave", conversation_id=group_id)["code"] == "owner_must_stay"
    assert ask(harness, BOB, "group_remove", conversation_id=group_id, member=CAROL.to_json())["seq"] == 4
    assert ask(harness, BOB, "group_leave", conversation_id=group_id)["seq"] == 5  # alone: may leave
    assert head(provisioned, group_id)["members_count"] == 0
    assert [group_count(provisioned, who) for who in (ALICE, BOB, CAROL)] == [0, 0, 0]


# -- authorization ------------------------------------------------------------------------------
# (frame, fields, code for a non-member, code for a plain member, code for an admin or None when allowed)
MATRIX: list[tuple[str, dict[str, Any], str, str | None, str | None]] = [
    ("group_add", {"members": [EVE.to_json()]}, "not_member", "not_allowed", None),
    ("group_add", {"members": [EVE.to_json()], "role": "admin"}, "not_member", "not_allowed", "not_allowed"),
    ("group_remove", {"member": CAROL.to_json()}, "not_member", "not_allowed", None),
    ("group_remove", {"member": BOB.to_json()}, "not_member", "not_allowed", "not_allowed"),  # an admin
    ("group_remove", {"member": ALICE.to_json()}, "not_member", "not_allowed", "not_allowed"),  # the owner
    ("group_remove", {"member": EVE.to_json()}, "not_member", "not_allowed", "not_member"),  # not in it
    ("group_rename", {"title": "mine now"}, "not_member", "not_allowed", None),
    ("group_role", {"member": CAROL.to_json(), "role": "admin"}, "not_member", "not_allowed", "not_allowed"),
    ("group_role", {"member": DAVE.to_json(), "role": "owner"}, "not_member", "not_allowed", "not_allowed"),
    ("group_leave", {}, "not_member", None, None),
    ("group_members", {}, "not_member", None, None),
    ("receipts", {"seq": 1}, "not_member", None, None),
    # the messaging frames (logic/messaging.py) in a group
    ("send", {"text": "let me in"}, "not_member", None, None),
    ("ack", {"seq": 1}, "not_member", None, None),
    ("read", {"seq": 1}, "not_member", None, None),
    ("history", {}, "not_member", None, None),
]


@pytest.mark.parametrize(("action", "fields", "outsider", "member", "admin"), MATRIX,
                         ids=[f"{m[0]}-{i}" for i, m in enumerate(MATRIX)])
def test_authorization_matrix(harness: Harness, provisioned: dict[str, str], action: str,
                              fields: dict[str, Any], outsider: str, member: str | None, admin: str | None) -> None:
    """Alice owns the group, Bob is an admin, Carol a plain member, Dave is not in it. Each
    refusal is the documented code, carries the frame's ref, and changes nothing at all."""
    group_id = create(harness, ALICE, BOB, CAROL)
    ask(harness, ALICE, "group_role", conversation_id=group_id, member=BOB.to_json(), role="admin")
    drain_jobs(harness, provisioned)
    for who, code in [(DAVE, outsider), (CAROL, member), (BOB, admin)]:
        if code is None:
            continue
        before, pushes = tables(provisioned), len(harness.sender.sent)
        answer = ask(harness, who, action, "refused-1", conversation_id=group_id, **fields)
        assert (answer["type"], answer["code"], answer["ref"]) == ("error", code, "refused-1"), who
        drain_jobs(harness, provisioned)
        assert tables(provisioned) == before
        assert len(harness.sender.sent) == pushes + 1  # the error only: nobody was pushed anything
    assert roster(harness, ALICE, group_id) == {ALICE.key: "owner", BOB.key: "admin", CAROL.key: "member"}


def test_a_non_members_sync_never_returns_the_groups_messages(harness: Harness) -> None:
    group_id = create(harness, ALICE, BOB)
    harness.frame("a1", action="send", id="s-1", text="members only", conversation_id=group_id)
    pulled = ask(harness, DAVE, "sync", since={group_id: 0})
    assert (pulled["type"], pulled["messages"]) == ("sync", [])
    pulled = ask(harness, BOB, "sync", since={group_id: 0})  # (and bob's 1:1 hello to alice)
    assert [m["seq"] for m in pulled["messages"] if m["conversation_id"] == group_id] == [1, 2]


def test_a_group_that_does_not_exist_is_not_member_and_a_direct_id_is_invalid(harness: Harness) -> None:
    for action, fields in [("group_add", {"members": [EVE.to_json()]}), ("group_leave", {}),
                           ("group_members", {}), ("receipts", {"seq": 1}), ("group_rename", {"title": "x"})]:
        assert ask(harness, ALICE, action, conversation_id="g_nope", **fields)["code"] == "not_member"
        assert ask(harness, ALICE, action, conversation_id="d_nope", **fields)["code"] == "invalid_field"


def test_a_removed_member_gets_the_removed_event_then_nothing_more(harness: Harness,
                                                                     provisioned: dict[str, str]) -> None:
    group_id = create(harness, ALICE, BOB, CAROL)
    drain_jobs(harness, provisioned)
    assert ask(harness, ALICE, "group_remove", conversation_id=group_id, member=CAROL.to_json())["seq"] == 2
    # pushed directly by the remove (the fan-out no longer sees Carol in the roster)
    assert pushed_events(harness, CAROL, group_id) == [(1, "created"), (2, "removed")]
    ask(harness, ALICE, "group_rename", conversation_id=group_id, title="without carol")
    drain_jobs(harness, provisioned)
    assert pushed_events(harness, CAROL, group_id) == [(1, "created"), (2, "removed")]
    assert pushed_events(harness, BOB, group_id) == [(1, "created"), (2, "removed"), (3, "renamed")]
    for action, fields in [("group_members", {}), ("receipts", {"seq": 1}), ("group_leave", {}),
                           ("group_add", {"members": [DAVE.to_json()]})]:
        assert ask(harness, CAROL, action, conversation_id=group_id, **fields)["code"] == "not_member"
    assert membership(provisioned, CAROL, group_id) is None and group_count(provisioned, CAROL) == 0
    # added again later, it starts from the new joined event
    assert ask(harness, ALICE, "group_add", conversation_id=group_id, members=[CAROL.to_json()])["seq"] == 4
    again = membership(provisioned, CAROL, group_id)
    assert again is not None and (again["joined_seq"], again["acked_seq"]) == (4, 3)


def test_a_leaver_s_other_devices_get_the_left_event(harness: Harness, provisioned: dict[str, str]) -> None:
    """The fan-out reads the roster after the change, when the leaver is off it: `left` is
    pushed to the leaver's connections directly (protocol.md §13.2)."""
    group_id = create(harness, ALICE, BOB, CAROL)
    drain_jobs(harness, provisioned)
    harness.connect("c2", CAROL)  # carol's phone
    assert ask(harness, CAROL, "group_leave", conversation_id=group_id)["seq"] == 2
    drain_jobs(harness, provisioned)
    phone = [(f["seq"], f["event"]["type"]) for f in harness.frames_to("c2", "message")
             if f["conversation_id"] == group_id]
    assert phone == [(2, "left")]
    assert (2, "left") in pushed_events(harness, BOB, group_id)


# -- reads ------------------------------------------------------------------------------------
def test_group_members_pages_in_identity_order_with_an_opaque_cursor(harness: Harness) -> None:
    group_id = create(harness, ALICE, BOB, CAROL, DAVE, EVE)
    seen: list[dict[str, Any]] = []
    cursor = None
    pages = 0
    while True:
        answer = ask(harness, CAROL, "group_members", conversation_id=group_id, limit=2,
                     **({"cursor": cursor} if cursor else {}))
        assert (answer["title"], answer["members_count"]) == ("Bike parts", 5)
        assert (answer["cursor"] is not None) == answer["more"]
        seen.extend(answer["members"])
        pages += 1
        if not answer["more"]:
            break
        cursor = answer["cursor"]
    assert pages == 3
    keys = [Identity(**m["member"]).key for m in seen]
    assert keys == sorted(keys) == sorted(p.key for p in PEOPLE.values())
    assert seen[0] == {"member": ALICE.to_json(), "role": "owner", "joined_seq": 1}
    for bad in ["%%%", "bm90IGFuIGlkZW50aXR5", "x" * 600]:
        assert ask(harness, CAROL, "group_members", conversation_id=group_id, cursor=bad)["code"] == "invalid_field"


def test_receipts_count_members_who_had_joined_other_than_the_sender(harness: Harness,
                                                                      provisioned: dict[str, str]) -> None:
    group_id = create(harness, ALICE, BOB, CAROL, DAVE)  # seq 1, by alice
    wrote_to(harness, ALICE, EVE)
    ask(harness, ALICE, "group_rename", conversation_id=group_id, title="two")  # seq 2
    ask(harness, ALICE, "group_add", conversation_id=group_id, members=[EVE.to_json()])  # seq 3
    table = boto3.resource("dynamodb").Table(provisioned["MEMBERS_TABLE"])
    for who, acked, read in [(BOB, 2, 1), (CAROL, 1, 0), (DAVE, 0, 0), (EVE, 3, 3), (ALICE, 3, 3)]:
        table.update_item(Key=member_keys(who, group_id)["membership"],
                          UpdateExpression="SET acked_seq = :a, read_seq = :r",
                          ExpressionAttributeValues={":a": acked, ":r": read})
    answer = ask(harness, CAROL, "receipts", "rc-1", conversation_id=group_id, seq=2)
    # eve joined at 3 (not counted for 2), alice sent 2 (not counted)
    assert answer == {"type": "receipts", "ref": "rc-1", "conversation_id": group_id, "seq": 2, "members_count": 5,
                      "acked": 1, "read": 0,
                      "members": [{"member": BOB.to_json(), "acked": True, "read": False},
                                  {"member": CAROL.to_json(), "acked": False, "read": False},
                                  {"member": DAVE.to_json(), "acked": False, "read": False}],
                      "more": False, "cursor": None}
    first = ask(harness, BOB, "receipts", conversation_id=group_id, seq=1, limit=2)
    assert (first["acked"], first["read"], first["more"]) == (2, 1, True)
    assert [m["member"]["id"] for m in first["members"]] == ["bob", "carol"]
    rest = ask(harness, BOB, "receipts", conversation_id=group_id, seq=1, limit=2, cursor=first["cursor"])
    assert ([m["member"]["id"] for m in rest["members"]], rest["more"], rest["cursor"]) == (["dave"], False, None)
    assert (rest["acked"], rest["read"]) == (2, 1)  # the counts cover the whole group on every page
    assert ask(harness, BOB, "receipts", conversation_id=group_id, seq=4)["code"] == "seq_out_of_range"
    assert ask(harness, EVE, "receipts", conversation_id=group_id, seq=2)["code"] == "seq_out_of_range"
    # eve (a visitor that never wrote in the group) sees her own state; the others do not (below)
    assert ask(harness, EVE, "receipts", conversation_id=group_id, seq=3)["acked"] == 1


def test_receipts_never_report_read_without_acked(harness: Harness) -> None:
    """Issue 21, finding 7: Bob, who acked nothing, sends a message (which moves his read mark
    to it); the receipts of the earlier message must not say he read what he never received."""
    group_id = create(harness, ALICE, BOB, CAROL)
    harness.frame("a1", action="send", id="s-1", text="Which size?", conversation_id=group_id)  # seq 2
    harness.frame("b1", action="send", id="s-2", text="42", conversation_id=group_id)  # seq 3, bob acked nothing
    earlier = ask(harness, ALICE, "receipts", conversation_id=group_id, seq=2)
    assert {m["member"]["id"]: (m["acked"], m["read"]) for m in earlier["members"]} == {
        "bob": (False, False), "carol": (False, False)}
    assert (earlier["acked"], earlier["read"]) == (0, 0)
    assert ask(harness, BOB, "ack", conversation_id=group_id, seq=3)["seq"] == 3  # now he has them
    after = ask(harness, ALICE, "receipts", conversation_id=group_id, seq=2)
    assert after["members"][0] == {"member": BOB.to_json(), "acked": True, "read": True}
    assert (after["acked"], after["read"]) == (1, 1)


def test_receipts_show_a_visitor_only_once_it_wrote_in_the_group(harness: Harness) -> None:
    """The privacy rule (logic/privacy.py): a visitor put in a group shows neither acked nor
    read to the others (not when it connects, not when it reads) until it writes there."""
    group_id = create(harness, ALICE, BOB, EVE)
    harness.frame("a1", action="send", id="s-1", text="Which size?", conversation_id=group_id)  # seq 2
    for who in (BOB, EVE):
        assert ask(harness, who, "ack", conversation_id=group_id, seq=2)["seq"] == 2
        assert ask(harness, who, "read", conversation_id=group_id, seq=2)["seq"] == 2
    hidden = ask(harness, ALICE, "receipts", conversation_id=group_id, seq=2)
    assert {m["member"]["id"]: (m["acked"], m["read"]) for m in hidden["members"]} == {
        "bob": (True, True), "v_eve": (False, False)}
    assert (hidden["acked"], hidden["read"]) == (1, 1)
    assert ask(harness, BOB, "receipts", conversation_id=group_id, seq=2)["acked"] == 1  # the same to bob
    own = ask(harness, EVE, "receipts", conversation_id=group_id, seq=2)  # eve knows her own state
    assert {m["member"]["id"]: (m["acked"], m["read"]) for m in own["members"]}["v_eve"] == (True, True)
    assert ask(harness, EVE, "send", conversation_id=group_id, text="hello")["type"] == "sent"  # seq 3
    shown = ask(harness, ALICE, "receipts", conversation_id=group_id, seq=2)
    assert {m["member"]["id"]: (m["acked"], m["read"]) for m in shown["members"]} == {
        "bob": (True, True), "v_eve": (True, True)}


# -- keys ---------------------------------------------------------------------------------------
ids = st.text(alphabet=st.sampled_from(["#", ":", "\\", "a", "G", "C", "L", "X", "g", "_", "é"]), min_size=1,
              max_size=10).filter(valid_id)
identities = st.builds(Identity, st.sampled_from(KINDS), ids)
group_ids = st.builds(lambda s: "g_" + s, st.text(alphabet=st.sampled_from(["a", "#", ":", "_", "G"]), max_size=6))


@given(st.lists(st.tuples(identities, group_ids), min_size=2, max_size=6, unique=True))
def test_group_keys_never_meet_each_other_or_identity_keys(pairs: list[tuple[Identity, str]]) -> None:
    """Roster items (pk G#<group>), memberships (C#<group> in an identity's partition), groups
    left (X#<group> there) and the group count (sk G# there): two different (identity, group) pairs, or
    two different kinds of item, never share a key; and no roster partition is an identity's."""
    seen: dict[tuple[str, str], tuple[str, Identity, str]] = {}
    for who, group in pairs:
        for kind, key in member_keys(who, group).items():
            owner = (kind, who, group) if kind != "count" else (kind, who, "")
            previous = seen.setdefault((key["pk"], key["sk"]), owner)
            assert previous == owner, (key, previous, owner)
        roster_pk = member_keys(who, group)["roster"]["pk"]
        with pytest.raises(ValueError):
            Identity.from_key(roster_pk)


def test_a_member_whose_id_looks_like_a_group_key_is_just_a_member(harness: Harness,
                                                                   provisioned: dict[str, str]) -> None:
    tricky = Identity("user", "G#g_x")
    harness.connect("t1", tricky)
    group_id = create(harness, ALICE, tricky)
    h_answer = json.loads(json.dumps(ask(harness, ALICE, "group_members", conversation_id=group_id)))
    assert [m["member"] for m in h_answer["members"]] == [tricky.to_json(), ALICE.to_json()]
    assert group_count(provisioned, tricky) == 1


# -- races and crashes --------------------------------------------------------------------------
def test_concurrent_changes_from_many_containers_stay_gap_free(provisioned: dict[str, str]) -> None:
    """Four managers in four containers add twelve members and rename at once: every change
    gets its own seq, no seq is skipped, and the head's count is the roster's."""
    setup = make_harness(provisioned)
    group_id = create(setup, ALICE, BOB, CAROL, DAVE)
    for admin in (BOB, CAROL, DAVE):
        ask(setup, ALICE, "group_role", conversation_id=group_id, member=admin.to_json(), role="admin")
    for adder in (ALICE, BOB, CAROL, DAVE):
        wrote_to(setup, adder, *(Identity("user", f"{adder.id}-{n}") for n in range(3)))
    harnesses = [make_harness(provisioned) for _ in range(4)]
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []
    answers: list[dict[str, Any]] = []

    def run(h: Harness, who: Identity) -> None:
        try:
            barrier.wait()
            for n in range(3):
                answers.append(ask(h, who, "group_add", conversation_id=group_id,
                                   members=[Identity("user", f"{who.id}-{n}").to_json()]))
            answers.append(ask(h, who, "group_rename", conversation_id=group_id, title=f"by {who.id}"))
        except BaseException as error:  # surfaced below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(h, who))
               for h, who in zip(harnesses, (ALICE, BOB, CAROL, DAVE), strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(a["seq"] for a in answers) == list(range(5, 21)), answers
    assert [seq for seq, _ in events(provisioned, group_id)] == list(range(1, 21))
    members = roster(setup, ALICE, group_id)
    assert len(members) == 16 == head(provisioned, group_id)["members_count"]
    for key in members:
        who = Identity.from_key(key)
        if who not in (ALICE, BOB, CAROL, DAVE):
            joined = membership(provisioned, who, group_id)
            assert joined is not None
            assert log_of(provisioned, group_id)[int(joined["joined_seq"])]["event"]["members"] == [who.to_json()]


def test_a_crash_between_any_two_aws_calls_converges_to_one_event(provisioned: dict[str, str]) -> None:
    """group_add dies before each of its AWS calls in turn; the client's retry with the same id
    (in a fresh container) then finds exactly one joined event, with one answer."""
    probe = make_harness(provisioned)
    group_id = create(probe, ALICE, BOB)
    wrote_to(probe, ALICE, Identity("user", "p"))
    probe.log.calls.clear()
    ask(probe, ALICE, "group_add", "probe", conversation_id=group_id, members=[Identity("user", "p").to_json()])
    path = list(probe.log.calls)
    assert len(path) >= 6, path  # idempotency, head, membership, who is in, who wrote, the transaction, ...
    for crash_at in range(1, len(path) + 1):
        added = Identity("user", f"crash{crash_at}")
        wrote_to(probe, ALICE, added)
        h = make_harness(provisioned)
        h.log.calls.clear()
        h.log.fail_at = crash_at
        with pytest.raises(Crash):
            h.frame("a1", action="group_add", id=f"c-{crash_at}", conversation_id=group_id, members=[added.to_json()])
        retry = make_harness(provisioned)
        answer = ask(retry, ALICE, "group_add", f"c-{crash_at}", conversation_id=group_id, members=[added.to_json()])
        assert answer["type"] == "group_changed" and answer["seq"] is not None, (crash_at, path[crash_at - 1])
        joined = [i for i in log_of(provisioned, group_id)[1:]
                  if i["event"]["type"] == "joined" and i["event"]["members"] == [added.to_json()]]
        assert len(joined) == 1 and int(joined[0]["sk"]) == answer["seq"], (crash_at, path[crash_at - 1])
    assert [seq for seq, _ in events(provisioned, group_id)] == list(range(1, len(path) + 3))


def test_receipts_follow_the_members_ack_and_read_frames(harness: Harness, provisioned: dict[str, str]) -> None:
    group_id = create(harness, ALICE, BOB, CAROL)
    harness.frame("a1", action="send", id="s-1", text="Which size?", conversation_id=group_id)  # seq 2
    assert ask(harness, BOB, "ack", conversation_id=group_id, seq=2)["seq"] == 2
    assert ask(harness, BOB, "read", conversation_id=group_id, seq=1)["seq"] == 1
    assert ask(harness, CAROL, "ack", conversation_id=group_id, seq=1)["seq"] == 1
    by_seq = {seq: ask(harness, ALICE, "receipts", conversation_id=group_id, seq=seq) for seq in (1, 2)}
    assert [(r["acked"], r["read"]) for r in by_seq.values()] == [(2, 1), (1, 0)]
    assert by_seq[2]["members"] == [{"member": BOB.to_json(), "acked": True, "read": False},
                                    {"member": CAROL.to_json(), "acked": False, "read": False}]
    # a message's sender is never among its receipts (bob's own send marked it read for bob)
    harness.frame("b1", action="send", id="s-2", text="42", conversation_id=group_id)  # seq 3, by bob
    third = ask(harness, CAROL, "receipts", conversation_id=group_id, seq=3)
    assert [m["member"]["id"] for m in third["members"]] == ["alice", "carol"]
    assert (third["acked"], third["read"]) == (0, 0)


def test_the_list_previews_a_groups_last_event_until_a_text_follows(harness: Harness) -> None:
    """A list entry whose last message is an event carries it (the page says "Bob renamed the
    group to Wheels", not an empty preview); the next text message replaces it."""
    def last_message(who: Identity, group_id: str) -> dict[str, Any]:
        listed = ask(harness, who, "conversations")["conversations"]
        entry, = [c for c in listed if c["conversation_id"] == group_id]
        return dict(entry["last_message"])

    group_id = create(harness, ALICE, BOB)
    created = last_message(BOB, group_id)
    assert created["seq"] == 1 and created["text"] == ""
    assert created["event"] == {"type": "created", "title": "Bike parts", "members": [ALICE.to_json(), BOB.to_json()]}
    ask(harness, ALICE, "group_rename", conversation_id=group_id, title="Wheels")
    assert last_message(BOB, group_id)["event"] == {"type": "renamed", "title": "Wheels"}
    ask(harness, BOB, "send", conversation_id=group_id, text="Nice name")
    after_text = last_message(ALICE, group_id)
    assert after_text["text"] == "Nice name" and "event" not in after_text
