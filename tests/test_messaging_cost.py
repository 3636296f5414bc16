"""The cuts of issue 12 point 6 keep every guarantee: a quiet ack (no ack:A frame) still moves
the cursor, pushes `delivered` and stops retransmission; refusals are still answered; the ack
check's half-price read never turns a missing retransmission into "done"."""
from __future__ import annotations

import json

import pytest

from chalicelib.logic.frames import CursorRequest
from chalicelib.logic.messaging import ACK_CHECK, direct_conversation_id
from chalicelib.principal import Identity
from chalicelib.storage.members import Membership, MembersTable
from tests.messaging_fixtures import Harness, build_harness

ALICE = Identity("user", "alice")
BOB = Identity("user", "bob")
CONV = direct_conversation_id(ALICE, BOB)


@pytest.fixture
def harness(provisioned: dict[str, str]) -> Harness:
    h = build_harness(provisioned)
    h.connect("a1", ALICE)
    h.connect("b1", BOB)
    return h


def send(h: Harness, text: str, client_id: str) -> None:
    h.frame("a1", action="send", id=client_id, text=text, to=BOB.to_json())


def run_check(h: Harness, seq: int, attempt: int = 1) -> None:
    h.services.jobs.run(json.dumps({"kind": ACK_CHECK, "conversation_id": CONV, "seq": seq,
                                    "receiver": BOB.key, "attempt": attempt}))


def test_a_quiet_ack_is_not_answered_but_delivers_and_stops_retransmission(harness: Harness) -> None:
    for i in range(3):
        send(harness, f"m{i}", f"m{i}")
    harness.frame("b1", action="ack", id="k1", conversation_id=CONV, seq=3, quiet=True)
    assert harness.frames_to("b1", "acked") == []  # one billed frame fewer
    assert [d["seq"] for d in harness.frames_to("a1", "delivered")] == [3]
    pushed = len(harness.frames_to("b1", "message"))
    for seq in (1, 2, 3):  # one cumulative ack covers every message of the burst
        run_check(harness, seq)
    assert len(harness.frames_to("b1", "message")) == pushed


def test_a_quiet_ack_is_still_refused_out_loud(harness: Harness) -> None:
    send(harness, "m", "m")
    harness.frame("b1", action="ack", id="k9", conversation_id=CONV, seq=9, quiet=True)
    harness.frame("b1", action="ack", id="k8", conversation_id=CONV, seq=1, quiet="yes")
    codes = [(e["ref"], e["code"]) for e in harness.frames_to("b1", "error")]
    assert codes == [("k9", "seq_out_of_range"), ("k8", "invalid_field")]


def test_an_ack_without_quiet_is_answered_as_before(harness: Harness) -> None:
    send(harness, "m", "m")
    harness.frame("b1", action="ack", id="k1", conversation_id=CONV, seq=1, quiet=None)
    assert harness.frames_to("b1", "acked") == [{"type": "acked", "ref": "k1", "conversation_id": CONV, "seq": 1}]


def test_quiet_parses_as_a_bool_only() -> None:
    assert CursorRequest.parse({"conversation_id": "c", "seq": 1, "quiet": True}).quiet is True
    assert CursorRequest.parse({"conversation_id": "c", "seq": 1}).quiet is False


class StaleMembers(MembersTable):
    """An eventually consistent read that has not seen the membership yet (just created)."""

    def __init__(self, inner: MembersTable) -> None:
        self.__dict__.update(inner.__dict__)
        self.reads: list[bool] = []

    def get(self, member: Identity, conversation_id: str, consistent: bool = True) -> Membership | None:
        self.reads.append(consistent)
        return super().get(member, conversation_id) if consistent else None


def test_a_stale_half_price_read_in_the_check_is_read_again_and_retransmits(harness: Harness) -> None:
    send(harness, "lost", "m1")
    messaging = harness.services.messaging
    stale = StaleMembers(messaging.ack_check._members)
    messaging.ack_check._members = stale
    run_check(harness, 1)
    assert stale.reads == [False, True]
    assert [m["seq"] for m in harness.frames_to("b1", "message")] == [1, 1]  # retransmitted


def test_the_check_after_an_ack_reads_once_at_half_price(harness: Harness) -> None:
    send(harness, "m", "m1")
    harness.frame("b1", action="ack", id="k", conversation_id=CONV, seq=1, quiet=True)
    messaging = harness.services.messaging
    stale = StaleMembers(messaging.ack_check._members)
    stale.get = lambda m, c, consistent=True: (stale.reads.append(consistent),  # type: ignore[method-assign]
                                               MembersTable.get(stale, m, c))[1]
    messaging.ack_check._members = stale
    run_check(harness, 1)
    assert stale.reads == [False]
