"""Benchmark: the AWS calls and cost of typing and seen (issue 15, protocol.md §14.2, §14.3).

    .venv/bin/python -m bench.typing_calls      # prints; writes the `typing` section of docs/performance.md

The services run in this process on moto (as bench/cost.py's connection-life phases do): every
AWS call the app makes is counted by a botocore hook on its session and priced by bench/cost.py
(the same units and prices as a message). Measured, each as its own invocation(s):

- one typing burst, 1:1: the one `typing` frame a client sends per 3 s while the user types
  (the server pushes it to the peer's connection); and one frame inside the interval (dropped:
  what a client that ignores the throttle costs per extra frame);
- one typing burst in a group of 100 members, 10 of them online (one connection each): the
  frame's invocation (the write and the fan-out job) and the `group_fanout` job;
- one `read` that moves a 1:1 read mark and pushes `seen` to the peer (one connection).
"""
from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3

from bench import call_count
from bench.call_count import Measured, MeasuredCalls
from bench.cost import Bill, functions, price
from bench.report import machine, update_section
from chalicelib.logic.messaging import direct_conversation_id
from chalicelib.principal import Identity
from chalicelib.wiring import Services
from tests.messaging_fixtures import LoggedSender, counted_session

GROUP_SIZE, GROUP_ONLINE = 100, 10  # the sender is one of the online members


class Bench:
    def __init__(self, env: dict[str, str]) -> None:
        self.log = MeasuredCalls()
        session = counted_session(self.log)
        session.events.register("after-call.*.*", self.log.answered)
        self.jobs: list[dict[str, Any]] = []
        session.events.register("provide-client-params.sqs.SendMessage",
                                lambda params, **_: self.jobs.append(json.loads(params["MessageBody"])))
        self.services = Services.from_env({**env, "HANDSHAKE_GRACE_SECONDS": "0"}, session=session,
                                          sender=LoggedSender(self.log))
        self.env = env
        self._number = 0

    def frame(self, connection: str, **frame: Any) -> None:
        self.services.sessions.receive(connection, json.dumps(frame))

    def measure(self, steps: list[tuple[str, Callable[[], None]]]) -> Measured:
        """Each step one invocation ("websocket" or "sqs"), with the items its writes left."""
        self.log.clear()
        kinds: dict[int, str] = {}
        seconds: dict[int, float] = {}
        for kind, run in steps:
            self._number += 1
            kinds[self._number] = kind
            call_count._invocation.measured, call_count._invocation.number = True, self._number
            began = time.perf_counter()
            try:
                run()
            finally:
                call_count._invocation.measured = False
                seconds[self._number] = time.perf_counter() - began
        client = boto3.client("dynamodb")
        records = self.log.records_in_order()
        for record in records:
            for table, key in call_count._written_keys(record):
                item = client.get_item(TableName=table, Key=key).get("Item")
                record.items[json.dumps([table, key], sort_keys=True)] = item or {}
            if isinstance(record.response, dict) and "Error" in record.response and "TableName" in record.request:
                # a failed condition writes nothing: one write unit for the item, no index write
                # (bench/cost.py prices a write by its request; a table name no index belongs to)
                record.request = {**record.request, "TableName": record.request["TableName"] + " (condition failed)"}
        numbers = {r.invocation for r in records}
        return Measured(records, {n: k for n, k in kinds.items() if n in numbers},
                        {n: s for n, s in seconds.items() if n in numbers})

    def run_job(self) -> None:
        job = self.jobs.pop(0)
        self.services.jobs.run(json.dumps(job))

    def group(self, members: list[Identity]) -> str:
        """A group written straight into the tables (the storage layout of storage/groups.py)."""
        messages = boto3.resource("dynamodb").Table(self.env["MESSAGES_TABLE"])
        table = boto3.resource("dynamodb").Table(self.env["MEMBERS_TABLE"])
        group, now, owner = "g_bench0000000000000001", 1_795_734_600_000, members[0]
        messages.put_item(Item={"pk": group, "sk": 0, "last_seq": 1, "last_time": now, "last_sender": owner.key,
                                "preview": "", "kind": "group", "title": "bench", "owner": owner.key,
                                "members_count": len(members), "created_at": now})
        with table.batch_writer() as batch:
            for number, member in enumerate(members):
                role = "owner" if number == 0 else "member"
                batch.put_item(Item={"pk": member.key, "sk": "C#" + group, "group": True, "role": role,
                                     "joined_seq": 1, "acked_seq": 0, "read_seq": 0})
                batch.put_item(Item={"pk": "G#" + group, "sk": member.key, "role": role, "joined_seq": 1})
        return group


def measure(env: dict[str, str]) -> dict[str, Measured]:
    """The phases, measured on a provisioned moto account (`env`)."""
    bench = Bench(env)
    alice, bob = Identity("user", "t-alice"), Identity("user", "t-bob")
    bench.services.sessions.open("ta", alice, "http://recorded")
    bench.services.sessions.open("tb", bob, "http://recorded")
    bench.frame("ta", action="send", id="t-1", text="x" * 100, to=bob.to_json())
    bench.frame("ta", action="send", id="t-2", text="x" * 100, to=bob.to_json())
    conversation = direct_conversation_id(alice, bob)
    measured: dict[str, Measured] = {}
    measured["typing, 1:1 (pushed)"] = bench.measure(
        [("websocket", lambda: bench.frame("ta", action="typing", conversation_id=conversation))])
    measured["typing, 1:1 (a frame inside the interval, dropped)"] = bench.measure(
        [("websocket", lambda: bench.frame("ta", action="typing", conversation_id=conversation))])
    members = [Identity("user", f"t-m{number:03d}") for number in range(GROUP_SIZE)]
    group = bench.group(members)
    for number, member in enumerate(members[:GROUP_ONLINE]):
        bench.services.sessions.open(f"tm{number}", member, "http://recorded")
    bench.jobs.clear()
    measured[f"typing, group of {GROUP_SIZE} ({GROUP_ONLINE} online, the sender one of them)"] = bench.measure(
        [("websocket", lambda: bench.frame("tm0", action="typing", conversation_id=group)),
         ("sqs", bench.run_job)])
    measured["read with seen, 1:1"] = bench.measure(
        [("websocket", lambda: bench.frame("tb", action="read", id="r-1", conversation_id=conversation, seq=2))])
    return measured


def run(phases: Callable[[dict[str, str]], dict[str, Measured]] = measure) -> dict[str, Measured]:
    """`phases` (this module's `measure` unless given) on a fresh embedded moto account."""
    from moto import mock_aws

    from devstack import moto_transactions
    from devstack.embedded_aws import EmbeddedAws, fake_credentials, serialize_moto_calls
    from devstack.local_secrets import provision_secrets

    fake_credentials()
    serialize_moto_calls()
    moto_transactions.install()
    with mock_aws(), tempfile.TemporaryDirectory() as local:
        env = {**EmbeddedAws(stage="bench").provision(), **provision_secrets("bench", Path(local))}
        return phases(env)


def rows_and_details(measured: dict[str, Measured]) -> tuple[list[str], list[str]]:
    """A table row per phase (calls, which, price per million) and the priced lines of each."""
    fns = functions()
    rows, details = [], []
    for name, phase in measured.items():
        bill: Bill = price(phase, existing=True, batch=10, fns=fns)
        calls = [r.call.split(".")[-1] for r in phase.records]
        summary = ", ".join(f"{calls.count(c)} x {c}" if calls.count(c) > 1 else c for c in dict.fromkeys(calls))
        rows.append(f"| {name} | {len(calls)} | {summary} | ${bill.total() * 1e6:.2f} |")
        details += [f"{name}:", *(f"  {line}" for line in bill.lines)]
    return rows, details


def calls_section(module: str, what: str, rows: list[str], details: list[str], explanation: str,
                  how: str = "counted on the app's own session (moto in-process, a warm container), "
                             "priced as a message is (bench/cost.py).") -> str:
    """A performance.md section of counted calls: the command, the table, why, the priced lines."""
    return "\n".join([
        f"`.venv/bin/python -m bench.{module}` ({machine()}): the AWS calls of {what}, {how}",
        "",
        "| what | AWS calls | which | per million |",
        "|---|---|---|---|",
        *rows,
        "",
        explanation,
        "",
        "```",
        *details,
        "```",
    ])


def publish(name: str, body: str) -> None:
    """Print a section and write it into docs/performance.md."""
    print(body)
    update_section(name, body)


def section(measured: dict[str, Measured]) -> str:
    rows, details = rows_and_details(measured)
    return "\n".join([
        f"`.venv/bin/python -m bench.typing_calls` ({machine()}): the AWS calls of typing and seen, counted "
        "on the app's own session (moto in-process, a warm container: the connections are known), priced "
        "as a message is (bench/cost.py; SQS event source at 10 jobs per receive).",
        "",
        "| what | AWS calls | which | per million |",
        "|---|---|---|---|",
        *rows,
        "",
        "A typing burst is one pushed frame per 3 s (the clients' throttle, and the server's interval: "
        "one conditional UpdateItem on the sender's own membership proves membership and limits in one "
        "write; a 1:1 membership is in the `by_last_time` index (projection ALL), so that write also "
        "writes the index). A frame inside the interval costs its invocation and one failed conditional "
        "write, and pushes nothing. A group's typing is one fan-out job: a roster page, then "
        "presence with each online member's routes in one BatchGetItem (protocol.md §14.2). `seen` "
        "adds one BatchGetItem (both settings) "
        "and the peer's push to a read that moves; the conversation list reads the peers' `read_seq` and "
        "both settings in the BatchGetItem it already made (one per 100 keys: up to 49 1:1 entries with "
        "distinct peers in one).",
        "",
        "```",
        *details,
        "```",
    ])


def main() -> None:
    body = section(run())
    print(body)
    update_section("typing", body)


if __name__ == "__main__":
    main()
