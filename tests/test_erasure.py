"""Export and erasure of one identity (issue 26 points 5 and 6; docs/operator.md): the export of
an identity with messages in 1:1 and group conversations is complete (and pages); erasure
leaves nothing of it but tombstones in other people's conversations (asserted table by table),
run twice gives the same result, interrupted half-way (a death between two batches, injected by
a botocore hook) and run again completes with each message tombstoned once, and a large
identity is erased in bounded requests; a non-operator is refused both routes."""
from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import boto3
import httpx
import pytest

from chalicelib.logic.media import owner_part
from chalicelib.logic.messaging import direct_conversation_id
from chalicelib.principal import Identity
from chalicelib.storage.groups import ROSTER
from tests.messaging_fixtures import Crash
from tests.test_chaos_soak import app_stack
from tests.test_media import PNG, Person, World, fetch
from tests.test_operator import api, bearer, dev_token, operator_command

__all__ = ["app_stack"]
Frame = dict[str, Any]

ALICE = Identity("user", "er-alice")  # the identity erased
BOB, CAROL = Identity("user", "er-bob"), Identity("user", "er-carol")
VISITOR = Identity("visitor", "er-visitor-1")  # what alice was before she logged in
OP = Identity("user", "er-operator")
AB, AC = direct_conversation_id(ALICE, BOB), direct_conversation_id(ALICE, CAROL)
SECRET = "alice-secret"  # in every text alice writes: found nowhere after the erasure
_ids = itertools.count()


class Arm:
    """A botocore hook on the world's session: dies (Crash) before the `at`-th call of
    `operation` once armed; a death between two calls, as a Lambda killed mid-request."""

    def __init__(self, operation: str) -> None:
        self.operation, self.at, self.seen = operation, 0, 0

    def install(self, events: Any) -> None:
        events.register(f"before-call.dynamodb.{self.operation}", self._hook)

    def _hook(self, **_: Any) -> None:
        self.seen += 1
        if self.at and self.seen == self.at:
            raise Crash(f"injected death before {self.operation} #{self.at}")

    def arm(self, after: int) -> None:
        self.seen, self.at = 0, after


def populated(provisioned: dict[str, str], arm: Arm | None = None, faults: Callable[[Any], None] | None = None
              ) -> tuple[World, dict[str, Person], str]:
    """Alice writes to Bob (texts and a photo) and to Carol, both write back, Alice (owner)
    makes a group of the three and writes there, sets a setting, files a report, was a visitor."""
    world = World(provisioned, faults=arm.install if arm else faults)
    people = {name: Person(world, who, "ws") for name, who in (("alice", ALICE), ("bob", BOB), ("carol", CAROL))}
    alice, bob, carol = people["alice"], people["bob"], people["carol"]
    for n in range(3):
        assert alice.ask(action="send", to=BOB.to_json(), text=f"{SECRET} to bob {n}")["type"] == "sent"
    assert alice.send_photo(alice.upload(PNG), to=BOB, text=f"{SECRET} photo")["type"] == "sent"
    assert bob.ask(action="send", to=ALICE.to_json(), text="bob to alice")["type"] == "sent"
    assert alice.ask(action="send", to=CAROL.to_json(), text=f"{SECRET} to carol")["type"] == "sent"
    assert carol.ask(action="send", to=ALICE.to_json(), text="carol to alice")["type"] == "sent"
    group = alice.ask(action="group_create", title="three", members=[BOB.to_json(), CAROL.to_json()])
    gid = str(group["conversation_id"])
    assert alice.ask(action="send", conversation_id=gid, text=f"{SECRET} in the group")["type"] == "sent"
    assert bob.ask(action="send", conversation_id=gid, text="bob in the group")["type"] == "sent"
    assert alice.ask(action="settings", read_receipts=False)["read_receipts"] is False
    assert alice.ask(action="report", conversation_id=AB, seq=5, reason="spam")["type"] == "reported"
    world.services.linking.link(ALICE, VISITOR)
    return world, people, gid


def items(table: Any) -> list[dict[str, Any]]:
    """Every item of a table (a test-only Scan)."""
    return list(table.scan(ConsistentRead=True)["Items"])


def export_pages(world: World) -> list[Frame]:
    """Every page of alice's export, following `next` to the end."""
    pages = [world.services.export.export(ALICE)]
    while pages[-1]["next"] is not None:
        pages.append(world.services.export.export(ALICE, pages[-1]["next"]))
    return pages


def placed(pages: list[Frame]) -> list[tuple[str, int]]:
    """The (conversation, seq) of every message of these pages, in order."""
    return [(m["conversation_id"], m["seq"]) for page in pages for m in page["messages"]]


def erase_all(world: World, limit: int = 1000) -> list[Frame]:
    answers = []
    for _ in range(limit):
        answers.append(world.services.erasure.erase(OP, ALICE))
        if answers[-1]["done"]:
            return answers
    raise AssertionError("the erasure never finished")


def assert_erased(world: World, gid: str, banned: bool = False) -> None:
    """Nothing of alice is left but tombstones and events in others' conversations (and her
    ban, when she was banned)."""
    key = ALICE.key
    members = items(world.members)
    # members table: her partition (memberships, settings, links, group count) is gone but a
    # ban, the visitor's link to her too, she is on no roster; what names her: the peers' own
    # memberships (their conversation with her, with no text of hers), reports, the erasure's record
    assert [i["sk"] for i in members if i["pk"] == key] == (["B#"] if banned else [])
    assert [i for i in members if i["pk"] == VISITOR.key] == []
    assert [i for i in members if str(i["pk"]).startswith(ROSTER) and i["sk"] == key] == []
    progress = [i for i in members if i["pk"] == "E#" + key]
    assert len(progress) == 1 and progress[0]["phase"] == "done"
    roster = {i["sk"]: i["role"] for i in members if i["pk"] == ROSTER + gid}
    assert sorted(roster) == sorted([BOB.key, CAROL.key]) and "owner" in roster.values()
    assert not any(SECRET in str(i) for i in members if not str(i["pk"]).startswith(("P#", "PS#")))
    # messages table: every item she sent is blanked or an event; her counters are gone
    messages = items(world.messages)
    assert not any(SECRET in str(i) for i in messages)
    hers = [i for i in messages if i.get("sender") == key]
    originals = [i for i in hers if "event" not in i]
    assert originals and all(i["deleted"] is True and i["text"] == "" and "image" not in i for i in originals)
    deleted_events = Counter((i["pk"], int(i["event"]["seq"])) for i in messages
                             if "event" in i and i["event"].get("type") == "deleted")
    assert set(deleted_events) == {(i["pk"], int(i["sk"])) for i in originals}
    assert set(deleted_events.values()) == {1}  # each message tombstoned once
    assert [i for i in messages if str(i["pk"]).startswith("R#") and str(i["pk"]).endswith(":" + key)] == []
    # the others' messages are as they were
    assert {i["text"] for i in messages if i.get("sender") in (BOB.key, CAROL.key) and "event" not in i} == {
        "bob to alice", "carol to alice", "bob in the group"}
    # connections table: no presence, route, connection record or mailbox of hers
    connections = items(boto3.resource("dynamodb").Table(world.env["CONNECTIONS_TABLE"]))
    assert [i for i in connections if key in str(i.get("pk")) or i.get("identity") == key
            or i.get("owner") == key] == []
    # media bucket: no photo copy or upload of hers
    owner = owner_part(ALICE)
    assert world.keys(f"m/{owner}/") == [] and world.keys(f"u/{owner}/") == []


def test_the_export_of_an_identity_in_direct_and_group_conversations_is_complete(
        provisioned: dict[str, str]) -> None:
    world, _, gid = populated(provisioned)
    export = world.services.export.export(ALICE)
    assert export["identity"] == ALICE.to_json() and export["next"] is None
    texts = sorted(m["text"] for m in export["messages"])
    assert texts == sorted([f"{SECRET} to bob 0", f"{SECRET} to bob 1", f"{SECRET} to bob 2", f"{SECRET} photo",
                            f"{SECRET} to carol", f"{SECRET} in the group"])  # hers, and only hers
    assert {m["conversation_id"] for m in export["messages"]} == {AB, AC, gid}
    (photo,) = [m for m in export["messages"] if "image" in m]
    assert fetch(photo["image"]["url"]) == PNG  # a signed link that works
    shown = {m["conversation_id"]: m for m in export["memberships"]}
    assert set(shown) == {AB, AC, gid}
    assert shown[AB]["kind"] == "direct" and shown[AB]["peer"] == BOB.to_json() and shown[AB]["wrote"] is True
    assert shown[gid]["kind"] == "group" and shown[gid]["role"] == "owner"
    assert export["settings"] == {"read_receipts": False}
    assert export["linked"] == {"became": None, "was": [VISITOR.to_json()]}
    assert [(r["conversation_id"], r["seq"], r["reason"]) for r in export["reports_filed"]] == [(AB, 5, "spam")]
    assert export["ban"] is None and export["presence"] is not None
    # paged: two messages a page, the pages add up to the same messages, in the same order
    world.services.export.page_size = 2
    pages = export_pages(world)
    assert ["memberships" in page for page in pages] == [True] + [False] * (len(pages) - 1)
    assert all(len(page["messages"]) <= 2 for page in pages)
    assert placed(pages) == placed([export])
    # a page's Queries are bounded too (an identity in many conversations it never wrote in)
    world.services.export.page_size, world.services.export.max_queries = 1000, 1
    pages = export_pages(world)
    assert len(pages) >= 3 and placed(pages) == placed([export])
    with pytest.raises(Exception, match="cursor"):
        world.services.export.export(ALICE, "nope")


def test_erasure_leaves_nothing_but_tombstones_and_a_second_run_changes_nothing(provisioned: dict[str, str]) -> None:
    world, people, gid = populated(provisioned)
    assert world.services.operator.ban(OP, ALICE, "spam")["closed_connections"] == 1  # ban, then erase
    answers = erase_all(world)
    assert answers[-1]["done"] is True and answers[-1]["tombstoned"] == 6
    assert_erased(world, gid, banned=True)
    assert world.services.operator.ban_of(ALICE)["banned"] is True  # her unexpired tokens stay refused
    # the peers see tombstones where her messages were, their own as they were; an online peer
    # was pushed each batch's last tombstone (the gap before it makes its client pull the rest)
    bob = people["bob"]
    pushed = [f for f in bob.received("message") if f.get("event", {}).get("type") == "deleted"]
    assert [(f["conversation_id"], f["seq"], f["event"]["by"]) for f in pushed] == [
        (AB, int(world.messages.get_item(Key={"pk": AB, "sk": 0})["Item"]["last_seq"]), {"kind": "operator"})]
    fanned = [j["frame"]["event"] for j in world.jobs if j.get("kind") == "group_fanout"
              and j["conversation_id"] == gid and j["frame"].get("event", {}).get("type") == "deleted"]
    assert fanned == [{"type": "deleted", "seq": 2, "by": {"kind": "operator"}}]  # the group's, by its fan-out
    history = bob.ask(action="history", conversation_id=AB)["messages"]
    assert [(m["text"], m.get("deleted", False)) for m in history if "event" not in m] == [
        ("", True), ("", True), ("", True), ("", True), ("bob to alice", False)]
    # run again: the same answer, and nothing anywhere changes
    before = (items(world.members), items(world.messages), world.keys())
    assert world.services.erasure.erase(OP, ALICE) == answers[-1]
    assert (items(world.members), items(world.messages), world.keys()) == before


def test_an_erasure_interrupted_half_way_completes_when_run_again(provisioned: dict[str, str]) -> None:
    """A death between two batches (before a tombstone's transaction, half-way through her
    messages): each later request picks up from the saved
    progress, and the end state is the uninterrupted one, each message tombstoned once."""
    arm = Arm("TransactWriteItems")
    world, _, gid = populated(provisioned, arm)
    for n in range(20):  # more of her messages than one step takes
        assert world.services.messaging.send(ALICE, _send(BOB, f"{SECRET} more {n}"))["type"] == "sent"
    erasure = world.services.erasure
    erasure.step_units = 5  # bounded steps of 5 tombstones
    first = erasure.erase(OP, ALICE)
    assert first["done"] is False and first["phase"] == "messages" and 0 < first["tombstoned"] <= 5
    arm.arm(3)  # dies before its 3rd transaction: 2 tombstones stored, its progress not saved
    with pytest.raises(Crash):
        erasure.erase(OP, ALICE)
    arm.arm(0)
    answers = erase_all(world)
    assert answers[-1]["tombstoned"] >= 26 - 2  # (a batch redone finds the stored ones no more)
    assert_erased(world, gid)


def test_a_large_identity_is_erased_in_bounded_requests(provisioned: dict[str, str]) -> None:
    """2,000 messages of hers among 2,000 of her peer's (written straight to the table): each
    request stores at most its budget of tombstones; the requests add up to all of hers."""
    arm = Arm("TransactWriteItems")
    world = World(provisioned, faults=arm.install)
    n = 4000
    with world.messages.batch_writer() as batch:
        for seq in range(1, n + 1):
            sender = ALICE if seq % 2 else BOB
            batch.put_item(Item={"pk": AB, "sk": seq, "sender": sender.key, "text": f"{SECRET} {seq}",
                                 "time": 1_000 + seq, "client_id": f"c{seq}"})
        batch.put_item(Item={"pk": AB, "sk": 0, "last_seq": n, "last_time": 1_000 + n, "last_sender": BOB.key,
                             "preview": "x"})
    for member, peer in ((ALICE, BOB), (BOB, ALICE)):
        world.members.put_item(Item={"pk": member.key, "sk": "C#" + AB, "peer": peer.key, "acked_seq": n,
                                     "read_seq": n, "last_seq": n, "last_time": 1_000 + n})
    erasure = world.services.erasure
    requests, per_request = 0, []
    while True:
        arm.arm(0)
        answer = erasure.erase(OP, ALICE)
        requests += 1
        per_request.append(arm.seen)
        if answer["done"]:
            break
    assert answer["tombstoned"] == n // 2
    assert max(per_request) <= 200  # one transaction per tombstone, at most the step's budget
    assert requests == n // 2 // 200 + 1  # 10 full steps, then the other phases in one
    stored = items(world.messages)
    assert len([i for i in stored if i.get("deleted") is True]) == n // 2
    assert not any(SECRET in str(i) and i.get("sender") == ALICE.key for i in stored)
    head = world.messages.get_item(Key={"pk": AB, "sk": 0})["Item"]
    assert head["last_seq"] == Decimal(n + n // 2)  # one tombstone event each, gap-free
    assert world.members.get_item(Key={"pk": BOB.key, "sk": "C#" + AB})["Item"]["last_seq"] == n + n // 2


def test_a_non_operator_is_refused_export_and_erase_and_an_operator_runs_them(app_stack: str) -> None:
    from chalicelib.wiring import services
    user = dev_token(app_stack, "er-plain")
    visitor = httpx.post(api(app_stack, "/identity/visitor")).json()["token"]
    body = {"identity": ALICE.to_json()}
    services().messaging.send(ALICE, _send(BOB, f"{SECRET} over http"))
    for path in ("/operator/export", "/operator/erase"):
        for token in (user, visitor):
            answer = httpx.post(api(app_stack, path), headers=bearer(token), json=body)
            assert answer.status_code == 403 and answer.json()["error"]["code"] == "not_operator"
        assert httpx.post(api(app_stack, path), json=body).status_code == 401
    table = boto3.resource("dynamodb").Table(services().settings.messages_table)
    assert table.get_item(Key={"pk": AB, "sk": 1})["Item"]["text"] == f"{SECRET} over http"  # untouched
    operator = bearer(dev_token(app_stack, "er-op", operator=True))
    bad = httpx.post(api(app_stack, "/operator/erase"), headers=operator, json={"identity": {"kind": "x"}})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_field"
    exported = httpx.post(api(app_stack, "/operator/export"), headers=operator, json=body).json()
    assert [m["text"] for m in exported["messages"]] == [f"{SECRET} over http"]
    while not (answer := httpx.post(api(app_stack, "/operator/erase"), headers=operator, json=body).json())["done"]:
        pass
    assert answer["tombstoned"] == 1
    again = httpx.post(api(app_stack, "/operator/export"), headers=operator, json=body).json()
    assert again["messages"] == [] and again["memberships"] == []


def _send(to: Identity, text: str) -> Any:
    from chalicelib.logic.frames import SendRequest
    return SendRequest.parse({"id": f"er-{next(_ids)}", "text": text, "to": to.to_json()})


def test_the_command_line_exports_every_page_and_erases_to_the_end(app_stack: str) -> None:
    """`python -m webim_client.operator export|erase` (make operator ARGS=...): the export follows
    every page's `next` into one JSON, the erasure steps until done."""

    from chalicelib.wiring import services
    for n in range(3):
        services().messaging.send(ALICE, _send(BOB, f"{SECRET} cli {n}"))
    services().export.page_size = 1  # a page a message: the command line joins them
    services().erasure.step_units = 1
    cli = operator_command(app_stack, "er-cli-op")
    exported = cli("export", "user", ALICE.id)
    assert [m["text"] for m in exported["messages"]] == [f"{SECRET} cli {n}" for n in range(3)]
    assert "next" not in exported and [m["conversation_id"] for m in exported["memberships"]] == [AB]
    erased = cli("erase", "user", ALICE.id)
    assert erased["done"] is True and erased["tombstoned"] == 3
    assert cli("export", "user", ALICE.id)["messages"] == []


def test_a_conversation_whose_peer_membership_is_missing_is_erased_too(provisioned: dict[str, str]) -> None:
    """The tombstone's transaction names only the memberships that exist (one naming a missing
    one would be refused at every retry, and the erasure would never get past it)."""
    world = World(provisioned)
    for n in range(3):
        assert world.services.messaging.send(ALICE, _send(BOB, f"{SECRET} {n}"))["type"] == "sent"
    world.members.delete_item(Key={"pk": BOB.key, "sk": "C#" + AB})
    assert erase_all(world)[-1]["tombstoned"] == 3
    assert not any(SECRET in str(i) for i in items(world.messages))


def test_the_benchmark_counts_an_export_page_and_bounded_erasure_steps(provisioned: dict[str, str]) -> None:
    """bench/erasure_calls.py (docs/performance.md `erasure`): the calls it prices."""
    from bench.erasure_calls import measure

    export, step, last = (Counter(r.call.split(".")[-1] for r in phase.records)
                          for phase in measure(provisioned).values())
    assert set(export) == {"Query", "GetItem"}  # reads only, and never a Scan
    assert step["TransactWriteItems"] == 200 and "Scan" not in step  # one transaction a tombstone, the budget
    assert "TransactWriteItems" not in last and last["ListObjectsV2"] == 2 and last["BatchWriteItem"] == 1


class EveryNthWrite:
    """Dies (Crash) before every `n`-th write call of the world's session (DynamoDB writes, S3
    deletes), wherever it falls: in every phase of the erasure, between and inside batches."""

    WRITES = ("dynamodb.TransactWriteItems", "dynamodb.BatchWriteItem", "dynamodb.PutItem",
              "dynamodb.UpdateItem", "dynamodb.DeleteItem", "s3.DeleteObjects")

    def __init__(self) -> None:
        self.n, self.seen, self.deaths = 0, 0, Counter[str]()

    def install(self, events: Any) -> None:
        for name in self.WRITES:
            events.register(f"before-call.{name}", self._hook)

    def _hook(self, event_name: str, **_: Any) -> None:
        self.seen += 1
        if self.n and self.seen % self.n == 0:
            self.deaths[event_name.rsplit(".", maxsplit=1)[-1]] += 1
            raise Crash(f"injected death before write #{self.seen}")


def test_an_erasure_dying_again_and_again_in_every_phase_completes(provisioned: dict[str, str]) -> None:
    """Every 4th write dies (the progress saves among them): each run is cut short, in every
    phase, and the next picks up; the end state is the uninterrupted one."""
    deaths = EveryNthWrite()
    world, _, gid = populated(provisioned, faults=deaths.install)
    world.services.erasure.step_units = 3
    deaths.n = 4
    for _ in range(500):
        try:
            if world.services.erasure.erase(OP, ALICE)["done"]:
                break
        except Crash:
            continue
    else:
        raise AssertionError("the erasure never finished")
    deaths.n = 0
    # died before tombstones and group changes, progress saves, and the partitions' deletes
    assert {"TransactWriteItems", "PutItem", "BatchWriteItem"} <= set(deaths.deaths), deaths.deaths
    assert world.services.erasure.erase(OP, ALICE)["done"] is True
    assert_erased(world, gid)


def test_messages_in_groups_she_left_or_was_removed_from_are_exported_and_erased(provisioned: dict[str, str]) -> None:
    """A group she left and one she was removed from (then added to again) hold messages of
    hers no membership leads to any more: the leave writes `X#<group>` in her partition, the
    export lists the group left and walks both (the rejoined one once), the erasure
    tombstones them and then deletes the marks."""
    world, people, gid = populated(provisioned)
    alice, carol = people["alice"], people["carol"]
    left = str(carol.ask(action="group_create", title="left", members=[ALICE.to_json()])
               ["conversation_id"])
    assert alice.ask(action="send", conversation_id=left, text=f"{SECRET} before leaving")["type"] == "sent"
    assert alice.ask(action="group_leave", conversation_id=left)["type"] != "error"
    again = str(carol.ask(action="group_create", title="again", members=[ALICE.to_json()])["conversation_id"])
    assert alice.ask(action="send", conversation_id=again, text=f"{SECRET} before removal")["type"] == "sent"
    assert carol.ask(action="group_remove", conversation_id=again, member=ALICE.to_json())["type"] != "error"
    assert carol.ask(action="group_add", conversation_id=again, members=[ALICE.to_json()])["type"] != "error"
    marks = {str(i["sk"]) for i in items(world.members) if i["pk"] == ALICE.key and str(i["sk"]).startswith("X#")}
    assert marks == {"X#" + left, "X#" + again}

    export = world.services.export.export(ALICE)
    assert export["next"] is None
    assert [g["conversation_id"] for g in export["groups_left"]] == [left]  # `again`: a member again
    assert export["groups_left"][0]["left_seq"] > 1
    written = Counter((m["conversation_id"], m["text"]) for m in export["messages"])
    assert written[(left, f"{SECRET} before leaving")] == 1 and written[(again, f"{SECRET} before removal")] == 1
    assert set(written.values()) == {1} and len(written) == 8
    world.services.export.page_size = 1  # one message a page: the cursor carries a group left too
    assert placed(export_pages(world)) == placed([export])
    for forged in (f"G#{left}/0", "X#/0", f"{left}/0"):  # only a place this walk hands out
        with pytest.raises(Exception, match="cursor"):
            world.services.export.export(ALICE, forged)

    world.services.erasure.step_units = 3  # the walk of groups left resumes across requests too
    answers = erase_all(world)
    assert answers[-1]["tombstoned"] == 8
    assert_erased(world, gid)
    history = carol.ask(action="history", conversation_id=left)["messages"]
    assert [(m["seq"], m.get("deleted", False)) for m in history if "event" not in m] == [(2, True)]
    assert history[-1]["event"] == {"type": "deleted", "seq": 2, "by": {"kind": "operator"}}
