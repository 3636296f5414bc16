"""Storage keys built from ids that may contain the separators (issue 11, finding 3): `:` and
`#` are printable, so any id may hold them, and no two different things may share a key."""
from __future__ import annotations

from typing import Any

import boto3
import pytest
from hypothesis import given
from hypothesis import strategies as st

from chalicelib.logic.messaging import direct_conversation_id
from chalicelib.principal import KINDS, MAX_ID_LENGTH, Identity, valid_id
from chalicelib.storage.messages import _idempotency_key
from tests.messaging_fixtures import Harness, build_harness

SHOP = Identity("user", "shop")
SHOP_ALICE = Identity("user", "shop#alice")  # `shop` + `#alice`: the separator inside an id
CAROL = Identity("user", "carol")
DAVE = Identity("user", "dave")

# ids that are mostly separators and escapes, so collisions would be found if there were any
ids = st.text(alphabet=st.sampled_from(["#", ":", "\\", "a", "b", "C", "I", "L", "é"]), min_size=1,
              max_size=12).filter(valid_id)
identities = st.builds(Identity, st.sampled_from(KINDS), ids)


def stored(env: dict[str, str], conversation_id: str) -> list[dict[str, Any]]:
    table = boto3.resource("dynamodb").Table(env["MESSAGES_TABLE"])
    items = table.query(KeyConditionExpression="pk = :c", ExpressionAttributeValues={":c": conversation_id})["Items"]
    return [i for i in items if int(i["sk"]) > 0]


@pytest.fixture
def harness(provisioned: dict[str, str]) -> Harness:
    h = build_harness(provisioned)
    for connection, identity in [("shop", SHOP), ("shop-alice", SHOP_ALICE), ("carol", CAROL), ("dave", DAVE)]:
        h.connect(connection, identity)
    return h


@pytest.mark.parametrize("shop_first", [True, False])
def test_two_senders_whose_key_parts_run_together_each_get_their_own_message(
        harness: Harness, provisioned: dict[str, str], shop_first: bool) -> None:
    """`shop` with client id `alice#c-1` and `shop#alice` with `c-1`: before, one idempotency
    key, so whoever sent second was answered with (and its peer pushed) the first's message."""
    sends = [("shop", SHOP, CAROL, "alice#c-1", "from shop"),
             ("shop-alice", SHOP_ALICE, DAVE, "c-1", "from shop#alice")]
    for connection, _, peer, client_id, text in sends if shop_first else reversed(sends):
        harness.frame(connection, action="send", id=client_id, text=text, to=peer.to_json())
    for connection, sender, peer, client_id, text in sends:
        conversation = direct_conversation_id(sender, peer)
        assert harness.frames_to(connection, "sent") == [
            {"type": "sent", "ref": client_id, "conversation_id": conversation, "seq": 1,
             "time": harness.frames_to(connection, "sent")[0]["time"]}]
        assert [(m["text"], m["from"]) for m in harness.frames_to(peer.id, "message")] == [(text, sender.to_json())]
        assert [(i["text"], i["client_id"]) for i in stored(provisioned, conversation)] == [(text, client_id)]


def test_a_repeated_send_with_separators_in_both_ids_is_still_recognised(harness: Harness,
                                                                         provisioned: dict[str, str]) -> None:
    for _ in range(2):
        harness.frame("shop-alice", action="send", id="x#y\\#z", text="once", to=DAVE.to_json())
    assert [s["seq"] for s in harness.frames_to("shop-alice", "sent")] == [1, 1]
    assert len(stored(provisioned, direct_conversation_id(SHOP_ALICE, DAVE))) == 1


def test_routing_and_presence_keep_look_alike_identities_apart(harness: Harness) -> None:
    router = harness.services.router
    look_alikes = [Identity("user", "shop"), Identity("visitor", "shop"), Identity("user", "shop#C#x"),
                   Identity("user", "shop:x"), SHOP_ALICE]
    for index, identity in enumerate(look_alikes):
        if identity not in (SHOP, SHOP_ALICE):
            harness.connect(f"look-{index}", identity)
    for identity in look_alikes:
        assert [r.identity for r in router.connections_of(identity)] == [identity]
    presence = harness.services.presence.batch([SHOP, Identity("user", "shop#C#x"), Identity("user", "nobody")])
    assert [p["online"] for p in presence] == [True, True, False]


@given(identities)
def test_an_identity_key_round_trips_whatever_its_id_holds(identity: Identity) -> None:
    assert Identity.from_key(identity.key) == identity


@given(identities, ids, identities, ids)
def test_idempotency_keys_differ_for_different_senders_or_client_ids(
        sender: Identity, client_id: str, other: Identity, other_id: str) -> None:
    if (sender, client_id) != (other, other_id):
        assert _idempotency_key(sender, client_id) != _idempotency_key(other, other_id)


@given(identities, ids, ids)
def test_moving_a_separated_part_from_the_client_id_into_the_sender_id_changes_the_key(
        sender: Identity, part: str, client_id: str) -> None:
    """The reported shape in general: (`a`, `x#c`) against (`a#x`, `c`)."""
    longer = Identity(sender.kind, f"{sender.id}#{part}")
    assert _idempotency_key(sender, f"{part}#{client_id}") != _idempotency_key(longer, client_id)


def test_idempotency_keys_of_the_reported_pair_differ_and_plain_ids_keep_their_old_key() -> None:
    assert _idempotency_key(SHOP, "alice#c") != _idempotency_key(SHOP_ALICE, "c")
    assert _idempotency_key(Identity("user", "bob"), "m-1") == "I#user:bob#m-1"  # stored records still match
    assert len(_idempotency_key(Identity("visitor", "\U0001F600" * MAX_ID_LENGTH),
                                "\U0001F600" * MAX_ID_LENGTH).encode()) < 2048  # DynamoDB's pk limit


@given(identities, identities, identities, identities)
def test_direct_conversation_ids_differ_for_different_pairs(a: Identity, b: Identity, c: Identity,
                                                            d: Identity) -> None:
    if {a, b} != {c, d}:
        assert direct_conversation_id(a, b) != direct_conversation_id(c, d)
    assert direct_conversation_id(a, b) == direct_conversation_id(b, a)
