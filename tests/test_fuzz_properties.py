"""The outside fuzz run's shapes as properties: lone surrogates, deep nesting, huge numbers and
cursors, oversize frames, ids with `#`, `:` and `/`, and random JSON in every field of every
action. Through the real ProtocolCore on moto (WebSocket sessions) and through REST (the local
stack's invoker in-process): never an internal error, every answer a success or an error with
a documented code, and the connection (or the API) still usable after each."""
from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from chalicelib import errors
from chalicelib.logic.messaging import direct_conversation_id
from chalicelib.principal import Identity
from chalicelib.wiring import Services, install_services
from devstack.invoker import LambdaInvoker
from devstack.server import load_app
from tests.conftest import ROOT
from tests.messaging_fixtures import Harness, build_harness

ALICE = Identity("user", "alice")
BOB = Identity("user", "bob")
CONV = direct_conversation_id(ALICE, BOB)
DOCS = "".join((ROOT / "docs" / name).read_text() for name in ("protocol.md", "identity.md", "presence.md"))


def _documented_codes() -> set[str]:
    """Every error code the server has (chalicelib/errors.py, and API Gateway's own answers:
    infra/gateway_responses.json) that the documents name."""
    codes = {cls.code for cls in vars(errors).values()
             if isinstance(cls, type) and issubclass(cls, errors.WebimError)}
    codes |= {str(answer["code"]) for answer in
              json.loads((ROOT / "infra" / "gateway_responses.json").read_text()).values()}
    return {code for code in codes if f"`{code}`" in DOCS} - {"internal_error"}


DOCUMENTED = _documented_codes()
FRAME_ANSWERS = {"pong", "sent", "acked", "read", "sync", "history", "conversations", "reported"}
UNSOLICITED = {"message", "delivered", "presence", "resync"}
BUSY = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])

# -- strategies --------------------------------------------------------------------------------

TRICKY_STRINGS = [
    "\ud800", "a\udfffb", "\udc00\ud800", "#", "a#b", "alice#x", "user:bob", "user:bob#c", ":", "/", "a/b",
    "C#x", "I#user:alice#m1", "U#user:bob", "", " ", "\t", "x" * 128, "x" * 129, CONV, CONV + "#", "d_",
    "\u0000", "\u200b", "😀", "é" * 200,
]
strings = st.one_of(st.sampled_from(TRICKY_STRINGS), st.text(max_size=12),
                    st.builds(lambda a, b: a + "\ud800" + b, st.text(max_size=4), st.text(max_size=4)))
numbers = st.one_of(st.sampled_from([0, 1, -1, 2**53, 2**53 + 1, 2**63, 10**30, -(2**70)]),
                    st.integers(), st.floats(allow_nan=True, allow_infinity=True), st.booleans())
json_values = st.recursive(
    st.none() | numbers | strings,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(strings, children, max_size=3),
    max_leaves=8,
)
identities = st.one_of(
    st.sampled_from([BOB.to_json(), ALICE.to_json(), {"kind": "visitor", "id": "v-1"}]),
    st.fixed_dictionaries({"kind": st.sampled_from(["user", "visitor", "admin", ""]), "id": strings}),
    json_values,
)
FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "id": st.one_of(strings, json_values),
    "text": st.one_of(st.sampled_from(["hi", " ", "😀" * 4000, "a" * 4001]), strings, json_values),
    "to": identities,
    "conversation_id": st.one_of(st.just(CONV), strings, json_values),
    "last_seq": st.one_of(numbers, json_values),
    "seq": st.one_of(numbers, json_values),
    "limit": st.one_of(numbers, json_values),
    "before": st.one_of(numbers, json_values),
    "cursor": st.one_of(strings, numbers, json_values),
    "since": st.one_of(st.dictionaries(st.one_of(st.just(CONV), strings), numbers, max_size=3), json_values),
    "reason": st.one_of(st.sampled_from(["spam", "abuse", "scam", "other"]), strings, json_values),  # report (§17)
    "note": st.one_of(st.sampled_from(["a\nb", "x" * 1001, "\u0007"]), strings, json_values),
    "extra": json_values,
}
ACTIONS = ["ping", "send", "ack", "read", "sync", "history", "conversations", "report"]
frames = st.builds(
    lambda action, fields: {"action": action, **fields},
    st.one_of(st.sampled_from(ACTIONS), st.sampled_from(["teleport", "", "SEND"]), json_values),
    st.fixed_dictionaries({}, optional=FIELDS),
)


def _nested(depth: int) -> str:
    return '{"action":"ping","id":"n","x":' + "[" * depth + "]" * depth + "}"


raw_texts = st.one_of(
    frames.map(json.dumps),  # escapes lone surrogates as "\ud800", as a fuzzer's JSON does
    st.integers(min_value=1, max_value=40_000).map(_nested),
    st.integers(min_value=1, max_value=40_000).map(lambda n: "[" * n),
    st.builds(lambda pad, ref: json.dumps({"action": "send", "id": ref, "text": "x" * pad, "to": BOB.to_json()}),
              st.integers(min_value=30_000, max_value=140_000), strings),
    st.text(max_size=40),
    st.sampled_from(["", "null", "[]", "{}", "1e999999", '{"action":"ping","id":"\\ud800"}', "\ud800",
                     '{"action": "send", "id": "a#b", "text": "hi", "to": {"kind": "user", "id": "bob:x/y#z"}}']),
)


# -- through the protocol core on moto (WebSocket sessions) -------------------------------------


@pytest.fixture
def harness(provisioned: dict[str, str]) -> Harness:
    h = build_harness(provisioned)
    h.connect("a1", ALICE)
    h.connect("b1", BOB)
    h.frame("a1", action="send", id="seed", text="hello", to=BOB.to_json())  # a conversation to aim at
    return h


def answers(h: Harness, before: int) -> list[dict[str, Any]]:
    return [f for f in h.frames_to("a1")[before:] if f.get("type") not in UNSOLICITED]


@BUSY
@given(text=raw_texts)
@example(text=json.dumps({"action": "send", "id": "s", "text": "\ud800", "to": BOB.to_json()}))
@example(text=json.dumps({"action": "send", "id": "big", "text": "x" * 40_000, "to": BOB.to_json()}))
@example(text=_nested(5_000))
@example(text=json.dumps({"action": "sync", "id": "c", "since": {CONV: 2**60}, "limit": 10**30}))
def test_every_frame_gets_one_documented_answer_and_the_connection_stays_usable(harness: Harness, text: str) -> None:
    before = len(harness.frames_to("a1"))
    harness.services.sessions.receive("a1", text)
    (answer,) = answers(harness, before)
    if answer["type"] == "error":
        assert answer["code"] in DOCUMENTED, answer
        json.dumps(answer, ensure_ascii=False).encode("utf-8")  # the answer itself is valid Unicode
    else:
        assert answer["type"] in FRAME_ANSWERS, answer
    mark = len(harness.frames_to("a1"))
    harness.services.sessions.receive("a1", '{"action":"ping","id":"alive"}')
    assert [f["type"] for f in answers(harness, mark)] == ["pong"]


# -- through REST (the local stack's invoker, in-process) ---------------------------------------


class Api:
    def __init__(self) -> None:
        self.invoker = LambdaInvoker(load_app(), stage="test")
        self.token = self._login("alice")
        opened = self.call("POST", "/lp/open", b"", {})
        self.connection_id = json.loads(opened[2])["connection_id"]

    def _login(self, name: str) -> str:
        result = self.invoker.rest("POST", "/identity/dev-login", {}, json.dumps({"name": name}).encode())
        return str(json.loads(result.body)["token"])

    def call(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        result = self.invoker.rest(method, path, {"authorization": f"Bearer {self.token}", **headers}, body)
        return result.status, result.headers, result.body


@pytest.fixture
def api(provisioned: dict[str, str]) -> Iterator[Api]:
    os.environ.update(provisioned)
    os.environ.update({"WEBIM_LOCAL": "1", "WEBIM_DEV_LOGIN": "1"})
    install_services(Services.from_env(os.environ))
    yield Api()
    install_services(None)


POST_ROUTES = ["/identity/visitor", "/identity/visitor/renew", "/identity/dev-login", "/identity/link",
               "/presence", "/lp/open", "/lp/poll", "/lp/send", "/lp/close", "/nowhere"]
bodies = st.one_of(
    json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({}, optional={"name": strings, "visitor_token": strings, "connection_id": strings,
                                        "cursor": numbers, "base": numbers, "identities": json_values,
                                        "wait": numbers}).map(lambda v: json.dumps(v).encode()),
    raw_texts.map(lambda t: t.encode("utf-8", errors="surrogatepass")),
    st.binary(max_size=40),
    st.integers(min_value=1, max_value=100_000).map(lambda n: b'{"name":' + b"[" * n + b"]" * n + b"}"),
)
content_types = st.sampled_from([None, "application/json", "text/plain;charset=UTF-8", "application/octet-stream",
                                 "multipart/form-data; boundary=x", "*/*", "garbage"])


def _aimed(path: str, body: bytes, api: Api, own: bool) -> tuple[str, bytes]:
    """Sometimes aim at the caller's real long-poll connection (never a held poll: wait 0)."""
    if path == "/lp/send":
        return f"/lp/send?connection_id={api.connection_id if own else quote('lp-#:/x')}", body
    if path == "/lp/poll" and own:
        try:
            parsed = json.loads(body)
        except (ValueError, RecursionError):
            return path, body
        if isinstance(parsed, dict):
            return path, json.dumps({**parsed, "connection_id": api.connection_id, "wait": 0}).encode()
    return path, body


def _check_rest_answer(status: int, headers: dict[str, str], body: bytes) -> None:
    assert status < 500, (status, body[:300])
    assert headers.get("Content-Type") == "application/json", headers
    parsed = json.loads(body)
    if status >= 400:
        assert set(parsed) == {"error"} and parsed["error"]["code"] in DOCUMENTED, parsed
    for frame in parsed.get("frames", []) if isinstance(parsed, dict) else []:
        assert frame.get("code", "") != "internal_error", frame
        if frame["type"] == "error":
            assert frame["code"] in DOCUMENTED, frame


@BUSY
@given(path=st.sampled_from(POST_ROUTES), body=bodies, content_type=content_types, own=st.booleans())
@example(path="/lp/poll", body=b'{"x":' + b"[" * 50_000 + b"]" * 50_000 + b"}", content_type=None, own=True)
@example(path="/identity/dev-login", body=b'{"name":"\\ud800"}', content_type="text/plain", own=False)
@example(path="/lp/send", body=b'{"action":"send","id":"u","text":"\\ud800","to":{"kind":"user","id":"bob"}}',
         content_type=None, own=True)
@example(path="/lp/poll", body=b'{"cursor":9007199254740992,"base":1}', content_type=None, own=True)
def test_every_rest_body_gets_a_documented_answer(api: Api, path: str, body: bytes, content_type: str | None,
                                                 own: bool) -> None:
    path, body = _aimed(path, body, api, own)
    headers = {"content-type": content_type} if content_type else {}
    _check_rest_answer(*api.call("POST", path, body, headers))
    status, _, _ = api.call("GET", "/health", b"", {})
    assert status == 200


@BUSY
@given(method=st.sampled_from(["GET", "PUT", "DELETE", "PATCH"]), kind=strings, peer=strings)
def test_every_rest_path_gets_a_documented_answer(api: Api, method: str, kind: str, peer: str) -> None:
    safe = [quote(part.encode("utf-8", errors="surrogatepass"), safe="") for part in (kind, peer)]
    for path in (f"/peers/{safe[0]}/{safe[1]}", f"/identity/{safe[1]}", "/identity/me", "/presence"):
        _check_rest_answer(*api.call(method, path, b"", {}))


def test_the_documented_codes_are_the_ones_the_server_has() -> None:
    """The properties accept only codes that the server has and the documents name."""
    assert {"invalid_field", "malformed_json", "frame_too_large", "unknown_route", "method_not_allowed"} <= DOCUMENTED
    assert re.search(r"`internal_error`", DOCS)
