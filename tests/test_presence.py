"""Presence on moto with a controlled clock and an in-memory job queue that runs due jobs."""
from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.cost import settle_runs_per_move
from chalicelib.logic.messaging import direct_conversation_id
from chalicelib.logic.presence import PRESENCE_PUSH, PRESENCE_SETTLE, PresenceService
from chalicelib.principal import Identity
from chalicelib.routing.router import Router
from chalicelib.storage.connections import ConnectionsTable
from chalicelib.storage.members import MembersTable
from chalicelib.storage.presence import PresenceTable
from tests.doubles import RecordingSender
from tests.messaging_fixtures import CallLog, counted_session

WINDOW, GRACE = 660, 5
PEER = Identity("user", "peer")


class Clock:
    def __init__(self) -> None:
        self.now = 2_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Jobs:
    """SQS stand-in: jobs become due after their delay; `run_due` runs them in due order."""

    clock: Clock
    pending: list[tuple[float, int, dict[str, Any]]] = field(default_factory=list)
    counter: itertools.count[int] = field(default_factory=itertools.count)

    def enqueue(self, kind: str, delay_seconds: int = 0, **fields: Any) -> None:
        self.pending.append((self.clock.now + delay_seconds, next(self.counter), {"kind": kind, **fields}))

    def run_due(self, service: PresenceService) -> None:
        while True:
            due = sorted(p for p in self.pending if p[0] <= self.clock.now)
            if not due:
                return
            self.pending.remove(due[0])
            job = due[0][2]
            assert job["kind"] in (PRESENCE_SETTLE, PRESENCE_PUSH)
            (service.settle if job["kind"] == PRESENCE_SETTLE else service.push_job)(job)


@dataclass
class World:
    service: PresenceService
    router: Router
    sender: RecordingSender
    jobs: Jobs
    clock: Clock
    members: MembersTable

    def connect(self, identity: Identity, connection_id: str) -> None:
        record = self.router.register(connection_id, identity, "http://e", live_seconds=WINDOW)
        self.service.live(record)

    def disconnect(self, connection_id: str) -> None:
        record = self.router.lookup(connection_id)
        assert record is not None
        self.router.unregister(record)
        self.service.gone(record.identity)

    def heartbeat(self, connection_id: str) -> None:
        record = self.router.lookup(connection_id)
        assert record is not None
        self.service.heartbeat(record)

    def advance(self, seconds: float) -> None:
        self.clock.now += seconds
        self.jobs.run_due(self.service)

    def told(self, peer_connection: str, about: Identity) -> list[bool]:
        frames = [json.loads(d) for cid, d in self.sender.sent if cid == peer_connection]
        return [f["online"] for f in frames if f["type"] == "presence" and f["identity"] == about.to_json()]

    def online(self, identity: Identity) -> bool | None:
        return self.service.batch([identity])[0]["online"]


@pytest.fixture
def world(provisioned: dict[str, str]) -> World:
    clock = Clock()
    dynamodb = boto3.resource("dynamodb")
    table = dynamodb.Table(provisioned["CONNECTIONS_TABLE"])
    sender = RecordingSender()
    router = Router(ConnectionsTable(table, clock), sender, 3 * 3600, clock)
    members = MembersTable(dynamodb.Table(provisioned["MEMBERS_TABLE"]))
    jobs = Jobs(clock)
    service = PresenceService(PresenceTable(table), router, members, jobs, WINDOW, GRACE, clock)  # type: ignore[arg-type]
    w = World(service, router, sender, jobs, clock, members)
    return w


def with_peer(world: World, identity: Identity, peer_connection: str = "peer-1") -> None:
    """`identity` wrote in a conversation with PEER, who is connected."""
    world.members.join(identity, f"c-{identity.id}", PEER, last_time=1, wrote=True)
    world.router.register(peer_connection, PEER, "http://e")


def test_online_while_any_device_lives_and_peers_told_once_each_way(world: World) -> None:
    alice = Identity("user", "alice")
    with_peer(world, alice)
    world.connect(alice, "phone")
    world.connect(alice, "laptop")
    assert world.online(alice) is True
    world.disconnect("phone")
    world.advance(GRACE + 1)
    assert world.online(alice) is True
    world.disconnect("laptop")
    world.advance(GRACE + 1)
    assert world.online(alice) is False
    assert world.told("peer-1", alice) == [True, False]


def test_a_reload_within_the_grace_period_does_not_flap(world: World) -> None:
    alice = Identity("user", "alice2")
    with_peer(world, alice)
    world.connect(alice, "tab-1")
    world.disconnect("tab-1")
    world.advance(2)  # the page reloads
    world.connect(alice, "tab-1b")
    world.advance(GRACE + 1)
    assert world.online(alice) is True
    assert world.told("peer-1", alice) == [True]


def test_a_lost_disconnect_counts_until_the_heartbeat_window_ends(world: World) -> None:
    alice = Identity("user", "alice3")
    with_peer(world, alice)
    world.connect(alice, "flaky")  # and then the network dies: no $disconnect ever comes
    world.advance(WINDOW - 10)
    assert world.online(alice) is True
    world.advance(20)
    assert world.online(alice) is False
    assert world.told("peer-1", alice) == [True, False]


def test_heartbeats_keep_a_connection_online(world: World) -> None:
    alice = Identity("user", "alice4")
    world.connect(alice, "steady")
    for _ in range(5):
        world.advance(300)
        world.heartbeat("steady")
    assert world.online(alice) is True


def test_an_identity_online_for_long_runs_one_chain_of_checks_not_one_per_heartbeat(world: World) -> None:
    """Each heartbeat queues the check for its new deadline; the check queued for the deadline
    it replaced ends when it finds the deadline moved. (It used to queue itself again, so every
    heartbeat added a chain that lived as long as the identity stayed online: after a day of
    pings, one check per ping ever sent ran at every deadline.)"""
    alice = Identity("user", "alice-long")
    world.connect(alice, "all-day")
    pending = []
    for _ in range(2 * 3600 // 300):  # two hours of heartbeats every 5 minutes (a connection's life)
        world.advance(300)
        world.heartbeat("all-day")
        pending.append(sum(1 for _, _, job in world.jobs.pending if job["kind"] == PRESENCE_SETTLE))
    assert max(pending) <= 3, pending[-5:]  # the newest deadline's check, and older ones about to end
    assert world.online(alice) is True
    world.advance(120)  # (no check falls due in the next minute)
    world.connect(alice, "second-tab")  # a second connection, then the first one closes:
    checks = [job for _, _, job in world.jobs.pending if job["kind"] == PRESENCE_SETTLE]
    world.disconnect("all-day")
    world.advance(GRACE + 1)  # the close's check finds her online and adds no chain of its own
    assert world.online(alice) is True
    assert [job for _, _, job in world.jobs.pending if job["kind"] == PRESENCE_SETTLE] == checks
    world.advance(WINDOW + 1)  # no more heartbeats: the last check finds her offline, and ends
    assert world.online(alice) is False and world.jobs.pending == []


def test_a_heartbeat_whose_check_cannot_be_queued_leaves_the_deadline_to_the_check_before(world: World) -> None:
    """The heartbeat's check could not be queued (the ping is answered `internal_error`): the
    deadline must not move without it, since the check for the deadline before ends once it
    sees the deadline moved. So the check is queued first; the check before carries on, and
    the lost disconnect is still judged and told when the connection's deadline passes."""
    alice = Identity("user", "alice-unchecked")
    with_peer(world, alice)
    world.connect(alice, "flaky-queue")
    world.advance(300)
    enqueue = world.jobs.enqueue

    def failing(kind: str, delay_seconds: int = 0, **fields: Any) -> None:
        raise RuntimeError("injected: SendMessage failed past its retries")

    world.jobs.enqueue = failing  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        world.heartbeat("flaky-queue")  # the connection's deadline moved (its record), the check did not go
    world.jobs.enqueue = enqueue  # type: ignore[method-assign]
    world.advance(WINDOW - 10)  # then the network dies: no heartbeat, no $disconnect
    assert world.online(alice) is True  # the connection's record holds the later deadline
    world.advance(WINDOW)
    assert world.online(alice) is False
    assert world.told("peer-1", alice) == [True, False]

@pytest.mark.parametrize(("window", "interval"), [(2400, 2160), (1200, 540), (2400, 1200)])
def test_a_moves_check_runs_as_often_as_the_cost_model_counts(provisioned: dict[str, str], window: int,
                                                              interval: int) -> None:
    """bench/cost.py prices each ping's (heartbeat's) settle check at `settle_runs_per_move` runs:
    the service, run with the deployed windows (WebSocket 2400 s, pings every 2160 s; long poll
    1200 s, heartbeats every 540 s) and SQS's 15-minute cap, runs it exactly that often."""
    clock = Clock()
    dynamodb = boto3.resource("dynamodb")
    table = dynamodb.Table(provisioned["CONNECTIONS_TABLE"])
    router = Router(ConnectionsTable(table, clock), RecordingSender(), 3 * 3600, clock)
    jobs = Jobs(clock)
    service = PresenceService(PresenceTable(table), router, MembersTable(dynamodb.Table(provisioned["MEMBERS_TABLE"])),
                              jobs, window, GRACE, clock)  # type: ignore[arg-type]
    settle, runs = service.settle, []
    service.settle = lambda job: (runs.append(clock.now), settle(job))[1]  # type: ignore[method-assign]
    service.live(router.register("steady", Identity("user", f"steady-{window}-{interval}"), "http://e",
                                 live_seconds=window))
    for _ in range(4):
        for _ in range(interval):  # a second at a time: each check runs when it is due
            clock.now += 1
            jobs.run_due(service)
        record = router.lookup("steady")
        assert record is not None
        service.heartbeat(record)
    start = clock.now - interval  # the last interval: every chain before it has settled into step
    assert len([t for t in runs if start < t <= clock.now]) == settle_runs_per_move(window, interval)

def test_batch_pull_is_one_batched_read(provisioned: dict[str, str], world: World) -> None:
    ids = [Identity("user", f"seller-{i}") for i in range(100)]
    for identity in ids[:10]:
        world.connect(identity, f"s-{identity.id}")
    log = CallLog()
    counted = PresenceTable(counted_session(log).resource("dynamodb").Table(provisioned["CONNECTIONS_TABLE"]))
    service = PresenceService(counted, world.router, world.members, world.jobs, WINDOW, GRACE, world.clock)  # type: ignore[arg-type]
    answers = service.batch(ids)
    assert log.calls == ["dynamodb.BatchGetItem"]
    assert [a["online"] for a in answers] == [True] * 10 + [False] * 90
    assert all(a["last_seen"] is not None for a in answers[:10]) and answers[50]["last_seen"] is None


def test_a_visitors_presence_is_pulled_only_by_someone_they_chat_with(world: World) -> None:
    visitor, seller, stranger = Identity("visitor", "v-shy"), Identity("user", "seller-1"), Identity("user", "nosy")
    world.members.join(seller, direct_conversation_id(seller, visitor), visitor, writers={visitor.key})  # it wrote
    world.connect(visitor, "v-conn")
    hidden = {"identity": visitor.to_json(), "online": None, "last_seen": None}
    assert world.service.batch([visitor]) == [hidden]  # no caller: nobody in particular
    assert world.service.batch([visitor], caller=stranger) == [hidden]
    shown = world.service.batch([visitor, seller], caller=seller)
    assert shown[0]["online"] is True and shown[0]["last_seen"] is not None
    assert shown[1]["online"] is False  # users are public, as before


device_ops = st.lists(
    st.tuples(st.sampled_from(["connect", "disconnect", "lose", "heartbeat", "wait"]), st.integers(0, 2),
              st.integers(1, 400)),
    min_size=1, max_size=12,
)
_identities = itertools.count()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=device_ops)
def test_any_interleaving_ends_in_the_right_state(world: World, ops: list[tuple[str, int, int]]) -> None:
    """Connects, disconnects, lost disconnects and heartbeats across three devices, with time
    passing: once things settle, the pulled state is "some device is live", and the last thing
    the peer was told agrees with it."""
    number = next(_identities)
    me = Identity("user", f"prop-{number}")
    peer_connection = f"peer-{number}"
    with_peer(world, me, peer_connection)
    connected: dict[int, str] = {}
    deadlines: dict[str, float] = {}  # connection -> live until (ghosts of lost ones included)
    serial = itertools.count()
    for op, device, seconds in ops:
        connection = connected.get(device)
        if op == "connect" and connection is None:
            connection = connected[device] = f"{me.id}-d{device}-{next(serial)}"
            world.connect(me, connection)
            deadlines[connection] = world.clock.now + WINDOW
        elif op == "disconnect" and connection is not None:
            world.disconnect(connection)
            del connected[device], deadlines[connection]
        elif op == "lose" and connection is not None:
            del connected[device]  # its items stay; its deadline still counts
        elif op == "heartbeat" and connection is not None:
            world.heartbeat(connection)
            deadlines[connection] = world.clock.now + WINDOW
        elif op == "wait":
            world.advance(seconds)
    world.advance(GRACE + 1)  # let pending disconnects be judged
    expected = any(until > world.clock.now for until in deadlines.values())
    assert world.online(me) is expected
    told = world.told(peer_connection, me)
    assert (told[-1] if told else False) is expected
    assert all(a != b for a, b in itertools.pairwise(told))  # never the same news twice in a row


def test_concurrent_connects_and_disconnects_from_many_devices_settle_right(world: World) -> None:
    """Eight devices connect and four disconnect at once, from threads (as many Lambdas would):
    the conditional writes serialise them, and the identity ends online, told once."""
    import threading

    me = Identity("user", "busy")
    with_peer(world, me, "peer-busy")
    barrier = threading.Barrier(8)

    def device(index: int) -> None:
        barrier.wait()
        world.connect(me, f"busy-{index}")
        if index % 2:
            world.disconnect(f"busy-{index}")

    threads = [threading.Thread(target=device, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    world.advance(GRACE + 1)
    assert world.online(me) is True
    assert world.told("peer-busy", me) == [True]
    for index in range(0, 8, 2):
        world.disconnect(f"busy-{index}")
    world.advance(GRACE + 1)
    assert world.online(me) is False
    assert world.told("peer-busy", me) == [True, False]


def fans_of(world: World, star: Identity, count: int, wrote: bool = True) -> list[str]:
    """`count` conversations of `star`, fan i's being the i-th newest-but-oldest; each fan connected."""
    connections = []
    for i in range(count):
        fan = Identity("user", f"{star.id}-fan-{i}")
        world.members.join(star, f"c-{star.id}-{i}", fan, last_time=1000 + i, wrote=wrote)
        connections.append(f"{star.id}-fan-conn-{i}")
        world.router.register(connections[-1], fan, "http://e")
    return connections


def test_every_peer_is_told_not_only_the_50_newest(world: World) -> None:
    star = Identity("user", "popular")
    fans = fans_of(world, star, 130)
    world.connect(star, "star-1")
    told_at_once = [i for i, conn in enumerate(fans) if world.told(conn, star)]
    assert told_at_once == list(range(80, 130))  # the newest page inline, in the connect itself
    queued = [job for _, _, job in world.jobs.pending if job["kind"] == PRESENCE_PUSH]
    assert len(queued) == 1  # the rest: one job per page, each queueing the next
    world.advance(0)
    assert all(world.told(conn, star) == [True] for conn in fans)
    assert not [job for _, _, job in world.jobs.pending if job["kind"] == PRESENCE_PUSH]


def test_a_page_job_for_news_that_is_out_of_date_tells_nobody(world: World) -> None:
    star = Identity("user", "fickle")
    fans = fans_of(world, star, 130)
    world.connect(star, "star-1")
    world.disconnect("star-1")
    world.clock.now += GRACE + 1
    world.service.settle({"identity": star.key})  # offline now, before the "online" pages ran
    world.advance(0)  # both chains' jobs: the online one stops, the offline one tells the rest
    assert [world.told(conn, star) for conn in fans[80:]] == [[True, False]] * 50
    assert [world.told(conn, star) for conn in fans[:80]] == [[False]] * 80  # never a late "online"


def test_a_visitor_is_told_only_to_peers_it_wrote_to_on_every_page(world: World) -> None:
    shy = Identity("visitor", "v-many")
    wrote_to = fans_of(world, shy, 70)
    for i in range(70):  # 70 strangers wrote to it, newer than all of its own conversations
        stranger = Identity("user", f"cold-{i}")
        world.members.join(shy, f"c-cold-{i}", stranger, last_time=5000 + i, writers={stranger.key})
        world.router.register(f"cold-conn-{i}", stranger, "http://e")
    world.connect(shy, "shy-1")
    world.advance(0)
    assert all(world.told(conn, shy) == [True] for conn in wrote_to)
    assert not any(world.told(f"cold-conn-{i}", shy) for i in range(70))
