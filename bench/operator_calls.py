"""Benchmark: the AWS calls and cost of the operator's actions (issue 26 point 7, docs/operator.md).

    .venv/bin/python -m bench.operator_calls      # prints; writes the `operator` section of docs/performance.md

As bench/block_calls.py (typing_calls' harness): the services in this process on moto, every
AWS call counted on the app's own session and priced by bench/cost.py. Measured, each one
invocation: the ban gate a token passes (an identity not banned); a ban of an identity with one
WebSocket and one long poll open; an unban; an operator's delete of a 1:1 message (both members
online).
"""
from __future__ import annotations

from bench.call_count import Measured
from bench.typing_calls import Bench, calls_section, publish, rows_and_details, run
from chalicelib.logic.messaging import direct_conversation_id
from chalicelib.principal import Identity

OPERATOR = Identity("user", "o-operator")


def measure(env: dict[str, str]) -> dict[str, Measured]:
    bench = Bench(env)
    alice, pest = Identity("user", "o-alice"), Identity("user", "o-pest")
    bench.services.sessions.open("oa", alice, "http://recorded")
    bench.services.sessions.open("op", pest, "http://recorded")
    bench.services.long_poll.open(pest)
    bench.frame("op", action="send", id="p-1", text="x" * 100, to=alice.to_json())
    conversation = direct_conversation_id(alice, pest)
    operator = bench.services.operator
    measured: dict[str, Measured] = {}
    measured["the ban gate (a REST request's token, not banned)"] = bench.measure(
        [("rest", lambda: operator.admit(alice))])
    measured["delete (the operator's, a 1:1 message, both online)"] = bench.measure(
        [("rest", lambda: operator.delete(OPERATOR, {"conversation_id": conversation, "seq": 1}))])
    measured["ban (one WebSocket and one long poll open)"] = bench.measure(
        [("rest", lambda: operator.ban(OPERATOR, pest, "spam"))])
    measured["unban"] = bench.measure([("rest", lambda: operator.unban(OPERATOR, pest))])
    return measured


def section(measured: dict[str, Measured]) -> str:
    rows, details = rows_and_details(measured)
    return calls_section("operator_calls", "the operator's actions", rows, details, (
        "The gate is one eventually consistent GetItem of the ban item, on every REST request that "
        "reads a token (a connection's open reads it strongly consistent, after its record); its row "
        "prices the whole REST invocation, of which the gate's own share is 0.5 RRU ($0.0625 per "
        "million). A ban "
        "writes its item, Queries the identity's connections (consistent), and for each pushes the "
        "`banned` frame and closes it: a WebSocket through the callback API, a long poll by removing "
        "its record and mailbox and giving back its presence and connection slot (the WebSocket's "
        "close, a DELETE on the callback API, is not a billed message and not counted here). The operator's "
        "delete reads the message, a membership and the head, writes one transaction (the original "
        "blanked, the head, the event, both members' copies) and pushes the event to both members "
        "with its ack check, as a member's delete is delivered."))


def main() -> None:
    publish("operator", section(run(measure)))


if __name__ == "__main__":
    main()
