"""Benchmark: the AWS calls and cost of a report (issue 26 point 7, protocol.md §17).

    .venv/bin/python -m bench.report_calls      # prints; writes the `report` section of docs/performance.md

As bench/block_calls.py (typing_calls' harness): the services in this process on moto, every
AWS call counted on the app's own session and priced by bench/cost.py. Measured, each one
invocation, in a 1:1 conversation of 30 messages of 100 characters: a report of message 15
(10 each side copied), a report of the whole conversation (the last 20), and the first frame
sent again (its answer lost).
"""
from __future__ import annotations

from bench.call_count import Measured
from bench.typing_calls import Bench, calls_section, publish, rows_and_details, run
from chalicelib.logic.messaging import direct_conversation_id
from chalicelib.principal import Identity


def measure(env: dict[str, str]) -> dict[str, Measured]:
    bench = Bench(env)
    buyer, seller = Identity("user", "r-buyer"), Identity("user", "r-seller")
    bench.services.sessions.open("rb", buyer, "http://recorded")
    bench.services.sessions.open("rs", seller, "http://recorded")
    for n in range(1, 31):
        sender, receiver = ("rs", buyer) if n % 2 else ("rb", seller)
        bench.frame(sender, action="send", id=f"m-{n}", text="x" * 100, to=receiver.to_json())
    conversation = direct_conversation_id(buyer, seller)
    one = {"action": "report", "id": "rep-1", "conversation_id": conversation, "seq": 15, "reason": "scam"}
    measured: dict[str, Measured] = {}
    measured["report a message (10 each side copied)"] = bench.measure(
        [("websocket", lambda: bench.frame("rb", **one))])
    measured["report the conversation (the last 20 copied)"] = bench.measure(
        [("websocket", lambda: bench.frame("rb", action="report", id="rep-2", conversation_id=conversation,
                                           reason="spam"))])
    measured["the same report frame again"] = bench.measure([("websocket", lambda: bench.frame("rb", **one))])
    return measured


def section(measured: dict[str, Measured]) -> str:
    rows, details = rows_and_details(measured)
    return calls_section("report_calls", "a report", rows, details, (
        "A report reads the reporter's membership (which proves membership and bounds what it may "
        "copy), the message and its context (two Queries of at most 10; one of 20 for the whole "
        "conversation), and writes the report, its list entry and the report-rate counter in one "
        "transaction; the report item holds the copies, so its write units grow with them (3.5 KB "
        "here, 20 messages of 100 characters: 4 WRU, doubled by the transaction; at most about 33 KB "
        "with the 32 KB context bound). The frame sent again fails the "
        "report's own condition (priced here as if the transaction wrote, an upper bound) and takes "
        "from the rate window. A reported photo adds a CopyObject and a PutObjectTagging "
        "($5 + $5 per million at S3's list prices, with the copy's storage). Nothing is pushed to anyone."))


def main() -> None:
    publish("report", section(run(measure)))


if __name__ == "__main__":
    main()
