"""Linking a visitor to the user they log in as: conversations carry over, sellers see it."""
from __future__ import annotations

import pytest

from chalicelib.errors import AlreadyLinkedError, ForbiddenError
from chalicelib.logic.linking import Linking
from chalicelib.principal import Identity
from chalicelib.storage.members import MembersTable
from tests.conftest import table

VISITOR = Identity("visitor", "v-1")
USER = Identity("user", "buyer-1")
SELLER = Identity("user", "seller-1")
OTHER_SELLER = Identity("user", "seller-2")
STRANGER = Identity("user", "stranger")


@pytest.fixture
def members(provisioned: dict[str, str]) -> MembersTable:
    members = MembersTable(table(provisioned["MEMBERS_TABLE"]))
    # the visitor wrote to two sellers before logging in
    for conversation, seller in (("d:1", SELLER), ("d:2", OTHER_SELLER)):
        members.join(VISITOR, conversation, seller, wrote=True)
        members.join(seller, conversation, VISITOR, writers={VISITOR.key})
    return members


def test_linking_carries_the_visitors_conversations_over(members: MembersTable) -> None:
    carried = Linking(members).link(USER, VISITOR)
    assert sorted(carried) == ["d:1", "d:2"]
    mine = {m.conversation_id: m for m in members.conversations(USER)}
    assert sorted(mine) == ["d:1", "d:2"]
    assert mine["d:1"].peer == SELLER and mine["d:1"].via_visitor == VISITOR
    assert members.linked_user(VISITOR) == USER
    assert members.linked_visitors(USER) == [VISITOR]


def test_seller_sees_a_returning_visitor_who_chatted_before(members: MembersTable) -> None:
    linking = Linking(members)
    linking.link(USER, VISITOR)
    seen = linking.describe_peer(SELLER, USER)
    assert seen["returning_visitor"] is True
    assert seen["chatted_before"] == [{"conversation_id": "d:1", "as": VISITOR.to_json()}]
    # and looking at the visitor shows who they became, in the same conversation
    assert linking.describe_peer(SELLER, VISITOR)["chatted_before"][0]["conversation_id"] == "d:1"
    seller_side = {m.conversation_id: m for m in members.conversations(SELLER)}
    assert seller_side["d:1"].peer_linked_user == USER


def test_strangers_learn_nothing_about_links(members: MembersTable) -> None:
    linking = Linking(members)
    linking.link(USER, VISITOR)
    assert linking.describe_peer(STRANGER, USER) == {
        "identity": USER.to_json(), "chatted_before": [], "returning_visitor": False,
    }


def test_linking_is_idempotent(members: MembersTable) -> None:
    linking = Linking(members)
    linking.link(USER, VISITOR)
    linking.link(USER, VISITOR)
    assert len(members.conversations(USER)) == 2
    assert members.linked_visitors(USER) == [VISITOR]


def test_a_visitor_links_to_one_user_only(members: MembersTable) -> None:
    linking = Linking(members)
    linking.link(USER, VISITOR)
    with pytest.raises(AlreadyLinkedError):
        linking.link(Identity("user", "someone-else"), VISITOR)
    assert members.linked_user(VISITOR) == USER


@pytest.mark.parametrize(("user", "visitor"), [(VISITOR, VISITOR), (USER, SELLER), (VISITOR, USER)])
def test_only_a_user_links_only_a_visitor(members: MembersTable, user: Identity, visitor: Identity) -> None:
    with pytest.raises(ForbiddenError):
        Linking(members).link(user, visitor)


def test_a_conversation_the_visitor_never_wrote_in_is_carried_but_not_marked(members: MembersTable) -> None:
    # a stranger wrote to the visitor unasked; the visitor never answered
    members.join(VISITOR, "d:3", STRANGER, writers={STRANGER.key})
    members.join(STRANGER, "d:3", VISITOR, wrote=True)
    linking = Linking(members)
    assert sorted(linking.link(USER, VISITOR)) == ["d:1", "d:2", "d:3"]
    assert "d:3" in {m.conversation_id for m in members.conversations(USER)}  # the user's own side
    stranger_side, = members.conversations(STRANGER)
    assert stranger_side.peer_linked_user is None
    assert linking.describe_peer(STRANGER, USER) == {
        "identity": USER.to_json(), "chatted_before": [], "returning_visitor": False,
    }
    assert linking.describe_peer(STRANGER, VISITOR) == {
        "identity": VISITOR.to_json(), "returning_visitor": False,
        "chatted_before": [{"conversation_id": "d:3", "as": VISITOR.to_json()}],
    }
