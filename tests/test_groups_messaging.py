"""Group messaging (issue 13, protocol.md §13) on moto: the send stores one item set whatever
the group's size, the fan-out pushes to online members only (a page of 100 members per job),
acks move one cursor, and sync, history and the conversation list derive what 1:1 keeps per
member from the group's head.

Groups are written straight into the tables in the layout of helpers/GROUPS.md (head, event
message, memberships, roster), so a group of 1,000 costs a batch write, not 50 `group_add`s.
"""
from __future__ import annotations

import itertools
import json
import math
from typing import Any

import boto3
import pytest

from chalicelib.logic.fanout import GROUP_FANOUT, RETRY_DELAYS
from chalicelib.logic.linking import Linking
from chalicelib.logic.messaging import ACK_CHECK, direct_conversation_id
from chalicelib.principal import Identity
from chalicelib.wiring import Services
from tests.messaging_fixtures import CallLog, Harness, LoggedSender, counted_session

ALICE = Identity("user", "alice")
BOB = Identity("user", "bob")
CAROL = Identity("user", "carol")
DAVE = Identity("user", "dave")
EVE = Identity("user", "eve")  # never a member
POST = "apigatewaymanagementapi.PostToConnection"

_ids = itertools.count()


class World:
    """The services, every pushed frame, and every job the app enqueued (captured from the
    SendMessage parameters, so a test runs them when it chooses: a job "delayed")."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        log = CallLog()
        session = counted_session(log)
        self.jobs: list[dict[str, Any]] = []
        self.delays: list[int] = []  # each job's DelaySeconds, in the order enqueued
        session.events.register("provide-client-params.sqs.SendMessage", self._enqueued)
        sender = LoggedSender(log)
        services = Services.from_env({**env, "HANDSHAKE_GRACE_SECONDS": "0"}, session=session, sender=sender)
        self.h = Harness(services, sender, log)
        dynamodb = boto3.resource("dynamodb")
        self.messages = dynamodb.Table(env["MESSAGES_TABLE"])
        self.members = dynamodb.Table(env["MEMBERS_TABLE"])

    def _enqueued(self, params: dict[str, Any], **_: Any) -> None:
        self.jobs.append(json.loads(params["MessageBody"]))
        self.delays.append(int(params.get("DelaySeconds", 0)))

    # -- groups, written directly (helpers/GROUPS.md) ------------------------------------------
    def create(self, members: list[Identity], title: str = "Bike parts") -> str:
        group = f"g_test{next(_ids):018d}"
        now = 1_795_734_600_000
        owner = members[0]
        with self.messages.batch_writer() as batch:
            batch.put_item(Item={"pk": group, "sk": 0, "last_seq": 1, "last_time": now, "last_sender": owner.key,
                                 "preview": "", "kind": "group", "title": title, "owner": owner.key,
                                 "members_count": len(members), "created_at": now})
            batch.put_item(Item={"pk": group, "sk": 1, "sender": owner.key, "text": "", "time": now,
                                 "client_id": "c-create", "event": {"type": "created", "title": title,
                                                                    "members": [m.to_json() for m in members]}})
        with self.members.batch_writer() as batch:
            for number, member in enumerate(members):
                role = "owner" if number == 0 else "member"
                batch.put_item(Item={"pk": member.key, "sk": "C#" + group, "group": True, "role": role,
                                     "joined_seq": 1, "acked_seq": 0, "read_seq": 1 if number == 0 else 0})
                batch.put_item(Item={"pk": "G#" + group, "sk": member.key, "role": role, "joined_seq": 1})
        return group

    def _event(self, group: str, actor: Identity, event: dict[str, Any], members_delta: int) -> int:
        head = self.messages.get_item(Key={"pk": group, "sk": 0}, ConsistentRead=True)["Item"]
        seq, now = int(head["last_seq"]) + 1, int(head["last_time"]) + 1
        self.messages.put_item(Item={"pk": group, "sk": seq, "sender": actor.key, "text": "", "time": now,
                                     "client_id": f"c-{seq}", "event": event})
        self.messages.update_item(
            Key={"pk": group, "sk": 0},
            UpdateExpression="SET last_seq = :n, last_time = :t, last_sender = :s, preview = :p "
                             "ADD members_count :d",
            ExpressionAttributeValues={":n": seq, ":t": now, ":s": actor.key, ":p": "", ":d": members_delta})
        return seq

    def add(self, group: str, member: Identity, by: Identity = ALICE) -> int:
        seq = self._event(group, by, {"type": "joined", "members": [member.to_json()], "role": "member"}, 1)
        self.members.put_item(Item={"pk": member.key, "sk": "C#" + group, "group": True, "role": "member",
                                    "joined_seq": seq, "acked_seq": seq - 1, "read_seq": seq - 1})
        self.members.put_item(Item={"pk": "G#" + group, "sk": member.key, "role": "member", "joined_seq": seq})
        return seq

    def remove(self, group: str, member: Identity, by: Identity = ALICE) -> int:
        seq = self._event(group, by, {"type": "removed", "member": member.to_json()}, -1)
        self.members.delete_item(Key={"pk": member.key, "sk": "C#" + group})
        self.members.delete_item(Key={"pk": "G#" + group, "sk": member.key})
        return seq

    def group_items(self, group: str) -> list[dict[str, Any]]:
        """Everything stored about the group in both tables (test-only scans)."""
        messages = self.messages.query(KeyConditionExpression="pk = :g", ExpressionAttributeValues={":g": group},
                                       ConsistentRead=True)["Items"]
        members = [i for i in self.members.scan(ConsistentRead=True)["Items"]
                   if group in (i["pk"], i["sk"], i["pk"][2:], i["sk"][2:])]
        return sorted(messages + members, key=lambda i: (str(i["pk"]), str(i["sk"])))

    # -- frames and jobs --------------------------------------------------------------------
    def connect(self, connection: str, identity: Identity) -> None:
        self.h.connect(connection, identity)

    def ask(self, connection: str, **frame: Any) -> dict[str, Any]:
        ref = f"r{next(_ids)}"
        self.h.frame(connection, id=ref, **frame)
        answers = [f for f in self.h.frames_to(connection) if f.get("ref") == ref]
        assert len(answers) == 1, answers
        return answers[0]

    def send(self, connection: str, group: str, text: str, **extra: Any) -> dict[str, Any]:
        return self.ask(connection, action="send", conversation_id=group, text=text, **extra)

    def fanout_jobs(self) -> list[dict[str, Any]]:
        taken = [j for j in self.jobs if j["kind"] == GROUP_FANOUT]
        self.jobs[:] = [j for j in self.jobs if j["kind"] != GROUP_FANOUT]
        return taken

    def run_fanouts(self) -> int:
        """Run the fan-out jobs queued so far and the ones they queue; returns how many ran."""
        ran = 0
        while pending := self.fanout_jobs():
            for job in pending:
                self.h.services.jobs.run(json.dumps(job))
                ran += 1
        return ran

    def messages_to(self, connection: str, group: str) -> list[dict[str, Any]]:
        return [f for f in self.h.frames_to(connection, "message") if f["conversation_id"] == group]


@pytest.fixture
def world(provisioned: dict[str, str]) -> World:
    return World(provisioned)


def users(prefix: str, count: int) -> list[Identity]:
    return [Identity("user", f"{prefix}-{number:04d}") for number in range(count)]


# -- the sender's path -------------------------------------------------------------------------
def test_the_senders_path_makes_the_same_calls_for_3_100_and_1000_members(world: World) -> None:
    world.connect("a1", ALICE)
    paths: dict[int, list[list[str]]] = {}
    for size in (3, 100, 1000):
        group = world.create([ALICE, *users(f"m{size}", size - 1)])
        before = world.group_items(group)
        paths[size] = []
        for number, hint in enumerate((None, None, 2)):  # a cold cache, a warm one, the client's hint
            world.h.log.calls.clear()
            extra = {} if hint is None else {"last_seq": hint + 1}
            sent = world.send("a1", group, f"hello {number}", **extra)
            assert sent["type"] == "sent" and sent["seq"] == number + 2
            paths[size].append(list(world.h.log.calls))
        after = world.group_items(group)
        # one item set per message: the message itself, the head moved; of the members' items
        # only the sender's own membership changed (its read cursor); nothing per member
        changed = [i for i in after if i not in before]
        assert sorted((str(i["pk"]), str(i["sk"])) for i in changed) == sorted(
            [(group, "0"), (group, "2"), (group, "3"), (group, "4"), (ALICE.key, "C#" + group)])
        assert len(after) == len(before) + 3
    assert paths[3] == paths[100] == paths[1000]
    cold, warm, hinted = paths[3]
    assert cold == ["dynamodb.TransactWriteItems", "dynamodb.TransactWriteItems", "sqs.SendMessage", POST]
    assert warm == hinted == ["dynamodb.TransactWriteItems", "sqs.SendMessage", POST]
    # the send never waits for the fan-out: one job per message, whatever the size
    assert [j["kind"] for j in world.fanout_jobs()] == [GROUP_FANOUT] * 9


def test_a_retried_send_is_stored_once_and_fanned_out_again(world: World) -> None:
    """A repeated send id is answered `sent` again and fanned out again: the first try may
    have died between the store and the fan-out, and nothing else would tell the members of
    the last message of a burst. Members drop the copy by seq; the repeat is counted as a
    send (issue 21, finding 3: a replay is never cheaper for an attacker than a fresh send)."""
    group = world.create([ALICE, BOB, CAROL])
    world.connect("a1", ALICE)
    world.connect("b1", BOB)
    world.h.frame("a1", action="send", id="m1", conversation_id=group, text="hello")
    world.h.frame("a1", action="send", id="m1", conversation_id=group, text="hello")  # msg:A lost: retried
    one, two = world.h.frames_to("a1", "sent")
    assert one == two and one["seq"] == 2
    stored = [i for i in world.group_items(group) if i["pk"] == group and int(i["sk"]) > 0]
    assert [int(i["sk"]) for i in stored] == [1, 2]
    assert world.run_fanouts() == 2
    assert [m["seq"] for m in world.messages_to("b1", group)] == [2, 2]  # the client drops the copy


# -- the fan-out -------------------------------------------------------------------------------
def test_fan_out_calls_follow_the_formula_and_reach_exactly_the_online_members(world: World) -> None:
    others = users("m", 249)
    group = world.create([ALICE, *others])  # M = 250
    members = len(others) + 1
    online = others[::10]  # 25 online members besides the sender
    connections: dict[str, Identity] = {}
    for number, member in enumerate(online):
        connections[f"c{number}"] = member
        if number % 5 == 0:
            connections[f"c{number}-phone"] = member  # some have two devices
    connections["a1"], connections["a2"] = ALICE, ALICE  # the sender: a1 sends, a2 is its other device
    for connection, identity in connections.items():
        world.connect(connection, identity)
    world.connect("e1", EVE)  # online, not a member
    world.jobs.clear()
    sent = world.send("a1", group, "hello all")
    world.h.log.calls.clear()
    assert world.run_fanouts() == math.ceil(members / 100)

    calls = world.h.log.calls
    pages = math.ceil(members / 100)
    # nothing per member (issue 24): the presence items carry the online members' connections
    assert calls.count("dynamodb.Query") == pages  # the roster pages only
    assert calls.count("dynamodb.BatchGetItem") == pages  # presence and routes of 100 members at a time
    assert calls.count("sqs.SendMessage") == pages - 1  # the next page's job (the first was the sender's)
    assert calls.count(POST) == len(connections) - 1  # every connection but the sending one
    assert len(calls) == 2 * pages + pages - 1 + len(connections) - 1  # nothing else
    assert not any(c.endswith(".Scan") for c in calls)

    stored = {"type": "message", "conversation_id": group, "seq": sent["seq"], "from": ALICE.to_json(),
              "text": "hello all", "time": sent["time"], "client_id": sent["ref"]}
    for connection in connections:
        assert world.messages_to(connection, group) == ([] if connection == "a1" else [stored])
    assert world.messages_to("e1", group) == []


def test_no_push_to_a_member_who_joined_after_the_message_nor_to_one_removed_before_its_fan_out(
        world: World) -> None:
    group = world.create([ALICE, BOB, CAROL])
    for connection, identity in (("a1", ALICE), ("b1", BOB), ("c1", CAROL), ("d1", DAVE)):
        world.connect(connection, identity)
    world.send("a1", group, "before dave")  # seq 2; its fan-out job is delayed
    world.add(group, DAVE)  # seq 3: dave joins
    world.remove(group, CAROL)  # seq 4: carol leaves the roster before the job runs
    world.run_fanouts()
    assert world.messages_to("d1", group) == []  # joined at 3: never gets 2 (it starts at its joined event)
    assert world.messages_to("c1", group) == []  # not a member any more
    assert [m["seq"] for m in world.messages_to("b1", group)] == [2]
    assert world.send("a1", group, "with dave")["seq"] == 5
    world.run_fanouts()
    assert [m["seq"] for m in world.messages_to("d1", group)] == [5]
    assert world.messages_to("c1", group) == []


def test_a_fan_out_job_that_fails_is_retried_safely(world: World) -> None:
    others = users("r", 149)
    group = world.create([ALICE, *others])  # two pages
    online = [others[3], others[120], others[140]]
    for number, member in enumerate(online):
        world.connect(f"o{number}", member)
    world.connect("a1", ALICE)
    world.connect("e1", EVE)
    world.jobs.clear()
    world.send("a1", group, "again and again")
    first, = world.fanout_jobs()
    # the first page's presence read fails after the next page was queued: the job raises, SQS retries it
    world.h.log.calls.clear()
    world.h.log.error_at = 3  # Query (roster), SendMessage (next page), then BatchGetItem (presence): fails
    with pytest.raises(RuntimeError):
        world.h.services.jobs.run(json.dumps(first))
    world.h.log.error_at = None
    assert world.messages_to("o0", group) == []
    world.h.services.jobs.run(json.dumps(first))  # the redelivery
    world.run_fanouts()  # the second page, queued by both runs: runs twice
    frames = {c: world.messages_to(c, group) for c in ("o0", "o1", "o2", "a1", "e1")}
    assert len(frames["o0"]) == 1 and len(frames["o1"]) == len(frames["o2"]) == 2  # repeats, never losses
    assert all(f == frames["o0"][0] for c in ("o1", "o2") for f in frames[c])  # the same frame, dropped by seq
    assert frames["a1"] == frames["e1"] == []
    # and a re-run after a member is removed no longer reaches it
    world.remove(group, others[3])
    world.h.services.jobs.run(json.dumps(first))
    assert len(world.messages_to("o0", group)) == 1


def test_a_push_that_fails_is_tried_again_later_for_that_connection_only(world: World) -> None:
    """Groups have no per-member retransmission, and the last message of a burst has no later
    one to reveal a gap: a push that fails (an error past the SDK's retries) is tried again
    after RETRY_DELAYS, only to the connections it failed for, at most len(RETRY_DELAYS) times."""
    group = world.create([ALICE, BOB, CAROL])
    for connection, who in (("a1", ALICE), ("b1", BOB), ("c1", CAROL)):
        world.connect(connection, who)
    world.jobs.clear()
    world.delays.clear()
    world.h.sender.failing["b1"] = 1
    world.send("a1", group, "the last word")
    page, = world.fanout_jobs()
    world.h.services.jobs.run(json.dumps(page))
    assert world.messages_to("b1", group) == [] and len(world.messages_to("c1", group)) == 1
    retry, = world.fanout_jobs()
    assert retry["retry"] == [[BOB.key, "b1"]] and retry["attempt"] == 1
    assert world.delays[-1] == RETRY_DELAYS[0]  # later, not at once
    world.h.services.jobs.run(json.dumps(retry))
    assert [m["text"] for m in world.messages_to("b1", group)] == ["the last word"]
    assert len(world.messages_to("c1", group)) == 1  # not pushed again
    assert world.fanout_jobs() == []  # delivered: no more retries

    # a connection that keeps failing is tried len(RETRY_DELAYS) more times, then left to the
    # client's own checks (a gap, a reconnect, the tail check)
    world.h.sender.failing["b1"] = 99
    world.delays.clear()
    world.send("a1", group, "into the void")
    assert world.run_fanouts() == 1 + len(RETRY_DELAYS)
    assert world.delays == [0, *RETRY_DELAYS]


def test_a_push_to_a_connection_forgotten_after_a_410_is_not_tried_again(world: World) -> None:
    group = world.create([ALICE, BOB])
    world.connect("a1", ALICE)
    world.connect("b1", BOB)
    world.jobs.clear()
    world.h.sender.gone.add("b1")  # it ended without a close: its route is pushed to once
    world.send("a1", group, "hello")
    world.h.log.calls.clear()
    assert world.run_fanouts() == 2  # the page, then one retry that finds the route gone...
    assert world.h.log.calls.count("apigatewaymanagementapi.PostToConnection") == 1  # ...and pushes nothing
    assert world.h.services.router.lookup("b1") is None


def fanout_enqueue_at(world: World, group: str) -> int:
    """Which call of a group send (after a clean one, so caches are as warm) queues the fan-out."""
    world.h.log.calls.clear()
    world.h.frame("a1", action="send", conversation_id=group, text="warm-up", id="warm-up")
    world.run_fanouts()
    world.h.log.calls.clear()
    world.h.frame("a1", action="send", conversation_id=group, text="probe", id="probe")
    world.run_fanouts()
    return world.h.log.calls.index("sqs.SendMessage") + 1


def send_tail_failing_enqueues(world: World, failures: int) -> tuple[str, int, dict[str, Any]]:
    """Alice (a1) sends "the last word" to a group with bob (b1) online, the fan-out's first
    `failures` enqueues failing (past the SDK's retries); the group, the call that queues the
    fan-out, and the send's answer."""
    group = world.create([ALICE, BOB])
    world.connect("a1", ALICE)
    world.connect("b1", BOB)
    world.run_fanouts()
    at = fanout_enqueue_at(world, group)
    world.h.log.calls.clear()
    world.h.log.error_at, world.h.log.error_calls = at, failures  # the transaction succeeds
    world.h.frame("a1", action="send", id="tail", conversation_id=group, text="the last word")
    world.h.log.error_at, world.h.log.error_calls = None, 1
    (answer,) = [f for f in world.h.frames_to("a1") if f.get("ref") == "tail"]
    return group, at, answer


def test_a_fan_out_that_cannot_start_is_started_by_the_retry_of_the_send(world: World) -> None:
    """The message is stored but its fan-out job cannot be enqueued (twice: logic/delivery.py):
    were it the last of a burst, no member would hear of it until a tail check (36 minutes).
    So the send answers `internal_error` ("outcome unknown": send the same frame again, §9a),
    and the retry, a repeat, starts the fan-out: the online member gets it pushed."""
    group, at, refused = send_tail_failing_enqueues(world, 2)
    assert world.h.log.calls[at - 2:at + 1] == ["dynamodb.TransactWriteItems", "sqs.SendMessage", "sqs.SendMessage"]
    assert refused["type"] == "error" and refused["code"] == "internal_error"
    world.jobs.clear()  # (the recorder saw the bodies of the tries that failed)
    before = len(world.messages_to("b1", group))
    assert world.run_fanouts() == 0 and len(world.messages_to("b1", group)) == before  # stored, told to nobody
    world.h.frame("a1", action="send", id="tail", conversation_id=group, text="the last word")  # the retry
    sent = [f for f in world.h.frames_to("a1") if f.get("ref") == "tail"][-1]
    assert sent["type"] == "sent" and sent["seq"] == 4  # the one stored message (after the two clean ones)
    assert world.run_fanouts() == 1
    assert [m["text"] for m in world.messages_to("b1", group)][before:] == ["the last word"]


def test_a_fan_out_whose_first_enqueue_fails_is_started_by_the_second_try(world: World) -> None:
    """The sender's retry after `internal_error` may never come (a client may settle the send
    from its copy in a pull), so the server tries the fan-out's enqueue once more first."""
    group, at, sent = send_tail_failing_enqueues(world, 1)
    assert world.h.log.calls[at - 1:at + 1] == ["sqs.SendMessage", "sqs.SendMessage"]
    assert sent["type"] == "sent"
    world.jobs.remove(next(j for j in world.jobs if j["kind"] == GROUP_FANOUT))  # (the try that failed)
    before = len(world.messages_to("b1", group))
    assert world.run_fanouts() == 1
    assert [m["text"] for m in world.messages_to("b1", group)][before:] == ["the last word"]


# -- who may ---------------------------------------------------------------------------------
def test_a_removed_member_can_no_longer_send_ack_read_sync_page_history_or_receive(world: World) -> None:
    group = world.create([ALICE, BOB, CAROL])
    world.connect("a1", ALICE)
    world.connect("c1", CAROL)
    world.send("a1", group, "one")
    world.remove(group, CAROL)
    before = world.group_items(group)
    refusals = [
        world.send("c1", group, "let me back"),
        world.ask("c1", action="ack", conversation_id=group, seq=2),
        world.ask("c1", action="ack", conversation_id=group, seq=99),  # past the end: still not_member
        world.ask("c1", action="read", conversation_id=group, seq=2),
        world.ask("c1", action="history", conversation_id=group),
    ]
    assert [r["code"] for r in refusals] == ["not_member"] * 5
    assert world.group_items(group) == before  # nothing stored, nothing moved
    idempotency = world.messages.scan(ConsistentRead=True)["Items"]
    assert not any(str(i["pk"]).startswith(f"I#{CAROL.key}") for i in idempotency)
    assert world.ask("c1", action="sync")["messages"] == []
    assert group not in [c["conversation_id"] for c in world.ask("c1", action="conversations")["conversations"]]
    world.send("a1", group, "after carol")
    world.run_fanouts()
    assert [m["seq"] for m in world.messages_to("c1", group)] == []


def test_a_stranger_gets_not_member_for_every_group_frame(world: World) -> None:
    group = world.create([ALICE, BOB])
    world.connect("e1", EVE)
    for frame in ({"action": "send", "conversation_id": group, "text": "hi"},
                  {"action": "ack", "conversation_id": group, "seq": 1},
                  {"action": "ack", "conversation_id": group, "seq": 50},
                  {"action": "read", "conversation_id": group, "seq": 1},
                  {"action": "history", "conversation_id": group}):
        assert world.ask("e1", **frame)["code"] == "not_member", frame
    assert world.ask("e1", action="sync")["messages"] == []


# -- ack and read ----------------------------------------------------------------------------
def test_a_group_ack_moves_one_cursor_and_nothing_else(world: World) -> None:
    group = world.create([ALICE, BOB, CAROL])
    world.connect("a1", ALICE)
    world.connect("b1", BOB)
    for number in range(3):
        world.send("a1", group, f"m{number}")
    world.jobs.clear()
    world.h.log.calls.clear()
    acked = world.ask("b1", action="ack", conversation_id=group, seq=4)
    assert (acked["type"], acked["conversation_id"], acked["seq"]) == ("acked", group, 4)
    # the head read half price (it already reaches 4: proof enough), then the cursor
    assert world.h.log.calls == ["dynamodb.GetItem", "dynamodb.UpdateItem", POST]
    assert world.jobs == []  # no ack check: no per-member retransmission in a group
    assert world.h.frames_to("a1", "delivered") == []  # and no `delivered`
    world.h.frame("b1", action="ack", conversation_id=group, seq=2, quiet=True)  # behind the cursor: kept
    assert world.ask("b1", action="ack", conversation_id=group, seq=3)["seq"] == 4
    past = world.ask("b1", action="ack", conversation_id=group, seq=5)
    assert past["code"] == "seq_out_of_range"
    assert world.ask("b1", action="read", conversation_id=group, seq=3)["seq"] == 3
    mine = world.members.get_item(Key={"pk": BOB.key, "sk": "C#" + group}, ConsistentRead=True)["Item"]
    assert (int(mine["acked_seq"]), int(mine["read_seq"])) == (4, 3)


def test_group_sends_queue_no_ack_check(world: World) -> None:
    group = world.create([ALICE, BOB])
    world.connect("a1", ALICE)
    world.connect("b1", BOB)
    world.jobs.clear()
    world.send("a1", group, "hi")
    assert [j["kind"] for j in world.jobs] == [GROUP_FANOUT]
    assert ACK_CHECK not in [j["kind"] for j in world.jobs]


# -- pulls -----------------------------------------------------------------------------------
def test_sync_and_history_start_at_the_joined_seq(world: World) -> None:
    group = world.create([ALICE, BOB])
    world.connect("a1", ALICE)
    for number in range(3):
        world.send("a1", group, f"before {number}")  # 2, 3, 4
    joined = world.add(group, DAVE)  # 5
    world.send("a1", group, "after")  # 6
    world.connect("d1", DAVE)
    synced = world.ask("d1", action="sync")
    assert [m["seq"] for m in synced["messages"]] == [5, 6] and synced["more"] is False
    assert synced["messages"][0]["event"] == {"type": "joined", "members": [DAVE.to_json()], "role": "member"}
    assert synced["messages"][0]["text"] == ""
    # `since` cannot reach before it either
    assert [m["seq"] for m in world.ask("d1", action="sync", since={group: 0})["messages"]] == [5, 6]
    history = world.ask("d1", action="history", conversation_id=group)
    assert [m["seq"] for m in history["messages"]] == [joined, 6] and history["more"] is False
    earlier = world.ask("d1", action="history", conversation_id=group, before=joined)
    assert (earlier["messages"], earlier["more"]) == ([], False)
    paged = world.ask("d1", action="history", conversation_id=group, limit=1)
    assert [m["seq"] for m in paged["messages"]] == [6] and paged["more"] is True
    # a member from the start pages back to the created event
    world.connect("b1", BOB)
    full = world.ask("b1", action="history", conversation_id=group)
    assert [m["seq"] for m in full["messages"]] == [1, 2, 3, 4, 5, 6] and full["more"] is False
    # sync pages as for 1:1, from the acked cursor
    world.ask("b1", action="ack", conversation_id=group, seq=3)
    first = world.ask("b1", action="sync", limit=2)
    assert [m["seq"] for m in first["messages"]] == [4, 5] and first["more"] is True


def test_sync_mixes_groups_and_direct_conversations(world: World) -> None:
    group = world.create([ALICE, BOB])
    world.connect("a1", ALICE)
    world.connect("b1", BOB)
    world.ask("a1", action="send", to=BOB.to_json(), text="direct")
    world.send("a1", group, "grouped")
    pulled = world.ask("b1", action="sync")["messages"]
    assert sorted((m["conversation_id"], m["seq"]) for m in pulled) == sorted(
        [(direct_conversation_id(ALICE, BOB), 1), (group, 1), (group, 2)])


# -- the conversation list -------------------------------------------------------------------
def test_the_list_shows_groups_with_preview_unread_and_role(world: World) -> None:
    group = world.create([ALICE, BOB, CAROL], title="Bike parts")
    world.connect("a1", ALICE)
    world.connect("b1", BOB)
    world.send("a1", group, "Which size?")
    world.send("a1", group, "Or colour?")
    world.ask("b1", action="read", conversation_id=group, seq=1)
    entry, = [c for c in world.ask("b1", action="conversations")["conversations"] if c["conversation_id"] == group]
    assert entry == {
        "conversation_id": group,
        "group": {"title": "Bike parts", "members_count": 3, "role": "member"},
        "last_message": {"seq": 3, "time": entry["last_message"]["time"], "text": "Or colour?",
                         "from": ALICE.to_json()},
        "unread": 2, "acked_seq": 0, "read_seq": 1, "joined_seq": 1,
    }
    mine, = [c for c in world.ask("a1", action="conversations")["conversations"] if c["conversation_id"] == group]
    assert mine["unread"] == 0 and mine["group"]["role"] == "owner"  # sending marks one's own message read


def test_pages_mixing_groups_and_direct_conversations_are_disjoint_and_complete(world: World) -> None:
    """Ties included: direct conversations and groups with the very same last message time."""
    members = world.h.services.messaging._members
    direct_times = [1000, 1000, 1001, 999, 1002, 1000, 5]
    for number, at in enumerate(direct_times):
        members.join(ALICE, f"d_direct-{number}", Identity("user", f"peer-{number}"), last_time=at, last_seq=1,
                     last_sender=f"user:peer-{number}", preview=f"direct {number}", read_seq=0, acked_seq=0)
    group_times = [1000, 1000, 1003, 998, 1001, 5, 1000]
    groups = []
    for at in group_times:
        group = world.create([ALICE, BOB])
        world.messages.update_item(Key={"pk": group, "sk": 0}, UpdateExpression="SET last_time = :t",
                                   ExpressionAttributeValues={":t": at})
        groups.append(group)
    world.connect("a1", ALICE)
    whole = world.ask("a1", action="conversations", limit=100)
    assert whole["more"] is False and whole["cursor"] is None
    listed = [c["conversation_id"] for c in whole["conversations"]]
    assert sorted(listed) == sorted([f"d_direct-{n}" for n in range(len(direct_times))] + groups)
    times = [c["last_message"]["time"] for c in whole["conversations"]]
    assert times == sorted(times, reverse=True)  # newest first
    for limit in range(1, len(listed) + 1):
        pages = [world.ask("a1", action="conversations", limit=limit)]
        while pages[-1]["more"]:
            pages.append(world.ask("a1", action="conversations", limit=limit, cursor=pages[-1]["cursor"]))
        assert [c["conversation_id"] for p in pages for c in p["conversations"]] == listed, limit
        assert all(len(p["conversations"]) == limit for p in pages[:-1])
        assert 0 < len(pages[-1]["conversations"]) <= limit
        assert all((p["cursor"] is not None) == p["more"] for p in pages)
    # each entry is of its kind: a group has `group`, a direct one `peer` and `peer_acked_seq`
    for entry in whole["conversations"]:
        assert ("group" in entry) == entry["conversation_id"].startswith("g_")
        assert ("peer" in entry) == ("peer_acked_seq" in entry) == entry["conversation_id"].startswith("d_")


def test_the_list_reads_heads_in_one_batch_per_100_groups(world: World) -> None:
    group = world.create([ALICE, BOB])
    world.connect("a1", ALICE)
    world.ask("a1", action="send", to=BOB.to_json(), text="direct")
    world.send("a1", group, "grouped")
    world.h.log.calls.clear()
    world.ask("a1", action="conversations")
    assert sorted(world.h.log.calls) == sorted(
        ["dynamodb.Query", "dynamodb.Query", "dynamodb.BatchGetItem", "dynamodb.BatchGetItem", POST])


# -- group memberships elsewhere -------------------------------------------------------------
def test_a_visitor_in_a_group_links_and_shows_presence_safely(world: World) -> None:
    visitor = Identity("visitor", "v_group")
    world.create([ALICE, visitor])
    world.connect("a1", ALICE)
    world.connect("v1", visitor)  # its presence goes to no group member (protocol.md §13.1)
    assert world.h.frames_to("a1", "presence") == []
    world.ask("v1", action="send", to=BOB.to_json(), text="a direct one too")
    linking: Linking = world.h.services.linking
    carried = linking.link(Identity("user", "became"), visitor)
    assert carried == [direct_conversation_id(visitor, BOB)]  # the group is not carried (a roster change)
    described = linking.describe_peer(ALICE, visitor)
    assert described["chatted_before"] == []  # a shared group is not a 1:1 conversation
