"""The conversation list in pages (issue 11, finding 7): newest first, disjoint, complete, and
each page one indexed Query of its own size, whatever the member's partition holds."""
from __future__ import annotations

import base64
import itertools
import json
from typing import Any

import pytest

from chalicelib.logic.frames import SendRequest
from chalicelib.principal import Identity
from chalicelib.wiring import Services
from tests.messaging_fixtures import CallLog, Harness, LoggedSender, counted_session

SELLER = Identity("user", "busy-seller")
BUYER = Identity("user", "real-buyer")
OTHER = Identity("user", "someone-else")


@pytest.fixture
def harness(provisioned: dict[str, str]) -> Harness:
    """Services whose DynamoDB Query parameters are recorded too."""
    log = CallLog()
    session = counted_session(log)
    queries: list[dict[str, Any]] = []
    session.events.register("provide-client-params.dynamodb.Query", lambda params, **_: queries.append(params))
    sender = LoggedSender(log)
    services = Services.from_env({**provisioned, "HANDSHAKE_GRACE_SECONDS": "0"}, session=session, sender=sender)
    h = Harness(services, sender, log)
    h.queries = queries  # type: ignore[attr-defined]
    h.connect("seller-1", SELLER)
    h.connect("other-1", OTHER)
    return h


def send(h: Harness, sender: Identity, to: Identity, text: str, client_id: str) -> None:
    h.services.messaging.send(sender, SendRequest.parse({"id": client_id, "text": text, "to": to.to_json()}))


_refs = itertools.count()


def ask(h: Harness, connection: str, ref: str, **fields: Any) -> dict[str, Any]:
    ref = f"{ref}-{next(_refs)}"  # unique: answers are matched by ref
    h.frame(connection, action="conversations", id=ref, **fields)
    answers = [f for f in h.frames_to(connection) if f.get("ref") == ref]
    assert len(answers) == 1
    return answers[0]


def all_pages(h: Harness, connection: str, **fields: Any) -> list[dict[str, Any]]:
    pages = [ask(h, connection, "p0", **fields)]
    while pages[-1]["more"]:
        pages.append(ask(h, connection, f"p{len(pages)}", cursor=pages[-1]["cursor"], **fields))
    return pages


def test_110_strangers_do_not_push_the_buyer_out_of_reach(harness: Harness) -> None:
    send(harness, BUYER, SELLER, "is it still for sale?", "b-1")
    strangers = [Identity("visitor", f"fresh-{i}") for i in range(110)]
    for number, stranger in enumerate(strangers):
        send(harness, stranger, SELLER, f"spam {number}", f"v-{number}")
    pages = all_pages(harness, "seller-1")
    assert [len(p["conversations"]) for p in pages] == [50, 50, 11]  # default limit 50
    for page in pages:
        assert page["type"] == "conversations"
        assert (page["cursor"] is not None) == page["more"]  # a cursor exactly when there is more
    entries = [c for p in pages for c in p["conversations"]]
    peers = [c["peer"] for c in entries]
    assert len(peers) == len({json.dumps(p, sort_keys=True) for p in peers}) == 111  # disjoint, complete
    assert BUYER.to_json() in peers
    assert peers[-1] == BUYER.to_json()  # the oldest last message: on the last page
    times = [c["last_message"]["time"] for c in entries]
    assert times == sorted(times, reverse=True)  # newest last message first, across pages
    # the buyer writes again: the conversation comes back to the top of the first page
    send(harness, BUYER, SELLER, "hello?", "b-2")
    assert ask(harness, "seller-1", "top", limit=1)["conversations"][0]["peer"] == BUYER.to_json()


def test_pages_of_any_size_are_disjoint_and_complete(harness: Harness) -> None:
    peers = [Identity("user", f"peer-{i}") for i in range(7)]
    for number, peer in enumerate(peers):
        send(harness, peer, SELLER, f"hi {number}", f"c-{number}")
    whole = ask(harness, "seller-1", "all", limit=100)
    assert whole["more"] is False and whole["cursor"] is None and len(whole["conversations"]) == 7
    for limit in (1, 2, 3, 6, 7):
        pages = all_pages(harness, "seller-1", limit=limit)
        assert [c["conversation_id"] for p in pages for c in p["conversations"]] == \
            [c["conversation_id"] for c in whole["conversations"]]
        assert all(len(p["conversations"]) == limit for p in pages[:-1])
        assert 0 < len(pages[-1]["conversations"]) <= limit  # no empty last page


def test_a_page_is_one_query_of_its_own_size_and_one_batch_read(harness: Harness) -> None:
    for number in range(12):
        send(harness, Identity("visitor", f"q-{number}"), SELLER, "hi", f"q-{number}")
    harness.log.calls.clear()
    harness.queries.clear()  # type: ignore[attr-defined]
    first = ask(harness, "seller-1", "one", limit=5)
    ask(harness, "seller-1", "two", limit=5, cursor=first["cursor"])
    queries = harness.queries  # type: ignore[attr-defined]
    indexed = [q for q in queries if "IndexName" in q]
    assert [q["IndexName"] for q in indexed] == ["by_last_time", "by_last_time"]
    assert [q["Limit"] for q in indexed] == [6, 6]  # the page and one more, never the partition
    assert all(q["ExpressionAttributeValues"][":pk"] == SELLER.key for q in queries)
    # and per page the member's group memberships (none here; at most GROUPS_PER_IDENTITY_LIMIT,
    # not in the index since a group send writes nothing per member, protocol.md §13.4)
    groups = [q for q in queries if "IndexName" not in q]
    assert [q["ExpressionAttributeValues"][":prefix"] for q in groups] == ["C#g_", "C#g_"]
    assert harness.log.calls.count("dynamodb.BatchGetItem") == 2  # peer_acked_seq: one per page, no heads
    assert harness.log.calls.count("dynamodb.Query") == 4


@pytest.mark.parametrize("fields", [
    {"limit": 0}, {"limit": 101}, {"limit": "5"}, {"limit": True}, {"limit": 2.5},
    {"cursor": 7}, {"cursor": ""}, {"cursor": "not base64 at all!"}, {"cursor": "x" * 600},
    {"cursor": base64.urlsafe_b64encode(b'{"pk": "user:busy-seller"}').decode()},
    {"cursor": base64.urlsafe_b64encode(b'[1, 2]').decode()},
    {"cursor": base64.urlsafe_b64encode(b'[-1, "d_x"]').decode()},
    {"cursor": base64.urlsafe_b64encode(b'[true, "d_x"]').decode()},
    {"cursor": base64.urlsafe_b64encode(b'[1, "\\ud800"]').decode()},
    {"cursor": base64.urlsafe_b64encode(b'\xff\xfe').decode()},
    {"cursor": base64.urlsafe_b64encode(b"[" * 300).decode()},
])
def test_bad_limits_and_forged_cursors_are_invalid_fields(harness: Harness, fields: dict[str, Any]) -> None:
    answer = ask(harness, "seller-1", "bad", **fields)
    assert answer["type"] == "error" and answer["code"] == "invalid_field"


def test_a_cursor_never_reads_another_members_list(harness: Harness) -> None:
    for number in range(4):
        send(harness, Identity("user", f"seller-peer-{number}"), SELLER, "hi", f"s-{number}")
    send(harness, BUYER, OTHER, "only mine", "o-1")
    sellers_cursor = ask(harness, "seller-1", "s", limit=1)["cursor"]
    # the seller's cursor, or one forged to name another member's conversation, used by OTHER:
    forged = base64.urlsafe_b64encode(json.dumps([2**53, "d_someone-elses"]).encode()).decode().rstrip("=")
    for cursor in (sellers_cursor, forged):
        answer = ask(harness, "other-1", f"o-{cursor[:5]}", cursor=cursor)
        assert answer["type"] == "conversations"
        assert {json.dumps(c["peer"]) for c in answer["conversations"]} <= {json.dumps(BUYER.to_json())}


def test_a_page_of_long_previews_stops_within_one_websocket_message(harness: Harness) -> None:
    members = harness.services.messaging._members  # written directly: 100 conversations fast
    for number in range(100):
        members.join(SELLER, f"d_long-{number}", Identity("user", f"long-{number}"), last_time=1000 + number,
                     last_seq=1, preview="\U0001f600" * 200, read_seq=0, acked_seq=0)
    pages = all_pages(harness, "seller-1", limit=100)
    assert len(pages) > 1
    sizes = [len(json.dumps(p, ensure_ascii=False).encode()) for p in pages]
    assert max(sizes) < 128 * 1024
    assert sum(len(p["conversations"]) for p in pages) == 100
