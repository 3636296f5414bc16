"""Benchmark: the AWS calls and cost of a delete for everyone (issue 26 point 7, protocol.md §16).

    .venv/bin/python -m bench.delete_calls      # prints; writes the `delete` section of docs/performance.md

As bench/block_calls.py (typing_calls' harness): the services in this process on moto, every
AWS call counted on the app's own session and priced by bench/cost.py. Measured, each one
invocation: the sender's delete of a 1:1 text message (the peer online); the same delete again
(a repeat: answered from the read, nothing written); a group owner's delete of a member's message.
"""
from __future__ import annotations

from bench.call_count import Measured
from bench.typing_calls import Bench, calls_section, publish, rows_and_details, run
from chalicelib.logic.messaging import direct_conversation_id
from chalicelib.principal import Identity


def measure(env: dict[str, str]) -> dict[str, Measured]:
    bench = Bench(env)
    alice, bob = Identity("user", "d-alice"), Identity("user", "d-bob")
    bench.services.sessions.open("da", alice, "http://recorded")
    bench.services.sessions.open("db", bob, "http://recorded")
    bench.frame("db", action="send", id="b-1", text="hello", to=alice.to_json())  # bob wrote: alice may add him
    bench.frame("da", action="send", id="a-1", text="x" * 100, to=bob.to_json())
    conversation = direct_conversation_id(alice, bob)
    measured: dict[str, Measured] = {}
    measured["delete (1:1, the sender's text, the peer online)"] = bench.measure(
        [("websocket", lambda: bench.frame("da", action="delete", id="k-1", conversation_id=conversation, seq=2))])
    measured["the same delete again (a repeat)"] = bench.measure(
        [("websocket", lambda: bench.frame("da", action="delete", id="k-2", conversation_id=conversation, seq=2))])
    bench.frame("da", action="group_create", id="g-1", title="bench", members=[bob.to_json()])
    group = next(j["conversation_id"] for j in bench.jobs if str(j.get("conversation_id", "")).startswith("g_"))
    bench.frame("db", action="send", id="b-2", text="x" * 100, conversation_id=group)  # seq 2
    measured["delete (group, the owner deletes a member's message)"] = bench.measure(
        [("websocket", lambda: bench.frame("da", action="delete", id="k-3", conversation_id=group, seq=2))])
    return measured


def section(measured: dict[str, Measured]) -> str:
    rows, details = rows_and_details(measured)
    return calls_section("delete_calls", "a delete for everyone", rows, details, (
        "A delete reads the deleter's membership and the message (two strongly consistent GetItems), "
        "then writes one transaction: the `deleted` event at the next seq (the head's gap-free "
        "condition), the original blanked under `attribute_not_exists(deleted)`, both members' "
        "cursors (1:1) or the deleter's role (group), and the send-rate window; then the event is "
        "delivered as a sent message is: 1:1, the peer's connections (one Query), the push and its "
        "ack-check job; group, the fan-out job (its roster page, presence and pushes are a group "
        "message's, bench/groups.py; the group's last seq is this container's guess from the send "
        "before, else one more half-price GetItem of its head). A photo's delete adds one "
        "DeleteObject. A repeat reads and answers: nothing is written, nothing pushed."))


def main() -> None:
    publish("delete", section(run(measure)))


if __name__ == "__main__":
    main()
