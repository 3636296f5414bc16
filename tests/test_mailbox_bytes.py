"""The long-poll mailbox is bounded in bytes as well as in frames (issue 21, finding 6).

The reproduction: 30 messages of 4,000 emoji (16 KB of UTF-8 each, 480 KB in all: more than
a 400 KB DynamoDB item) pushed to a long-poll member that holds no poll. Before, the pushes
past the item's size failed ("Item size has exceeded the maximum allowed size", a traceback
each); in a group 17 of 30 never arrived and the client was told nothing. Now the mailbox
stops at its byte budget with `resync`, and a `sync` brings every message.
"""
from __future__ import annotations

import itertools
import json
import threading
from typing import Any

import boto3
import pytest

from chalicelib.logic.frames import Release
from chalicelib.principal import Identity
from chalicelib.storage.mailbox import MAX_BYTES, MAX_FRAMES, RESYNC, MailboxTable, weight
from tests.test_groups_messaging import World

ALICE = Identity("user", "alice")
BOB = Identity("user", "bob")
BIG = "\U0001F600" * 4000  # the longest text (4,000 code points), 4 UTF-8 bytes each
COUNT = 30

_ids = itertools.count()


class LongPollWorld(World):
    """The group test world; the doorbells' rings are SQS messages too, but not jobs."""

    def fanout_jobs(self) -> list[dict[str, Any]]:
        self.jobs[:] = [j for j in self.jobs if "kind" in j]
        return super().fanout_jobs()


@pytest.fixture
def world(provisioned: dict[str, str]) -> World:
    return LongPollWorld(provisioned)


def ask(world: World, connection: str, **frame: Any) -> dict[str, Any]:
    """A frame as a client sends it: UTF-8, not \\u-escaped (16 KB, under the 32 KB frame limit)."""
    ref = f"mb-{next(_ids)}"
    world.h.services.sessions.receive(connection, json.dumps({"id": ref, **frame}, ensure_ascii=False))
    answers = [f for f in world.h.frames_to(connection) if f.get("ref") == ref]
    assert len(answers) == 1, answers
    return answers[0]


def poll(world: World, connection: str, cursor: int = 0, base: int = 1) -> dict[str, Any]:
    return world.h.services.long_poll.poll(BOB, connection, Release(cursor, base))


def pull_everything(world: World, connection: str, conversation: str) -> list[int]:
    """What a client does on `resync`: `sync` until nothing more (over the long-poll POST)."""
    seqs: list[int] = []
    since: dict[str, int] = {}
    while True:
        frame: dict[str, Any] = {"action": "sync", "id": f"s{next(_ids)}", "limit": 100}
        if since:
            frame["since"] = since
        answer, = world.h.services.long_poll.send(BOB, connection, json.dumps(frame))
        assert answer["type"] == "sync", answer
        got = [m for m in answer["messages"] if m["conversation_id"] == conversation]
        seqs += [m["seq"] for m in got]
        if got:
            since = {conversation: got[-1]["seq"]}
        if not answer.get("more"):
            return seqs


def test_a_group_member_on_long_poll_gets_resync_and_then_every_message(world: World) -> None:
    group = world.create([ALICE, BOB])
    world.connect("a1", ALICE)
    connection = world.h.services.long_poll.open(BOB)["connection_id"]  # no poll held
    for _ in range(COUNT):
        assert ask(world, "a1", action="send", conversation_id=group, text=BIG)["type"] == "sent"
    world.run_fanouts()  # before: the pushes past ~400 KB failed in here, silently for the client
    answer = poll(world, connection)
    messages = [f for f in answer["frames"] if f["type"] == "message"]
    assert answer["frames"][-1] == {"type": "resync"}  # the client is told to pull
    assert 0 < len(messages) < COUNT and all(m["text"] == BIG for m in messages)
    sent = [m["seq"] for m in messages]
    assert sent == sorted(sent)
    assert set(range(2, 2 + COUNT)) <= set(pull_everything(world, connection, group))  # none lost
    # released, the mailbox takes frames again
    after = poll(world, connection, cursor=answer["cursor"], base=answer["base"])
    assert after["frames"] == []
    assert ask(world, "a1", action="send", conversation_id=group, text="small again")["type"] == "sent"
    world.run_fanouts()
    again = poll(world, connection, cursor=after["cursor"], base=after["base"])
    assert [f.get("text") for f in again["frames"]] == ["small again"]


def test_a_one_to_one_receiver_on_long_poll_gets_resync_and_then_every_message(world: World) -> None:
    world.connect("a1", ALICE)
    connection = world.h.services.long_poll.open(BOB)["connection_id"]
    answers = [ask(world, "a1", action="send", to=BOB.to_json(), text=BIG) for _ in range(COUNT)]
    assert [a["type"] for a in answers] == ["sent"] * COUNT  # before: failed pushes answered errors
    conversation = answers[0]["conversation_id"]
    answer = poll(world, connection)
    assert answer["frames"][-1] == {"type": "resync"}
    messages = [f for f in answer["frames"] if f["type"] == "message"]
    assert 0 < len(messages) < COUNT
    assert pull_everything(world, connection, conversation) == list(range(1, 1 + COUNT))


# -- the mailbox itself -------------------------------------------------------------------------

@pytest.fixture
def mailboxes(provisioned: dict[str, str]) -> MailboxTable:
    return MailboxTable(boto3.resource("dynamodb").Table(provisioned["CONNECTIONS_TABLE"]))


def frame_of(size: int, tag: str = "") -> str:
    """A frame text of exactly `size` UTF-8 bytes."""
    head = json.dumps({"type": "message", "tag": tag, "text": ""})
    return json.dumps({"type": "message", "tag": tag, "text": "x" * (size - len(head))})


def held(table: Any, connection: str) -> int:
    return int(table.get_item(Key={"pk": f"C#{connection}", "sk": "M"}, ConsistentRead=True)["Item"]["held"])


def test_the_byte_budget_holds_under_concurrent_appends_and_releases_count_it_down(
        provisioned: dict[str, str], mailboxes: MailboxTable) -> None:
    table = boto3.resource("dynamodb").Table(provisioned["CONNECTIONS_TABLE"])
    mailboxes.create("lp-x", BOB, 2_000_000_000)
    frames = [frame_of(20_000, str(i)) for i in range(40)]  # 800 KB offered, from 8 threads at once
    results: list[tuple[int, str] | None] = []
    lock = threading.Lock()

    def push(chunk: list[str]) -> None:
        for frame in chunk:
            appended = mailboxes.append("lp-x", frame)
            with lock:
                results.append(appended)

    threads = [threading.Thread(target=push, args=(frames[i::8],)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    peeked = mailboxes.peek("lp-x")
    assert peeked is not None
    stored = peeked.pending.frames
    assert stored[-1] == RESYNC and stored.count(RESYNC) == 1
    kept = stored[:-1]
    assert sum(weight(f) for f in kept) <= MAX_BYTES < sum(weight(f) for f in kept) + weight(frames[0])
    assert held(table, "lp-x") == sum(weight(f) for f in stored)  # exact, resync included
    assert sum(1 for r in results if r is not None) == len(stored)  # the rest: not stored, no error
    # a partial release subtracts exactly what it removed; the rest is kept
    pending = mailboxes.take("lp-x", BOB, 1, 3, 2_000_000_000)
    assert pending.frames == stored[3:] and held(table, "lp-x") == sum(weight(f) for f in stored[3:])
    # releasing everything empties it, and it takes frames again
    pending = mailboxes.take("lp-x", BOB, 4, len(stored) - 3, 2_000_000_000)
    assert pending.frames == () and held(table, "lp-x") == 0
    assert mailboxes.append("lp-x", frames[0]) == (len(stored) + 1, frames[0])


def test_a_frame_heavier_than_a_whole_mailbox_becomes_resync(mailboxes: MailboxTable) -> None:
    mailboxes.create("lp-y", BOB, 2_000_000_000)
    assert mailboxes.append("lp-y", frame_of(MAX_BYTES + 10)) == (1, RESYNC)
    assert mailboxes.append("lp-y", frame_of(100)) is None  # nothing after resync


def test_a_long_release_counts_the_weight_of_every_chunk(provisioned: dict[str, str],
                                                         mailboxes: MailboxTable) -> None:
    table = boto3.resource("dynamodb").Table(provisioned["CONNECTIONS_TABLE"])
    mailboxes.create("lp-z", BOB, 2_000_000_000)
    small = [frame_of(200 + i % 7, str(i)) for i in range(MAX_FRAMES + 3)]
    for frame in small:
        mailboxes.append("lp-z", frame)
    assert held(table, "lp-z") == sum(weight(f) for f in small[:MAX_FRAMES]) + weight(RESYNC)
    pending = mailboxes.take("lp-z", BOB, 1, 250, 2_000_000_000)  # three chunks
    assert len(pending.frames) == MAX_FRAMES + 1 - 250
    assert held(table, "lp-z") == sum(weight(f) for f in small[250:MAX_FRAMES]) + weight(RESYNC)
