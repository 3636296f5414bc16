"""The connection cap holds under racing opens (issue 21, finding 9): 150 opens at once used to
get 79 long-poll + 74 WebSocket connections accepted against a cap of 20 (the count was one
Query before registering). Now each open takes a slot in the identity's presence item with a
conditional write: exactly the cap is accepted, a close frees its slot, and slots of
connections that ended without a close are reclaimed when they would refuse an open.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import pytest

from chalicelib.errors import RateLimitedError
from chalicelib.logic.limits import OPENING_GRACE_SECONDS
from chalicelib.principal import Identity
from chalicelib.wiring import Services
from tests.doubles import RecordingSender

ALICE, BOB = Identity("user", "alice"), Identity("user", "bob")
CAP = 20


class Clock:
    """The limits' clock: real time plus an offset moved by hand (a window passes at once)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def services(provisioned: dict[str, str], clock: Clock) -> Services:
    env = {**provisioned, "MAX_CONNECTIONS_PER_IDENTITY": str(CAP), "HANDSHAKE_GRACE_SECONDS": "0"}
    return Services.from_env(env, sender=RecordingSender(), limits_clock=clock)


def race(opens: list[Callable[[], Any]], threads: int = 16) -> tuple[list[Any], int]:
    """Run the opens at once (released together by a barrier); returns what the accepted ones
    answered and how many were refused with `rate_limited`. Anything else fails the test."""
    barrier = threading.Barrier(min(threads, len(opens)))
    accepted: list[Any] = []
    refused = 0
    lock = threading.Lock()

    def attempt(open_: Callable[[], Any], first: bool) -> None:
        nonlocal refused
        if first:
            barrier.wait(timeout=60)
        try:
            result = open_()
        except RateLimitedError as error:
            assert error.retry_after is not None and error.retry_after >= 1
            with lock:
                refused += 1
            return
        with lock:
            accepted.append(result)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        for future in [pool.submit(attempt, o, i < threads) for i, o in enumerate(opens)]:
            future.result()
    return accepted, refused


def ws_open(services: Services, connection_id: str, identity: Identity = ALICE) -> Callable[[], str]:
    def open_() -> str:
        services.sessions.open(connection_id, identity, "http://recorded")
        return connection_id
    return open_


def lp_open(services: Services, identity: Identity = ALICE) -> Callable[[], str]:
    return lambda: str(services.long_poll.open(identity)["connection_id"])


def slots(provisioned: dict[str, str], identity: Identity = ALICE) -> dict[str, Any]:
    table = boto3.resource("dynamodb").Table(provisioned["CONNECTIONS_TABLE"])
    item = table.get_item(Key={"pk": f"U#{identity.key}", "sk": "#presence"}, ConsistentRead=True).get("Item")
    return dict((item or {}).get("slots", {}))


def live_ids(services: Services, identity: Identity = ALICE) -> set[str]:
    return {c.connection_id for c in services.router.connections_of(identity)}


def test_racing_opens_on_both_transports_get_exactly_the_cap(services: Services,
                                                             provisioned: dict[str, str]) -> None:
    opens = [o for i in range(40) for o in (ws_open(services, f"ws-{i}"), lp_open(services))]  # 80 at once
    accepted, refused = race(opens)
    assert len(accepted) == CAP and refused == 80 - CAP  # before: ~4x the cap got in
    assert live_ids(services) == set(accepted) == set(slots(provisioned))
    # a refused WebSocket open left nothing registered
    assert all(services.router.lookup(f"ws-{i}") is None for i in range(40) if f"ws-{i}" not in accepted)
    # another identity is not affected
    assert len(race([lp_open(services, BOB)])[0]) == 1

    # closes free exactly their slots: 5 closes, then 12 racing opens get exactly 5
    closing = sorted(accepted)[:5]
    for connection_id in closing:
        if connection_id.startswith("lp-"):
            services.long_poll.close(ALICE, connection_id)
        else:
            services.sessions.close(connection_id)
    services.sessions.close(closing[0])  # a duplicate close: changes nothing
    services.limits.release_connection(ALICE, "ws-never-admitted")  # nor one never admitted
    assert len(slots(provisioned)) == CAP - 5
    again, refused = race([ws_open(services, f"again-{i}") for i in range(12)])
    assert len(again) == 5 and refused == 7
    assert len(live_ids(services)) == CAP == len(slots(provisioned))


def test_slots_of_connections_that_ended_without_a_close_are_reclaimed(services: Services, clock: Clock,
                                                                        provisioned: dict[str, str]) -> None:
    """Lost `$disconnect`s, long polls that stopped polling, an open that died between its slot
    and its registration: none keeps anyone out past its deadline, and no live one is dropped."""
    ws = [ws_open(services, f"ws-{i}")() for i in range(10)]  # live 2,400 s (heartbeat window)
    lp = [lp_open(services)() for _ in range(9)]  # live until their window without a poll ends
    services.limits.admit_connection(ALICE, "died-mid-open")  # a slot whose open never registered
    assert len(slots(provisioned)) == CAP
    with pytest.raises(RateLimitedError):
        ws_open(services, "refused")()
    # the long polls' windows and the grace passed; the WebSocket connections' 2,400 s not
    clock.offset = max(OPENING_GRACE_SECONDS, services.settings.long_poll_window_seconds) + 5
    accepted, refused = race([ws_open(services, f"late-{i}") for i in range(16)])
    assert len(accepted) == 10 and refused == 6  # exactly the 9 lapsed long polls and the dead open
    held = set(slots(provisioned))
    assert set(ws) <= held and not held & set(lp) and "died-mid-open" not in held and len(held) == CAP
