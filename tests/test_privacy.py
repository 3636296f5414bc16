"""A visitor's privacy: writing to a visitor unlocks nothing (issue 11, finding 4).

A visitor's presence and the user it became are shown only in a conversation where the visitor
itself wrote. Each leak the outside run found is one test here: presence pull, presence push,
`peer_linked_user` in the conversation list, and `describe_peer` after the visitor links.
"""
from __future__ import annotations

import pytest

from chalicelib.logic.messaging import direct_conversation_id
from chalicelib.principal import Identity
from tests.messaging_fixtures import Harness, build_harness

VISITOR = Identity("visitor", "v-private")
USER = Identity("user", "buyer-who-logs-in")
STRANGER = Identity("user", "cold-caller")  # writes to the visitor unasked
SELLER = Identity("user", "seller-asked")  # the visitor wrote to this one
HIDDEN = {"identity": VISITOR.to_json(), "online": None, "last_seen": None}


@pytest.fixture
def harness(provisioned: dict[str, str]) -> Harness:
    h = build_harness(provisioned)
    h.connect("stranger-1", STRANGER)
    h.connect("seller-1", SELLER)
    return h


def send(h: Harness, connection: str, text: str, client_id: str, **address: object) -> dict[str, object]:
    h.frame(connection, action="send", id=client_id, text=text, **address)
    return next(f for f in h.frames_to(connection, "sent") if f["ref"] == client_id)


def told_about(h: Harness, connection: str, who: Identity) -> list[bool]:
    return [f["online"] for f in h.frames_to(connection, "presence") if f["identity"] == who.to_json()]


def listed(h: Harness, connection: str, ref: str) -> dict[str, dict[str, object]]:
    h.frame(connection, action="conversations", id=ref)
    answer = next(f for f in h.frames_to(connection, "conversations") if f["ref"] == ref)
    return {c["conversation_id"]: c for c in answer["conversations"]}


def test_writing_to_a_visitor_does_not_unlock_its_presence_pull(harness: Harness) -> None:
    send(harness, "stranger-1", "hello, buy my stuff", "s-1", to=VISITOR.to_json())
    harness.connect("v-1", VISITOR)
    assert harness.services.presence.batch([VISITOR], caller=STRANGER) == [HIDDEN]
    # where the visitor itself wrote, the peer may pull it
    send(harness, "v-1", "is the bike available?", "v-a", to=SELLER.to_json())
    shown, = harness.services.presence.batch([VISITOR], caller=SELLER)
    assert shown["online"] is True and shown["last_seen"] is not None
    assert harness.services.presence.batch([VISITOR], caller=STRANGER) == [HIDDEN]  # still hidden


def test_writing_to_a_visitor_does_not_get_its_presence_pushed(harness: Harness) -> None:
    send(harness, "stranger-1", "hello, buy my stuff", "s-1", to=VISITOR.to_json())
    harness.connect("v-1", VISITOR)
    send(harness, "v-1", "is the bike available?", "v-a", to=SELLER.to_json())
    harness.services.router.unregister(harness.services.router.lookup("v-1"))  # type: ignore[arg-type]
    harness.services.presence.settle({"identity": VISITOR.key})  # offline: peers are told
    harness.connect("v-2", VISITOR)  # and online again
    assert told_about(harness, "seller-1", VISITOR) == [False, True]
    assert told_about(harness, "stranger-1", VISITOR) == []


def test_the_stranger_does_not_learn_who_the_visitor_became(harness: Harness) -> None:
    harness.connect("v-1", VISITOR)
    unasked = send(harness, "stranger-1", "hello, buy my stuff", "s-1", to=VISITOR.to_json())
    asked = send(harness, "v-1", "is the bike available?", "v-a", to=SELLER.to_json())
    carried = harness.services.linking.link(USER, VISITOR)
    # both conversations are carried over to the user's own side
    assert sorted(carried) == sorted([unasked["conversation_id"], asked["conversation_id"]])
    stranger_side = listed(harness, "stranger-1", "l-1")[unasked["conversation_id"]]
    assert "peer_linked_user" not in stranger_side and stranger_side["peer"] == VISITOR.to_json()
    linking = harness.services.linking
    nothing = {"identity": USER.to_json(), "chatted_before": [], "returning_visitor": False}
    assert linking.describe_peer(STRANGER, USER) == nothing
    assert linking.describe_peer(STRANGER, VISITOR)["returning_visitor"] is False
    # the seller the visitor wrote to does see it
    assert listed(harness, "seller-1", "l-2")[asked["conversation_id"]]["peer_linked_user"] == USER.to_json()
    assert linking.describe_peer(SELLER, USER) == {
        "identity": USER.to_json(), "returning_visitor": True,
        "chatted_before": [{"conversation_id": asked["conversation_id"], "as": VISITOR.to_json()}],
    }
    assert linking.describe_peer(SELLER, VISITOR)["returning_visitor"] is True


def test_after_linking_the_users_presence_is_not_pushed_to_the_stranger(harness: Harness) -> None:
    send(harness, "stranger-1", "hello, buy my stuff", "s-1", to=VISITOR.to_json())
    harness.connect("v-1", VISITOR)
    send(harness, "v-1", "is the bike available?", "v-a", to=SELLER.to_json())
    harness.services.linking.link(USER, VISITOR)
    harness.connect("u-1", USER)  # the user comes online: its carried conversations' peers
    assert told_about(harness, "seller-1", USER) == [True]  # knows the link: the visitor wrote
    assert told_about(harness, "stranger-1", USER) == []


def test_where_new_messages_go_in_a_conversation_the_visitor_never_wrote_in(harness: Harness) -> None:
    harness.connect("v-1", VISITOR)
    unasked = send(harness, "stranger-1", "hello, buy my stuff", "s-1", to=VISITOR.to_json())
    conversation = str(unasked["conversation_id"])
    assert conversation == direct_conversation_id(STRANGER, VISITOR)
    harness.services.linking.link(USER, VISITOR)
    harness.connect("u-1", USER)
    # the stranger writes again: the visitor identity gets it, the user it became does not
    send(harness, "stranger-1", "last chance", "s-2", conversation_id=conversation)
    assert [m["text"] for m in harness.frames_to("v-1", "message")] == ["hello, buy my stuff", "last chance"]
    assert harness.frames_to("u-1", "message") == []
    # the user answers in the carried conversation: that is the visitor writing, as the user
    send(harness, "u-1", "not interested", "u-a", conversation_id=conversation)
    reply, = [m for m in harness.frames_to("stranger-1", "message") if m["text"] == "not interested"]
    assert reply["from"] == USER.to_json()
    assert listed(harness, "stranger-1", "l-1")[conversation]["peer_linked_user"] == USER.to_json()
    send(harness, "stranger-1", "ok, bye", "s-3", conversation_id=conversation)
    assert [m["text"] for m in harness.frames_to("u-1", "message")] == ["ok, bye"]
