"""Benchmark: the AWS calls and cost of a block (issue 26 point 7, protocol.md §15).

    .venv/bin/python -m bench.block_calls      # prints; writes the `block` section of docs/performance.md

As bench/typing_calls.py (whose harness this uses): the services in this process on moto, every
AWS call counted on the app's session and priced by bench/cost.py. Measured, each one invocation:
a `block` of a 1:1 peer; the blocked peer's `send`, refused; the blocker's `unblock`.
"""
from __future__ import annotations

from bench.call_count import Measured
from bench.typing_calls import Bench, calls_section, publish, rows_and_details, run
from chalicelib.logic.messaging import direct_conversation_id
from chalicelib.principal import Identity


def measure(env: dict[str, str]) -> dict[str, Measured]:
    bench = Bench(env)
    alice, pest = Identity("user", "b-alice"), Identity("user", "b-pest")
    bench.services.sessions.open("ba", alice, "http://recorded")
    bench.services.sessions.open("bp", pest, "http://recorded")
    bench.frame("bp", action="send", id="p-1", text="x" * 100, to=alice.to_json())
    conversation = direct_conversation_id(alice, pest)
    measured: dict[str, Measured] = {}
    measured["block (a 1:1 peer)"] = bench.measure(
        [("websocket", lambda: bench.frame("ba", action="block", id="k-1", conversation_id=conversation))])
    measured["the blocked peer's send, refused"] = bench.measure(
        [("websocket", lambda: bench.frame("bp", action="send", id="p-2", text="x" * 100, to=alice.to_json()))])
    measured["unblock"] = bench.measure(
        [("websocket", lambda: bench.frame("ba", action="unblock", id="k-2", conversation_id=conversation))])
    return measured


def section(measured: dict[str, Measured]) -> str:
    rows, details = rows_and_details(measured)
    return calls_section("block_calls", "a block", rows, details, (
        "A block reads the caller's membership (its peer) and writes both sides' marks in one "
        "transaction; the blocked peer's send fails the send's own transaction on the blocker's "
        "membership (nothing stored, nothing pushed, no check scheduled; priced here as if the "
        "transaction wrote, an upper bound); nothing is read per "
        "signal afterwards: the privacy gate reads the marks from the memberships it already reads."))


def main() -> None:
    publish("block", section(run(measure)))


if __name__ == "__main__":
    main()
