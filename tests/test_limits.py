"""Abuse limits (issue 11, finding 7): minting per source IP; sends, connections and presence
pulls per identity. Each refuses past its threshold with `rate_limited` and a retry hint,
changes nothing when it refuses, touches no other client, and lets go when its window ends
(the limits' clock is injected: no waiting)."""
from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import boto3
import httpx
import pytest
from botocore.exceptions import ClientError
from cfnlint.decode import decode
from chalice import Chalice

import app as webim
from chalicelib.logic.messaging import direct_conversation_id
from chalicelib.principal import Identity
from chalicelib.settings import Settings
from chalicelib.storage.messages import Message, MessagesTable, SeqConflict
from chalicelib.storage.rate_limits import LimitExceeded, Window
from chalicelib.wiring import Services, install_services
from devstack.connections import ConnectionRegistry
from devstack.embedded_aws import TEMPLATE
from devstack.events import WebSocketPeer, ws_connect_event
from devstack.invoker import LambdaInvoker
from devstack.server import build_asgi
from tests.conftest import free_port
from tests.harness import serve_in_thread
from tests.messaging_fixtures import CallLog, Harness, LoggedSender, counted_session

ALICE, BOB = Identity("user", "alice"), Identity("user", "bob")
CONV = direct_conversation_id(ALICE, BOB)
WINDOW = 60


class Clock:
    """The limits' clock: at the start of a window (plus half a second), moved by hand."""

    def __init__(self) -> None:
        self.now = int(time.time()) // WINDOW * WINDOW + 0.5

    def __call__(self) -> float:
        return self.now


@dataclass
class Stack:
    harness: Harness
    clock: Clock
    env: dict[str, str]
    invoker: LambdaInvoker

    @property
    def services(self) -> Services:
        return self.harness.services

    def rest(self, method: str, path: str, token: str | None = None, body: Any = None,
             ip: str = "10.0.0.1") -> tuple[int, dict[str, str], dict[str, Any]]:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        raw = json.dumps(body).encode() if body is not None else b""
        answer = self.invoker.rest(method, path, {**headers, "content-type": "application/json"}, raw, source_ip=ip)
        return answer.status, {k.lower(): v for k, v in answer.headers.items()}, json.loads(answer.body)

    def ws_connect(self, connection_id: str, token: str) -> int:
        peer = WebSocketPeer(connection_id, "127.0.0.1:8000", "local", "10.0.0.1", query={"token": [token]})
        return self.invoker.websocket("$connect", ws_connect_event(peer))

    def token(self, name: str) -> str:
        return self.services.authenticator.dev_login(name).token


def build(provisioned: dict[str, str], **limits: str) -> Iterator[Stack]:
    env = {**provisioned, "WEBIM_DEV_LOGIN": "1", "HANDSHAKE_GRACE_SECONDS": "0", **limits}
    clock, log = Clock(), CallLog()
    sender = LoggedSender(log)
    services = Services.from_env(env, session=counted_session(log), sender=sender, limits_clock=clock)
    install_services(services)
    yield Stack(Harness(services, sender, log), clock, env, LambdaInvoker(webim.app))
    install_services(None)


def assert_rate_limited(status: int, headers: dict[str, str], body: dict[str, Any], retry_after: int) -> None:
    assert status == 429
    assert body["error"]["code"] == "rate_limited" and body["error"]["retry_after"] == retry_after
    assert headers["retry-after"] == str(retry_after)


# -- minting visitors, per source IP -----------------------------------------------------------
@pytest.fixture
def mint_stack(provisioned: dict[str, str]) -> Iterator[Stack]:
    yield from build(provisioned, VISITOR_MINT_LIMIT="3", VISITOR_MINT_WINDOW_SECONDS=str(WINDOW))


def test_minting_visitors_is_limited_per_source_ip(mint_stack: Stack) -> None:
    for _ in range(3):
        assert mint_stack.rest("POST", "/identity/visitor")[0] == 201
    assert_rate_limited(*mint_stack.rest("POST", "/identity/visitor"), retry_after=WINDOW)
    assert mint_stack.rest("POST", "/identity/visitor", ip="10.0.0.2")[0] == 201  # another client
    assert mint_stack.rest("POST", "/identity/visitor", ip="2001:db8::1")[0] == 201
    mint_stack.clock.now += 30
    assert_rate_limited(*mint_stack.rest("POST", "/identity/visitor"), retry_after=WINDOW - 30)
    mint_stack.clock.now += 30  # the next window
    assert mint_stack.rest("POST", "/identity/visitor")[0] == 201


# -- sends, per identity ---------------------------------------------------------------------------
@pytest.fixture
def send_stack(provisioned: dict[str, str]) -> Iterator[Stack]:
    for stack in build(provisioned, SEND_LIMIT="3", SEND_WINDOW_SECONDS=str(WINDOW)):
        stack.harness.connect("a1", ALICE)
        stack.harness.connect("b1", BOB)
        yield stack


def send(h: Harness, connection: str, client_id: str, to: Identity = BOB) -> None:
    h.frame(connection, action="send", id=client_id, text=f"text of {client_id}", to=to.to_json())


def stored_texts(env: dict[str, str]) -> list[str]:
    table = boto3.resource("dynamodb").Table(env["MESSAGES_TABLE"])
    items = table.query(KeyConditionExpression="pk = :c", ExpressionAttributeValues={":c": CONV})["Items"]
    return [str(i["text"]) for i in items if int(i["sk"]) > 0]


def test_sends_past_the_limit_are_refused_with_a_retry_hint_and_store_nothing(send_stack: Stack) -> None:
    h = send_stack.harness
    for client_id in ("m1", "m2", "m3"):
        send(h, "a1", client_id)
    send(h, "a1", "m4")
    assert h.frames_to("a1", "error") == [{"type": "error", "code": "rate_limited", "ref": "m4",
                                           "message": "too many messages; retry later", "retry_after": WINDOW}]
    assert [f["seq"] for f in h.frames_to("a1", "sent")] == [1, 2, 3]
    assert stored_texts(send_stack.env) == ["text of m1", "text of m2", "text of m3"]
    assert [f["seq"] for f in h.frames_to("b1", "message")] == [1, 2, 3]  # nothing pushed either
    # the connection stays usable; a retry of a stored message counts like a send (a replay is
    # never cheaper, protocol.md §9a): refused while the window is full, stores nothing again
    h.frame("a1", action="ping", id="p")
    assert h.frames_to("a1", "pong")
    send(h, "a1", "m3")
    assert h.frames_to("a1", "error")[-1]["code"] == "rate_limited"
    assert [f["seq"] for f in h.frames_to("a1", "sent")] == [1, 2, 3]
    # another identity is not limited by alice's sends
    send(h, "b1", "r1", to=ALICE)
    assert h.frames_to("b1", "sent")[-1]["seq"] == 4
    # the next window: alice sends again, the log gap-free
    send_stack.clock.now += WINDOW
    send(h, "a1", "m3")  # the retry, answered with the original now
    assert h.frames_to("a1", "sent")[-1]["seq"] == 3
    send(h, "a1", "m4")
    assert h.frames_to("a1", "sent")[-1]["seq"] == 5
    assert len(stored_texts(send_stack.env)) == 5


def test_a_send_that_lost_a_seq_race_counts_once(send_stack: Stack) -> None:
    """A cancelled transaction (seq conflict) counts nothing: the retry is the one that counts."""
    h = send_stack.harness
    other = Services.from_env(send_stack.env, sender=h.sender, limits_clock=send_stack.clock)  # 2nd container
    other.sessions.open("a2", ALICE, "http://recorded")
    send(h, "a1", "m1")  # seq 1 through the first container
    other.sessions.receive("a2", json.dumps({"action": "send", "id": "m2", "text": "x", "to": BOB.to_json()}))
    # the second container guessed seq 1, lost, and stored seq 2 on its retry
    assert [f["seq"] for f in h.frames_to("a2", "sent")] == [2]
    send(h, "a1", "m3")  # the third send of the window is still allowed (limit 3)
    assert [f["seq"] for f in h.frames_to("a1", "sent")] == [1, 3]
    send(h, "a1", "m4")
    assert h.frames_to("a1", "error")[0]["code"] == "rate_limited"


def test_a_send_over_long_poll_is_limited_the_same(send_stack: Stack) -> None:
    status, _, opened = send_stack.rest("POST", "/lp/open", send_stack.token("alice"), {})
    assert status == 201
    answers = []
    for client_id in ("l1", "l2", "l3", "l4"):
        frame = {"action": "send", "id": client_id, "text": "hi", "to": BOB.to_json()}
        answers += send_stack.rest("POST", f"/lp/send?connection_id={opened['connection_id']}",
                                   send_stack.token("alice"), frame)[2]["frames"]
    assert [a["type"] for a in answers] == ["sent", "sent", "sent", "error"]
    assert answers[-1]["code"] == "rate_limited" and answers[-1]["retry_after"] == WINDOW


# -- connections, per identity ----------------------------------------------------------------------
@pytest.fixture
def connection_stack(provisioned: dict[str, str]) -> Iterator[Stack]:
    yield from build(provisioned, MAX_CONNECTIONS_PER_IDENTITY="2")


def test_connections_past_the_limit_are_refused_and_leave_nothing(connection_stack: Stack,
                                                                 provisioned: dict[str, str]) -> None:
    s = connection_stack
    alice = s.token("alice")
    assert s.ws_connect("c1", alice) == 200
    status, _, opened = s.rest("POST", "/lp/open", alice, {})
    assert status == 201
    # a third: refused on both transports, with nothing registered
    assert s.ws_connect("c3", alice) == 429
    assert s.services.router.lookup("c3") is None
    status, headers, body = s.rest("POST", "/lp/open", alice, {})
    # retry when the earliest connection stops counting unless renewed (here: the long poll's)
    earliest = min(c.live_until for c in s.services.router.connections_of(ALICE))
    assert_rate_limited(status, headers, body, retry_after=math.ceil(earliest - s.clock.now))
    assert len(s.services.router.connections_of(ALICE)) == 2
    # the open ones stay usable; another identity is not affected
    s.harness.frame("c1", action="ping", id="p")
    assert s.harness.frames_to("c1", "pong")
    assert s.ws_connect("b1", s.token("bob")) == 200
    # a closed connection frees its place
    s.services.sessions.close("c1")
    assert s.ws_connect("c4", alice) == 200
    assert s.ws_connect("c5", alice) == 429
    # a long-poll connection that stopped polling stops counting after its window
    long_poll = s.services.router.lookup(opened["connection_id"])
    assert long_poll is not None
    s.clock.now = long_poll.live_until + 1
    assert s.ws_connect("c6", alice) == 200


# -- presence pulls, per identity ---------------------------------------------------------------------
@pytest.fixture
def presence_stack(provisioned: dict[str, str]) -> Iterator[Stack]:
    yield from build(provisioned, PRESENCE_PULL_LIMIT="2", PRESENCE_PULL_WINDOW_SECONDS=str(WINDOW))


def test_presence_pulls_are_limited_per_identity(presence_stack: Stack) -> None:
    s = presence_stack
    alice, bob = s.token("alice"), s.token("bob")
    asked = {"identities": [{"kind": "user", "id": "seller"}]}
    for _ in range(2):
        assert s.rest("POST", "/presence", alice, asked)[0] == 200
    assert_rate_limited(*s.rest("POST", "/presence", alice, asked), retry_after=WINDOW)
    assert_rate_limited(*s.rest("POST", "/presence", alice, asked, ip="10.0.0.9"), retry_after=WINDOW)  # per identity
    assert s.rest("POST", "/presence", bob, asked)[0] == 200
    s.clock.now += WINDOW
    assert s.rest("POST", "/presence", alice, asked)[0] == 200


# -- settings and keys -------------------------------------------------------------------------------
def test_limits_have_defaults_and_are_read_from_the_environment(provisioned: dict[str, str]) -> None:
    defaults = Settings.from_env(provisioned)
    assert (defaults.visitor_mint_limit, defaults.send_limit, defaults.presence_pull_limit,
            defaults.max_connections_per_identity) == (60, 120, 30, 20)
    tuned = Settings.from_env({**provisioned, "SEND_LIMIT": "0", "SEND_WINDOW_SECONDS": "5",
                               "MAX_CONNECTIONS_PER_IDENTITY": "3"})
    assert (tuned.send_limit, tuned.send_window_seconds, tuned.max_connections_per_identity) == (0, 5, 3)
    assert Settings.from_env({**provisioned, "SEND_LIMIT": ""}).send_limit == 120  # empty: the default


def test_a_limit_of_zero_is_off(provisioned: dict[str, str]) -> None:
    for stack in build(provisioned, SEND_LIMIT="0", VISITOR_MINT_LIMIT="0"):
        assert stack.services.limits.send_window(ALICE) is None
        assert all(stack.rest("POST", "/identity/visitor")[0] == 201 for _ in range(5))


def test_counter_keys_cannot_collide_across_scopes_or_subjects() -> None:
    keys = {Window(scope, subject, 0, 60, 1).key()["pk"]
            for scope in ("mint", "send", "presence") for subject in ("::1", "user:a", "user:a:b", "1.2.3.4")}
    assert len(keys) == 12 and all(k.startswith("R#") for k in keys)


# -- where the source IP comes from on the local stack --------------------------------------------
address_app = Chalice(app_name="addresses")


@address_app.route("/whoami", methods=["GET"])
def whoami() -> dict[str, Any]:
    request = address_app.current_request
    assert request is not None
    return {"source_ip": request.context["identity"]["sourceIp"]}


def test_the_local_stack_reports_the_callers_address_as_source_ip() -> None:
    """chalice's LocalGateway says 127.0.0.1 for everyone; API Gateway gives the peer's address."""
    port = free_port()
    executor = ThreadPoolExecutor(max_workers=2)
    asgi = build_asgi(LambdaInvoker(address_app), ConnectionRegistry(), executor, frontend=None)
    with serve_in_thread(asgi, port), httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2")) as client:
        assert client.get(f"http://127.0.0.1:{port}/api/whoami").json() == {"source_ip": "127.0.0.2"}
    executor.shutdown(wait=True)


# -- the AWS options: a WAF rate rule, off by default -----------------------------------------------
def test_the_waf_rate_rule_is_an_option_that_is_off_by_default(provisioned: dict[str, str]) -> None:
    template, errors = decode(str(TEMPLATE))
    assert template is not None and not errors
    assert template["Parameters"]["WafRateLimit"]["Default"] == 0
    acl, association = template["Resources"]["ApiWebAcl"], template["Resources"]["ApiWebAclAssociation"]
    assert (acl["Condition"], association["Condition"]) == ("CreateWaf", "AssociateWaf")
    rule, = acl["Properties"]["Rules"]
    assert rule["Statement"]["RateBasedStatement"]["AggregateKeyType"] == "IP"
    response = rule["Action"]["Block"]["CustomResponse"]
    assert response["ResponseCode"] == 429 and response["ResponseHeaders"][0]["Name"] == "Retry-After"
    body = acl["Properties"]["CustomResponseBodies"]["rate_limited"]["Content"]["Fn::Sub"]
    assert json.loads(body.replace("${WafWindowSeconds}", "300"))["error"] == {
        "code": "rate_limited", "message": "too many requests from this address; retry later", "retry_after": 300}
    # the local stack (default parameters) creates none
    assert boto3.client("wafv2").list_web_acls(Scope="REGIONAL")["WebACLs"] == []


# -- the send counter inside the transaction ---------------------------------------------------------
class ConflictingTable:
    """A messages table whose transaction is cancelled once, as DynamoDB cancels one that met
    another in-flight transaction on the same item (here: the sender's counter)."""

    name = "messages"

    def __init__(self, code: str) -> None:
        self.meta = self
        self.client = self
        self.code = code

    def transact_write_items(self, TransactItems: list[dict[str, Any]]) -> None:  # noqa: N803 (boto3's name)
        reasons = [{"Code": "None"} for _ in TransactItems[:-1]] + [{"Code": self.code}]
        raise ClientError({"Error": {"Code": "TransactionCanceledException", "Message": "cancelled"},
                           "CancellationReasons": reasons}, "TransactWriteItems")


@pytest.mark.parametrize(("code", "raised"),
                         [("TransactionConflict", SeqConflict), ("ConditionalCheckFailed", LimitExceeded)])
def test_a_send_whose_counter_conflicted_is_tried_again_and_a_full_one_is_refused(code: str, raised: type) -> None:
    table = MessagesTable(ConflictingTable(code), "members")
    message = Message(CONV, 5, ALICE, "hi", 1_000, "c1")
    window = Window("send", ALICE.key, 0, 60, 3)
    with pytest.raises(raised) as caught:
        table.append(message, [BOB], expected_last=4, counter=window)
    if raised is SeqConflict:
        assert caught.value.actual == 4  # the same seq again: nothing was written
