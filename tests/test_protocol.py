"""The protocol core: dispatch by action, and bad input answered with stable error codes."""
from __future__ import annotations

import json

import pytest

from chalicelib.logic.protocol import PROTOCOL_VERSION, Caller, ProtocolCore
from chalicelib.principal import Identity
from chalicelib.storage.connections import ConnectionRecord

CALLER = Caller(ConnectionRecord("c1", Identity("user", "u1"), "http://x", connected_at=0.0, expires_at=10))


def core() -> ProtocolCore:
    return ProtocolCore(max_frame_bytes=1024, clock=lambda: 1700000000.5)


def test_ping_answers_pong_with_the_server_time_and_the_frame_id() -> None:
    assert core().handle_text(CALLER, json.dumps({"action": "ping", "id": "p1"})) == [
        {"type": "pong", "v": PROTOCOL_VERSION, "time": 1700000000500, "ref": "p1",
         "identity": {"kind": "user", "id": "u1"}}
    ]


@pytest.mark.parametrize(
    ("text", "code", "ref"),
    [
        ("{not json", "malformed_json", None),
        ("[1, 2]", "malformed_json", None),
        ('"ping"', "malformed_json", None),
        ("[" * 100_000, "frame_too_large", None),
        (json.dumps({"id": "a"}), "invalid_field", "a"),
        (json.dumps({"action": 7, "id": "b"}), "invalid_field", "b"),
        (json.dumps({"action": "teleport", "id": "c"}), "unknown_action", "c"),
        (json.dumps({"action": "ping", "id": 12}), "invalid_field", None),
        (json.dumps({"action": "ping", "id": "x" * 129}), "invalid_field", None),
        (json.dumps({"action": "ping", "pad": "é" * 600}), "frame_too_large", None),
    ],
)
def test_bad_input_gets_an_error_frame_with_a_stable_code(text: str, code: str, ref: str | None) -> None:
    frames = core().handle_text(CALLER, text)
    assert len(frames) == 1
    frame = frames[0]
    assert frame["type"] == "error" and frame["code"] == code
    assert frame.get("ref") == ref
    assert "Traceback" not in frame["message"]


def test_deeply_nested_json_within_the_size_limit_is_refused_cleanly() -> None:
    nested = "[" * 500 + "]" * 500
    big_core = ProtocolCore(max_frame_bytes=10_000)
    assert big_core.handle_text(CALLER, nested)[0]["code"] == "malformed_json"
