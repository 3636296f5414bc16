"""Bad input never becomes a 500 or `internal_error`, and a stored message is never answered
as failed: lone surrogates, deep nesting, oversized frames, chalice's own error answers,
binary frames, and failures after (and around) the store."""
from __future__ import annotations

import asyncio
import importlib.util
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from chalice.app import Chalice
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from chalicelib.logic.messaging import direct_conversation_id
from chalicelib.principal import Identity
from chalicelib.wiring import Services, install_services
from devstack.invoker import LambdaInvoker, RestResponse, gateway_response
from devstack.server import load_app
from tests import recording_app
from tests.conftest import ROOT
from tests.messaging_fixtures import CallLog, Harness, LoggedSender, counted_session

ALICE = Identity("user", "alice")
BOB = Identity("user", "bob")
CONV = direct_conversation_id(ALICE, BOB)
LONE = "\ud800"  # json.dumps writes it as the escape "\\ud800", as the fuzzer sent it


class Faults:
    """botocore hooks that fail chosen calls: before the call (nothing happened) or after it
    (it happened, but the caller sees an error: an ambiguous timeout)."""

    def __init__(self) -> None:
        self.before: set[str] = set()
        self.after: set[str] = set()
        self.jobs: list[dict[str, Any]] = []  # the SQS jobs sent

    def before_call(self, event_name: str, **_: Any) -> None:
        if event_name.split(".", 1)[1] in self.before:
            raise RuntimeError(f"injected failure before {event_name}")

    def record_job(self, params: dict[str, Any], **_: Any) -> None:
        self.jobs.append(json.loads(params["MessageBody"]))

    def after_call(self, event_name: str, **_: Any) -> None:
        if event_name.split(".", 1)[1] in self.after:
            raise RuntimeError(f"injected failure after {event_name}")


def build(env: dict[str, str], faults: Faults) -> Harness:
    log = CallLog()
    sender = LoggedSender(log)
    session = counted_session(log)
    session.events.register("before-call.*.*", faults.before_call)
    session.events.register("after-call.*.*", faults.after_call)
    session.events.register("provide-client-params.sqs.SendMessage", faults.record_job)
    services = Services.from_env({**env, "HANDSHAKE_GRACE_SECONDS": "0"}, session=session, sender=sender)
    return Harness(services, sender, log)


@pytest.fixture
def faults() -> Faults:
    return Faults()


@pytest.fixture
def harness(provisioned: dict[str, str], faults: Faults) -> Harness:
    h = build(provisioned, faults)
    h.connect("a1", ALICE)
    h.connect("b1", BOB)
    return h


def stored(env: dict[str, str], conversation_id: str = CONV) -> list[dict[str, Any]]:
    table = boto3.resource("dynamodb").Table(env["MESSAGES_TABLE"])
    items = table.query(KeyConditionExpression="pk = :c", ExpressionAttributeValues={":c": conversation_id})["Items"]
    return [i for i in items if int(i["sk"]) > 0]


def raw(h: Harness, connection: str, text: str) -> dict[str, Any]:
    """Send one frame's text; return the one answer it got."""
    before = len(h.frames_to(connection))
    h.services.sessions.receive(connection, text)
    answers = [f for f in h.frames_to(connection)[before:] if f.get("type") not in ("message", "delivered")]
    assert len(answers) == 1, answers
    return answers[0]


# -- lone surrogates ---------------------------------------------------------------------------

SURROGATE_FRAMES = [
    {"action": "send", "id": "s1", "text": "hi " + LONE, "to": BOB.to_json()},
    {"action": "send", "id": "s2", "text": LONE, "to": BOB.to_json()},
    {"action": "send", "id": "s3", "text": "hi", "to": {"kind": "user", "id": "b" + LONE}},
    {"action": "send", "id": "s4", "text": "hi", "conversation_id": CONV + LONE},
    {"action": "send", "id": "s5", "text": "hi", "to": BOB.to_json(), "extra": ["x", {"deep": LONE}]},
    {"action": "send", "id": "s6", "text": "hi", "to": BOB.to_json(), LONE: 1},
    {"action": "ack", "id": "s7", "conversation_id": LONE, "seq": 1},
    {"action": "read", "id": "s8", "conversation_id": CONV, "seq": 1, "note": "\udc00x"},
    {"action": "sync", "id": "s9", "since": {CONV + LONE: 0}},
    {"action": "history", "id": "s10", "conversation_id": "c" + LONE},
    {"action": "ping", "id": "s11", "pad": LONE},
]


@pytest.mark.parametrize("frame", SURROGATE_FRAMES, ids=[f["id"] for f in SURROGATE_FRAMES])
def test_a_lone_surrogate_in_any_field_is_invalid_field_and_nothing_is_stored(
        harness: Harness, provisioned: dict[str, str], frame: dict[str, Any]) -> None:
    answer = raw(harness, "a1", json.dumps(frame))
    assert answer["type"] == "error" and answer["code"] == "invalid_field", answer
    assert answer["ref"] == frame["id"]
    assert stored(provisioned) == []
    assert harness.frames_to("b1", "message") == []
    assert raw(harness, "a1", '{"action":"ping","id":"p"}')["type"] == "pong"  # still usable


def test_a_lone_surrogate_in_the_id_is_invalid_field_without_ref(harness: Harness) -> None:
    answer = raw(harness, "a1", json.dumps({"action": "send", "id": "m" + LONE, "text": "hi", "to": BOB.to_json()}))
    assert answer["code"] == "invalid_field" and "ref" not in answer


def test_a_valid_surrogate_pair_is_an_ordinary_character(harness: Harness, provisioned: dict[str, str]) -> None:
    answer = raw(harness, "a1", json.dumps({"action": "send", "id": "e1", "text": "😀", "to": BOB.to_json()}))
    assert answer["type"] == "sent"
    assert [m["text"] for m in stored(provisioned)] == ["😀"]


# -- size and nesting --------------------------------------------------------------------------


def test_frame_too_large_carries_the_frames_id(harness: Harness, provisioned: dict[str, str]) -> None:
    frame = {"action": "send", "id": "big-1", "text": "x" * 40_000, "to": BOB.to_json()}
    assert raw(harness, "a1", json.dumps(frame)) == {
        "type": "error", "code": "frame_too_large", "message": "a frame is at most 32768 bytes", "ref": "big-1"}
    frame["id"] = 12  # not a valid id: no ref
    assert "ref" not in raw(harness, "a1", json.dumps(frame))
    assert "ref" not in raw(harness, "a1", "{" + "x" * 40_000)  # not JSON: no ref
    assert stored(provisioned) == []


def test_deep_nesting_in_a_frame_is_malformed_json(harness: Harness) -> None:
    for text in ('{"action":"ping","id":"n1","x":' + "[" * 10_000 + "]" * 10_000 + "}", "[" * 30_000):
        answer = raw(harness, "a1", text)
        assert answer["code"] == "malformed_json", answer
    assert raw(harness, "a1", '{"action":"ping"}')["type"] == "pong"


# -- send: the outcome the sender is told ------------------------------------------------------


def test_a_failing_push_after_the_store_still_answers_sent(harness: Harness, provisioned: dict[str, str],
                                                           faults: Faults, monkeypatch: pytest.MonkeyPatch) -> None:
    original = harness.sender.send

    def failing(endpoint: str, connection_id: str, data: bytes) -> None:
        if connection_id == "b1":
            raise RuntimeError("injected: the callback API is throttling")
        original(endpoint, connection_id, data)

    monkeypatch.setattr(harness.sender, "send", failing)
    answer = raw(harness, "a1", json.dumps({"action": "send", "id": "m1", "text": "hi", "to": BOB.to_json()}))
    assert answer["type"] == "sent" and answer["seq"] == 1
    assert len(stored(provisioned)) == 1
    # the ack check that will retransmit it was scheduled all the same
    assert [(j["kind"], j["seq"]) for j in faults.jobs if j["kind"] == "ack_check"] == [("ack_check", 1)]


def test_a_failing_ack_check_enqueue_after_the_store_answers_internal_error_and_the_retry_queues_it(
        harness: Harness, provisioned: dict[str, str], faults: Faults) -> None:
    """Stored and pushed, but nothing would retransmit it (protocol.md §9a): "outcome unknown",
    and the retry gets the original `sent` and queues the check, storing nothing more."""
    frame = json.dumps({"action": "send", "id": "m1", "text": "hi", "to": BOB.to_json()})
    faults.before.add("sqs.SendMessage")
    answer = raw(harness, "a1", frame)
    assert (answer["type"], answer["code"], answer["ref"]) == ("error", "internal_error", "m1")
    assert len(stored(provisioned)) == 1
    assert [m["seq"] for m in harness.frames_to("b1", "message")] == [1]
    faults.before.clear()
    faults.jobs.clear()  # recorded before the call that failed: it never reached the queue
    assert raw(harness, "a1", frame)["seq"] == 1
    assert len(stored(provisioned)) == 1
    assert [(j["kind"], j["seq"]) for j in faults.jobs if j["kind"] == "ack_check"] == [("ack_check", 1)]


def test_a_failing_store_answers_internal_error_and_the_retry_gives_sent(
        harness: Harness, provisioned: dict[str, str], faults: Faults) -> None:
    frame = json.dumps({"action": "send", "id": "m1", "text": "hi", "to": BOB.to_json()})
    faults.before.add("dynamodb.TransactWriteItems")
    assert raw(harness, "a1", frame) == {"type": "error", "code": "internal_error",
                                         "message": "an internal error occurred", "ref": "m1"}
    assert stored(provisioned) == []
    faults.before.clear()
    assert raw(harness, "a1", frame)["type"] == "sent"
    assert len(stored(provisioned)) == 1


def test_a_store_that_succeeded_but_reported_failure_is_recovered_by_the_retry(
        harness: Harness, provisioned: dict[str, str], faults: Faults) -> None:
    """An ambiguous store (a timeout after DynamoDB committed): `internal_error` means
    "outcome unknown"; the same frame again gets the original `sent`, never a second copy."""
    frame = json.dumps({"action": "send", "id": "m1", "text": "hi", "to": BOB.to_json()})
    faults.after.add("dynamodb.TransactWriteItems")
    assert raw(harness, "a1", frame)["code"] == "internal_error"
    assert len(stored(provisioned)) == 1  # it was stored all the same
    faults.after.clear()
    sent = raw(harness, "a1", frame)
    assert sent["type"] == "sent" and sent["seq"] == 1
    assert len(stored(provisioned)) == 1
    assert [m["seq"] for m in harness.frames_to("b1", "message")] == [1]


# -- §6.2 --------------------------------------------------------------------------------------


def test_null_optional_fields_are_the_same_as_absent(harness: Harness) -> None:
    first = raw(harness, "a1", json.dumps({"action": "send", "id": "m1", "text": "hi", "to": BOB.to_json(),
                                           "conversation_id": None, "last_seq": None}))
    assert first["type"] == "sent"
    reply = raw(harness, "b1", json.dumps({"action": "send", "id": "r1", "text": "hi", "to": None,
                                           "conversation_id": CONV, "last_seq": None}))
    assert reply["type"] == "sent" and reply["seq"] == 2
    assert raw(harness, "b1", json.dumps({"action": "sync", "id": "y", "since": None, "limit": None}))["type"] == "sync"


@pytest.mark.parametrize("fields", [{}, {"to": None, "conversation_id": None},
                                    {"to": BOB.to_json(), "conversation_id": CONV}])
def test_send_needs_exactly_one_of_to_and_conversation_id(harness: Harness, fields: dict[str, Any]) -> None:
    answer = raw(harness, "a1", json.dumps({"action": "send", "id": "m1", "text": "hi", **fields}))
    assert answer["code"] == "invalid_field"


def test_the_text_limit_is_4000_code_points_whatever_their_bytes(harness: Harness) -> None:
    widest = "😀" * 4000  # 16,000 UTF-8 bytes: the most a text can be
    assert raw(harness, "a1", json.dumps({"action": "send", "id": "w1", "text": widest, "to": BOB.to_json()},
                                         ensure_ascii=False))["type"] == "sent"
    too_long = raw(harness, "a1", json.dumps({"action": "send", "id": "w2", "text": "a" * 4001, "to": BOB.to_json()}))
    assert too_long["code"] == "text_too_long"


# -- REST --------------------------------------------------------------------------------------


class Rest:
    def __init__(self, app: Chalice) -> None:
        self.invoker = LambdaInvoker(app, stage="test")

    def call(self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None,
             token: str | None = None) -> RestResponse:
        headers = dict(headers or {})
        if token:
            headers["authorization"] = f"Bearer {token}"
        return self.invoker.rest(method, path, headers, body)

    def token(self, name: str) -> str:
        answer = self.call("POST", "/identity/dev-login", json.dumps({"name": name}).encode())
        assert answer.status == 200, answer
        return str(json.loads(answer.body)["token"])


@pytest.fixture
def rest(provisioned: dict[str, str]) -> Iterator[Rest]:
    os.environ.update(provisioned)
    os.environ.update({"WEBIM_LOCAL": "1", "WEBIM_DEV_LOGIN": "1"})
    install_services(Services.from_env(os.environ))
    yield Rest(load_app())
    install_services(None)


def error_of(answer: RestResponse) -> dict[str, Any]:
    assert answer.headers.get("Content-Type") == "application/json", answer.headers
    parsed = json.loads(answer.body)
    assert set(parsed) == {"error"} and set(parsed["error"]) == {"code", "message"}, parsed
    return dict(parsed["error"])


NESTED = b'{"x":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
BODY_ROUTES = ["/identity/dev-login", "/identity/link", "/presence", "/lp/poll", "/lp/close"]


@pytest.mark.parametrize("path", BODY_ROUTES)
def test_a_deeply_nested_body_is_malformed_json_on_every_route(rest: Rest, path: str) -> None:
    answer = rest.call("POST", path, NESTED, {"content-type": "application/json"}, token=rest.token("nest"))
    assert answer.status == 400 and error_of(answer)["code"] == "malformed_json"


@pytest.mark.parametrize(("path", "body"), [
    ("/identity/dev-login", {"name": "a" + LONE}),
    ("/identity/link", {"visitor_token": "ey" + LONE}),
    ("/presence", {"identities": [{"kind": "user", "id": LONE}]}),
    ("/lp/poll", {"connection_id": "lp-" + LONE}),
    ("/lp/close", {"connection_id": "lp-x", "other": {"deep": [LONE]}}),
])
def test_a_lone_surrogate_in_a_rest_body_is_invalid_field(rest: Rest, path: str, body: dict[str, Any]) -> None:
    answer = rest.call("POST", path, json.dumps(body).encode(), token=rest.token("sur"))
    assert answer.status == 400 and error_of(answer)["code"] == "invalid_field"


def test_long_poll_send_refuses_a_lone_surrogate_and_bytes_that_are_not_utf8(
        rest: Rest, provisioned: dict[str, str]) -> None:
    token = rest.token("alice")
    opened = json.loads(rest.call("POST", "/lp/open", token=token).body)
    path = f"/lp/send?connection_id={opened['connection_id']}"
    for body in (json.dumps({"action": "send", "id": "l1", "text": LONE, "to": BOB.to_json()}).encode(),
                 b'{"action":"send","id":"l2","text":"a\xff\xfe","to":{"kind":"user","id":"bob"}}'):
        answer = rest.call("POST", path, body, token=token)
        assert answer.status == 200, answer
        (frame,) = json.loads(answer.body)["frames"]
        assert frame["type"] == "error" and frame["code"] == "invalid_field" and frame["ref"] in ("l1", "l2")
    assert stored(provisioned) == []


@pytest.mark.parametrize("content_type", [None, "text/plain;charset=UTF-8", "application/octet-stream",
                                          "application/x-www-form-urlencoded", "application/json"])
def test_every_route_takes_any_content_type_or_none(rest: Rest, content_type: str | None) -> None:
    headers = {"content-type": content_type} if content_type else {}
    visitor = rest.call("POST", "/identity/visitor", b"", headers)
    assert visitor.status == 201, visitor
    assert visitor.headers.get("Content-Type") == "application/json"
    login = rest.call("POST", "/identity/dev-login", b'{"name":"ct"}', headers)
    assert login.status == 200, login
    token = json.loads(login.body)["token"]
    opened = rest.call("POST", "/lp/open", b"", headers, token=token)
    assert opened.status == 201, opened
    connection = json.loads(opened.body)["connection_id"]
    sent = rest.call("POST", f"/lp/send?connection_id={connection}", b'{"action":"ping","id":"p"}', headers,
                     token=token)
    assert json.loads(sent.body)["frames"][0]["type"] == "pong"


def test_every_route_is_declared_to_take_any_content_type() -> None:
    """Routes added later too (app.py sets this after its last route)."""
    app = load_app()
    for methods in app.routes.values():
        for entry in methods.values():
            assert entry.content_types == ["*/*"], entry.view_name


def test_chalice_and_gateway_answers_use_the_documented_error_shape(rest: Rest) -> None:
    unknown = rest.call("GET", "/no/such/route")
    assert unknown.status == 404 and error_of(unknown)["code"] == "unknown_route"
    unknown_with_token = rest.call("GET", "/no/such/route", token="x")
    assert unknown_with_token.status == 404 and error_of(unknown_with_token)["code"] == "unknown_route"
    method = rest.call("DELETE", "/health")
    assert method.status == 405 and error_of(method)["code"] == "method_not_allowed"
    assert method.headers.get("Allow") == "GET"
    refused = rest.call("GET", "/identity/me")
    assert refused.status == 401 and error_of(refused)["code"] == "missing_credential"


# -- binary WebSocket frames -------------------------------------------------------------------


def test_a_binary_frame_closes_the_connection_with_1003_as_api_gateway_does(gateway: str) -> None:
    async def scenario() -> int | None:
        async with connect(f"ws://{gateway}/ws?token=abc") as ws:
            await ws.send(b'{"action":"ping","id":"p"}')
            try:
                await asyncio.wait_for(ws.recv(), timeout=30)
            except ConnectionClosed as closed:
                return closed.rcvd.code if closed.rcvd else None
        return None

    assert asyncio.run(scenario()) == 1003
    assert [name for name, _ in recording_app.events if name == "message"] == []  # never invoked


# -- API Gateway's own answers on AWS ----------------------------------------------------------


def _gateway_responses_script() -> Any:
    spec = importlib.util.spec_from_file_location("gateway_responses", ROOT / "infra" / "gateway_responses.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_deployed_rest_api_gets_the_same_gateway_responses_as_the_local_stack(
        aws: None, tmp_path: Path) -> None:
    script = _gateway_responses_script()
    client = boto3.client("apigateway")
    api_id = client.create_rest_api(name="webim")["id"]
    root = client.get_resources(restApiId=api_id)["items"][0]["id"]  # one method, as a deployment needs
    client.put_method(restApiId=api_id, resourceId=root, httpMethod="GET", authorizationType="NONE")
    client.put_integration(restApiId=api_id, resourceId=root, httpMethod="GET", type="MOCK")
    (tmp_path / "deployed").mkdir()
    (tmp_path / "deployed" / "dev.json").write_text(json.dumps({"resources": [
        {"name": "api_handler", "resource_type": "lambda_function"},
        {"name": "rest_api", "resource_type": "rest_api", "rest_api_id": api_id}]}))
    (tmp_path / "config.json").write_text(json.dumps({"stages": {"dev": {"api_gateway_stage": "api"}}}))

    assert script.main(["--stage", "dev", "--region", "us-east-1", "--chalice-dir", str(tmp_path)]) == 0

    installed = {r["responseType"]: r for r in client.get_gateway_responses(restApiId=api_id)["items"]}
    unknown = installed["MISSING_AUTHENTICATION_TOKEN"]
    assert unknown["statusCode"] == "404"
    status, local_body = gateway_response("MISSING_AUTHENTICATION_TOKEN", 403)
    assert status == 404
    assert json.loads(unknown["responseTemplates"]["application/json"]) == json.loads(local_body)
    for response_type in ("DEFAULT_4XX", "DEFAULT_5XX", "THROTTLED"):
        body = json.loads(installed[response_type]["responseTemplates"]["application/json"])
        assert set(body["error"]) == {"code", "message"}
    assert client.get_deployments(restApiId=api_id)["items"]  # the stage serves them


def test_the_gateway_responses_script_needs_a_deployed_api(tmp_path: Path) -> None:
    assert _gateway_responses_script().main(["--stage", "dev", "--chalice-dir", str(tmp_path)]) == 1
