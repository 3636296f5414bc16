"""AWS calls of one complete exchange (msg:R through ack:N and the retransmit check), counted
with botocore event hooks on the app's own session, over real WebSockets to the real app.

The count does not depend on how many other connections are stored (no Scan anywhere).
`docs/performance.md` lists the calls; `bench/call_count.py` prints them.
"""
from __future__ import annotations

from bench.call_count import measure_exchange

TARGET = 12


def test_one_exchange_costs_the_same_with_10_and_2000_other_connections(provisioned: dict[str, str]) -> None:
    small = measure_exchange(provisioned, other_connections=10)
    large = measure_exchange(provisioned, other_connections=2000)
    assert small.calls == large.calls and small.warm_calls == large.warm_calls
    assert len(small.calls) <= TARGET, small.calls
    # the latency path: between msg:R arriving and msg:N leaving
    assert small.until_msg_n == ["dynamodb.GetItem", "dynamodb.TransactWriteItems", "dynamodb.Query",
                                 "apigatewaymanagementapi.PostToConnection"]
    assert not any(call.endswith(".Scan") for call in small.calls)
    # a warm container knows both connections: no GetItem to learn who sent msg:R or ack:R
    assert len(small.warm_calls) == len(small.calls) - 2
