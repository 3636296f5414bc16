"""Operable production (issue 14, point 3): the silent paths each leave one structured JSON log
line with the ids an operator searches by, and the EMF metrics are printed, through the app's
real handlers (chalice's middleware included), as Lambda would run them. Never a token or a
message's text in the output."""
from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

import app as webim
from chalicelib import observability
from chalicelib.logic.fanout import GROUP_FANOUT
from chalicelib.logic.messaging import ACK_CHECK, direct_conversation_id
from chalicelib.principal import Identity
from chalicelib.wiring import install_services
from devstack.events import WebSocketPeer, sqs_event, ws_connect_event, ws_message_event
from devstack.invoker import LambdaInvoker
from tests.test_groups_messaging import World

ALICE = Identity("user", "alice")
BOB = Identity("user", "bob")
CAROL = Identity("user", "carol")
CONV = direct_conversation_id(ALICE, BOB)
TEXT = "the secret plans are in the blue folder"


class Lambda:
    """The app's handlers as Lambda invokes them, on the world's services; stdout parsed."""

    def __init__(self, world: World, capsys: pytest.CaptureFixture[str]) -> None:
        self.world = world
        self.invoker = LambdaInvoker(webim.app)
        self._capsys = capsys
        self.output = ""

    def frame(self, connection_id: str, **frame: Any) -> None:
        peer = WebSocketPeer(connection_id, "127.0.0.1:8000", "local", "127.0.0.1")
        assert self.invoker.websocket("$default", ws_message_event(peer, json.dumps(frame))) == 200

    def connect(self, connection_id: str, token: str) -> int:
        peer = WebSocketPeer(connection_id, "127.0.0.1:8000", "local", "127.0.0.1", query={"token": [token]})
        return self.invoker.websocket("$connect", ws_connect_event(peer))

    def jobs(self, jobs: list[dict[str, Any]]) -> None:
        """One SQS batch through the SQS handler."""
        config, = self.invoker.sqs_handlers()
        messages = [{"MessageId": f"m{n}", "ReceiptHandle": f"r{n}", "Body": json.dumps(job)}
                    for n, job in enumerate(jobs)]
        assert self.invoker.sqs(config, sqs_event("arn:aws:sqs:us-east-1:123456789012:q", messages)) == []

    def read(self) -> tuple[list[dict[str, Any]], dict[str, float]]:
        """The log lines and the metrics (summed by name) printed since the last read."""
        out = self._capsys.readouterr().out
        self.output += out
        lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        logs = [line for line in lines if "level" in line]
        metrics: dict[str, float] = {}
        for emf in (line for line in lines if "_aws" in line):
            (directive,) = emf["_aws"]["CloudWatchMetrics"]
            assert directive["Namespace"].startswith(observability.DEFAULT_NAMESPACE)  # WebIM[/<stage>]
            assert directive["Dimensions"] == [["service"]] and emf["service"] == "webim"
            for metric in directive["Metrics"]:
                assert metric["Unit"] == "Count"
                values = emf[metric["Name"]]
                metrics[metric["Name"]] = metrics.get(metric["Name"], 0) + sum(
                    values if isinstance(values, list) else [values])
        return logs, metrics


@pytest.fixture
def world(provisioned: dict[str, str]) -> Iterator[World]:
    built = World({**provisioned, "WEBIM_DEV_LOGIN": "1"})
    install_services(built.h.services)
    yield built
    install_services(None)


@pytest.fixture
def aws_lambda(world: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Lambda]:
    monkeypatch.delenv("WEBIM_LOCAL", raising=False)
    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED", raising=False)
    observability.discard_metrics()  # what earlier tests' direct calls counted in this process
    capsys.readouterr()
    running = Lambda(world, capsys)
    yield running
    running.read()
    assert TEXT not in running.output  # never a message's text


def only(logs: list[dict[str, Any]], event: str) -> dict[str, Any]:
    found = [line for line in logs if line.get("event") == event]
    assert len(found) == 1, [line.get("event") for line in logs]
    return found[0]


def send(aws: Lambda, client_id: str, to: Identity = BOB) -> None:
    aws.frame("a1", action="send", id=client_id, text=TEXT, to=to.to_json())


def test_a_refused_handshake_logs_its_connection_and_code_never_the_token(aws_lambda: Lambda, world: World) -> None:
    token = world.h.services.authenticator.dev_login("alice").token + "x"  # a bad signature
    assert aws_lambda.connect("c-refused", token) == 401
    logs, metrics = aws_lambda.read()
    line = only(logs, "handshake_refused")
    assert (line["connection_id"], line["code"], line["status"], line["level"]) == (
        "c-refused", "invalid_credential", 401, "INFO")
    assert metrics == {observability.HANDSHAKES_REFUSED: 1}
    assert token not in aws_lambda.output and token[:-1] not in aws_lambda.output


def test_the_happy_path_logs_one_info_line_per_send_and_counts_stored_and_pushes(aws_lambda: Lambda,
                                                                                world: World) -> None:
    world.connect("a1", ALICE)
    world.connect("b1", BOB)
    aws_lambda.read()
    send(aws_lambda, "m1")
    logs, metrics = aws_lambda.read()
    assert [line["event"] for line in logs if line["level"] != "DEBUG"] == ["message_stored"]
    stored = only(logs, "message_stored")
    assert {k: stored[k] for k in ("connection_id", "identity", "conversation_id", "seq", "client_id", "sender")} == {
        "connection_id": "a1", "identity": ALICE.key, "conversation_id": CONV, "seq": 1, "client_id": "m1",
        "sender": ALICE.key}
    assert stored["request_id"]  # Lambda's request id, to find the invocation's other lines
    assert metrics == {observability.MESSAGES_STORED: 1, observability.PUSHES: 2}  # msg:N to bob, sent to alice
    send(aws_lambda, "m1")  # the client's retry: recognised, nothing stored
    logs, metrics = aws_lambda.read()
    assert only(logs, "message_repeated")["seq"] == 1 and observability.MESSAGES_STORED not in metrics


def test_an_offline_receiver_is_logged_with_the_message_ids(aws_lambda: Lambda, world: World) -> None:
    world.connect("a1", ALICE)
    aws_lambda.read()
    send(aws_lambda, "m-offline")
    logs, metrics = aws_lambda.read()
    line = only(logs, "receiver_offline")
    assert {k: line[k] for k in ("connection_id", "identity", "conversation_id", "seq", "client_id", "receiver",
                                 "during")} == {
        "connection_id": "a1", "identity": ALICE.key, "conversation_id": CONV, "seq": 1, "client_id": "m-offline",
        "receiver": BOB.key, "during": "send"}
    assert metrics[observability.RECEIVERS_OFFLINE] == 1


def test_a_410_logs_the_gone_connection_and_the_message(aws_lambda: Lambda, world: World) -> None:
    world.connect("a1", ALICE)
    world.connect("b1", BOB)
    world.h.sender.gone.add("b1")  # bob's tab closed without $disconnect yet
    aws_lambda.read()
    send(aws_lambda, "m-gone")
    logs, metrics = aws_lambda.read()
    gone = only(logs, "push_gone")
    assert {k: gone[k] for k in ("connection_id", "identity", "to_connection", "to_identity", "conversation_id",
                                 "seq", "client_id", "forgotten", "frame_type")} == {
        "connection_id": "a1", "identity": ALICE.key, "to_connection": "b1", "to_identity": BOB.key,
        "conversation_id": CONV, "seq": 1, "client_id": "m-gone", "forgotten": True, "frame_type": "message"}
    assert only(logs, "receiver_offline")["receiver"] == BOB.key  # no connection took it
    assert metrics[observability.PUSHES_GONE] == 1


def test_retransmits_and_giving_up_are_logged_per_job_with_its_ids(aws_lambda: Lambda, world: World) -> None:
    world.connect("a1", ALICE)
    world.connect("b1", BOB)
    send(aws_lambda, "m1")
    check, = [job for job in world.jobs if job["kind"] == ACK_CHECK]
    aws_lambda.read()
    # one batch: attempt 1 retransmits; the last attempt retransmits and gives up
    aws_lambda.jobs([check, {**check, "attempt": 3}])
    logs, metrics = aws_lambda.read()
    retransmits = [line for line in logs if line.get("event") == "retransmit"]
    assert [(r["attempt"], r["job"], r["conversation_id"], r["seq"], r["receiver"], r["connections"])
            for r in retransmits] == [(1, ACK_CHECK, CONV, 1, BOB.key, 1), (3, ACK_CHECK, CONV, 1, BOB.key, 1)]
    exhausted = only(logs, "retries_exhausted")
    assert (exhausted["level"], exhausted["conversation_id"], exhausted["seq"], exhausted["receiver"]) == (
        "WARNING", CONV, 1, BOB.key)
    assert "connection_id" not in exhausted  # a job has no connection: no stale one from elsewhere
    assert (metrics[observability.RETRANSMITS], metrics[observability.RETRIES_EXHAUSTED]) == (2, 1)
    world.h.services.sessions.close("b1")
    aws_lambda.read()
    aws_lambda.jobs([{**check, "attempt": 2}])  # bob went offline: nothing to retransmit to
    logs, metrics = aws_lambda.read()
    offline = only(logs, "receiver_offline")
    assert (offline["during"], offline["attempt"], offline["seq"]) == ("ack_check", 2, 1)
    assert observability.RETRANSMITS not in metrics


def test_a_group_fan_out_failure_is_logged_with_the_member_and_counted(aws_lambda: Lambda, world: World,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    group = world.create([ALICE, BOB, CAROL])
    for connection, who in (("a1", ALICE), ("b1", BOB), ("c1", CAROL)):
        world.connect(connection, who)
    aws_lambda.frame("a1", action="send", id="g1", conversation_id=group, text=TEXT)
    fanout, = [job for job in world.jobs if job["kind"] == GROUP_FANOUT]
    sender = world.h.sender
    real_send = sender.send

    def failing_for_carol(endpoint: str, connection_id: str, data: bytes) -> None:
        if connection_id == "c1":
            raise RuntimeError("injected: the callback API is unavailable")
        real_send(endpoint, connection_id, data)

    monkeypatch.setattr(sender, "send", failing_for_carol)
    aws_lambda.read()
    aws_lambda.jobs([fanout])
    logs, metrics = aws_lambda.read()
    failure = only(logs, "group_fanout_push_failed")
    assert (failure["level"], failure["job"], failure["conversation_id"], failure["seq"], failure["receiver"],
            failure["to_connection"]) == ("ERROR", GROUP_FANOUT, group, 2, CAROL.key, "c1")
    assert "injected" in failure["exception"]
    assert metrics[observability.GROUP_FANOUT_FAILURES] == 1
    assert metrics[observability.GROUP_FANOUT_PUSHES] == 1  # bob's; alice's own connection is skipped


def test_every_named_metric_is_one_the_template_documents() -> None:
    """The names the dashboard and docs/operations.md use are the ones the code emits."""
    from pathlib import Path  # noqa: PLC0415
    root = Path(__file__).resolve().parent.parent
    operations = (root / "docs" / "operations.md").read_text()
    template = (root / "infra" / "template.yaml").read_text()
    for name in observability.METRIC_NAMES:
        assert f"`{name}`" in operations, name
        assert name in template, name


def test_the_local_stack_records_no_metrics(monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("WEBIM_LOCAL", "1")
    with observability.invocation(connection_id="c"):
        observability.count(observability.PUSHES)
    assert "_aws" not in capsys.readouterr().out
