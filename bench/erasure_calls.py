"""Benchmark: the AWS calls and cost of an export and an erasure of one identity (issue 26
points 5 and 7, docs/operator.md "Export" and "Erasure").

    .venv/bin/python -m bench.erasure_calls      # prints; writes the `erasure` section of docs/performance.md

As bench/report_calls.py (typing_calls' harness): the services in this process on moto, every
AWS call counted on the app's own session and priced by bench/cost.py. A 1:1 conversation of
800 messages of 100 characters, every other one the identity's (written straight into the
tables); measured, each one REST invocation: the export's first page (its 400 messages), the
erasure's first step (200 tombstones), and its last step (the other phases).
"""
from __future__ import annotations

import boto3

from bench.call_count import Measured
from bench.typing_calls import Bench, calls_section, publish, rows_and_details, run
from chalicelib.logic.messaging import direct_conversation_id
from chalicelib.principal import Identity

MESSAGES = 800


def measure(env: dict[str, str]) -> dict[str, Measured]:
    bench = Bench(env)
    alice, bob, operator = Identity("user", "e-alice"), Identity("user", "e-bob"), Identity("user", "e-op")
    conversation = direct_conversation_id(alice, bob)
    dynamodb = boto3.resource("dynamodb")
    messages, members = dynamodb.Table(env["MESSAGES_TABLE"]), dynamodb.Table(env["MEMBERS_TABLE"])
    now = 1_795_734_600_000
    with messages.batch_writer() as batch:
        for seq in range(1, MESSAGES + 1):
            sender = alice if seq % 2 else bob
            batch.put_item(Item={"pk": conversation, "sk": seq, "sender": sender.key, "text": "x" * 100,
                                 "time": now + seq, "client_id": f"c-{seq}"})
        batch.put_item(Item={"pk": conversation, "sk": 0, "last_seq": MESSAGES, "last_time": now + MESSAGES,
                             "last_sender": bob.key, "preview": "x" * 100})
    for member, peer in ((alice, bob), (bob, alice)):
        members.put_item(Item={"pk": member.key, "sk": "C#" + conversation, "peer": peer.key,
                               "acked_seq": MESSAGES, "read_seq": MESSAGES, "last_seq": MESSAGES,
                               "last_time": now + MESSAGES, "last_sender": bob.key, "preview": "x" * 100})
    services = bench.services
    measured: dict[str, Measured] = {}
    measured[f"export, the first page ({MESSAGES // 2} messages of {MESSAGES} read)"] = bench.measure(
        [("rest", lambda: services.export.export(alice))])
    measured["erase, a step (200 tombstones in a 1:1)"] = bench.measure(
        [("rest", lambda: services.erasure.erase(operator, alice))])
    services.erasure.erase(operator, alice)  # the other 200
    measured["erase, the last step (the other phases, one 1:1)"] = bench.measure(
        [("rest", lambda: services.erasure.erase(operator, alice))])
    return measured


SHOWN_LINES = 24  # of a phase's priced lines: a step's 200 tombstones are the same 7 lines each


def section(measured: dict[str, Measured]) -> str:
    rows, details = [], []
    for name, phase in measured.items():
        row, lines = rows_and_details({name: phase})
        rows += row
        details += lines[:SHOWN_LINES + 1]
        if len(lines) > SHOWN_LINES + 1:
            details.append(f"  ... {len(lines) - SHOWN_LINES - 1} more lines of the same")
    return calls_section("erasure_calls", "an export page and of erasure steps", rows, details, (
        "An export page reads the identity's memberships (a Query of 2 items from the last one), then "
        "the groups it left (`X#`, the same walk: one Query more when there are none; the first page "
        "lists them too, one Query), its settings, links, ban and presence by key, both report lists, "
        "and each conversation's "
        "partition 100 items a Query (the filter keeps its messages; the others are read and paid). "
        "An erasure step reads a page of 100 items of the conversation per Query, the head's last seq "
        "and both memberships once per page (GetItems), writes one TransactWriteItems per message (the "
        "original blanked, the head, the `deleted` event, both members' copies of the last message: "
        "5 items at 2 WRU, plus the two memberships' index entries) and its progress after each page "
        "(PutItem), then pushes the page's last tombstone (a Query of the peer's routes; here no "
        "connection is open, so no PostToConnection: an online peer adds one, and pulls the gap with a "
        "`sync`). A group message's tombstone is 3 items, its push one fan-out job. The last step "
        "deletes the identity's partitions and lists its photos' prefixes. The Queries' read units "
        "here are priced by the items they return; DynamoDB charges a filtered Query by the items it "
        "reads (100 of ~180 B: 5 RRU consistent, not 3): a few hundredths of a cent more per 100,000 messages."), how=(
        "counted on the app's own session (moto in-process), priced by bench/cost.py "
        "(a REST request to the 128 MB REST function). \"per million\" is per million pages or steps: "
        "a step tombstones 200 messages, so 100,000 messages take 500 steps, the step's price per million "
        "/ 2,000."))


def main() -> None:
    publish("erasure", section(run(measure)))


if __name__ == "__main__":
    main()
