"""The package `make deploy` uploads, run as Lambda runs it (issue 25, point 3).

`chalice package` by the deploy venv's chalice (Python 3.13, infra/runtime.py) builds the zip;
it is unpacked into a task root and each function runs in its own process of an isolated
Python 3.13 (an empty venv, `python -I`: sys.path is the standard library and the task root,
nothing of the development venv), invoked with the events API Gateway and the SQS event source
send (tests/lambda_runner.py). AWS is moto's server mode with the stage's infra stack created
from infra/template.yaml and its outputs wired into the functions' environment as the deploy
wires them. The exchange: the six packets over WebSocket, a long poll (open, the wait API's
authorizer, the ring on the connection's queue, poll, send), a group message (its fan-out
through the jobs queue and `on_job`), a photo (upload slot, S3 POST, send, media_url).

The zip's native extensions are arm64; on another machine they are replaced by the same
versions built for it (tests/lambda_package.py, `native_twins`): the app and every other
distribution are the zip's, byte for byte.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from devstack.events import WebSocketPeer, sqs_event, ws_connect_event, ws_message_event
from infra import runtime, wire_config
from tests import lambda_package
from tests.deploy_rehearsal import ServerProcess
from tests.lambda_package import CallbackApi, FunctionError, Functions, rest_event

pytestmark = pytest.mark.e2e  # a moto server process, chalice and the functions in child processes

ROOT = Path(__file__).resolve().parent.parent
REGION = "us-east-1"  # the committed config.json's placeholders are us-east-1: the wiring changes them
STACK_PARAMETERS = {"AppName": "webim", "Stage": "dev", "WithCdn": "false", "WithSecrets": "false",
                    "WithAlarms": "false", "WithWaitApi": "false"}  # what moto's CloudFormation can create
# moto's CloudFormation makes no HTTP API: the wait URL the stack would output (the functions
# only hand it out; the test drives the wait's authorizer and its SQS read itself)
WAIT_URL = "https://wait.execute-api.us-east-1.amazonaws.com/lp/wait"
PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082")


@dataclass
class Stage:
    """The deployed stage in moto: its functions, AWS clients, the @connections endpoint."""

    functions: Functions
    callbacks: CallbackApi
    session: boto3.session.Session
    endpoint: str
    outputs: dict[str, str]
    twins: list[str]
    task_root: Path

    def client(self, service: str) -> Any:
        return self.session.client(service, endpoint_url=self.endpoint)


def _create_stack(stage: Stage) -> dict[str, str]:
    cfn = stage.client("cloudformation")
    cfn.create_stack(StackName="webim-dev", TemplateBody=(ROOT / "infra" / "template.yaml").read_text(),
                     Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in STACK_PARAMETERS.items()])
    cfn.get_waiter("stack_create_complete").wait(StackName="webim-dev", WaiterConfig={"Delay": 1, "MaxAttempts": 120})
    (stack,) = cfn.describe_stacks(StackName="webim-dev")["Stacks"]
    return {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stage]:
    python = lambda_package.needed(lambda_package.isolated_python)
    package = lambda_package.needed(lambda_package.deployment_package)
    task_root = tmp_path_factory.mktemp("task")
    twins = lambda_package.unpack(package, task_root)
    sam = json.loads((package / "sam.json").read_text())
    server = ServerProcess()
    server.start()
    callbacks = CallbackApi()
    session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing",
                                    region_name=REGION)
    stage = Stage(Functions(python, task_root, {}, {}), callbacks, session, server.endpoint, {}, twins, task_root)
    try:
        stage.outputs = _create_stack(stage)
        secrets = stage.client("secretsmanager")  # WithSecrets=false: made as the stack makes them
        secrets.create_secret(Name="webim-dev-signing", SecretString=os.urandom(32).hex())
        secrets.create_secret(Name="webim-dev-host-auth", SecretString=json.dumps({"issuers": []}))
        # the deploy's wiring: the stack's outputs over the stage's variables (infra/wire_config.py)
        wired = wire_config.outputs_to_env({"OutputKey": k, "OutputValue": v} for k, v in stage.outputs.items())
        configs = lambda_package.function_configs(sam)
        for config in configs.values():
            config.environment.update(wired)
            config.environment["LONG_POLL_WAIT_URL"] = config.environment["LONG_POLL_WAIT_URL"] or WAIT_URL
            config.environment["CALLBACK_URL"] = callbacks.url  # the WebSocket API's @connections
        stage.functions = Functions(python, task_root, configs, {
            "AWS_ENDPOINT_URL": server.endpoint, "AWS_REGION": REGION, "AWS_DEFAULT_REGION": REGION,
            "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing"})
        yield stage
    finally:
        stage.functions.stop()
        callbacks.stop()
        server.stop()


# --- helpers: a client's view ------------------------------------------------------------------


class Socket:
    """A WebSocket connection as API Gateway holds it: events to the functions, frames posted back."""

    def __init__(self, stage: Stage, token: str, name: str) -> None:
        self.stage = stage
        self.peer = WebSocketPeer(connection_id=f"{name}-conn", domain_name="ws.example", stage="api",
                                  source_ip="198.51.100.8", query={"token": [token]})
        stage.callbacks.open(self.peer.connection_id)
        answer = stage.functions.invoke("app.ws_connect", ws_connect_event(self.peer))
        assert answer["statusCode"] == 200, answer

    def send(self, frame: dict[str, Any]) -> None:
        self.stage.functions.invoke("app.ws_message", ws_message_event(self.peer, json.dumps(frame)))

    def frame(self, kind: str, **fields: Any) -> dict[str, Any]:
        """The first frame of this type (and these field values) posted to the connection."""
        return self.stage.callbacks.wait_for(
            self.peer.connection_id,
            lambda f: f.get("type") == kind and all(f.get(k) == v for k, v in fields.items()),
            poke=self.stage_jobs)

    def stage_jobs(self) -> None:
        run_jobs(self.stage)


def run_jobs(stage: Stage) -> int:
    """One long-polled receive of the jobs queue handed to `on_job`, as the event source does
    (ReportBatchItemFailures: the failed ones stay); how many jobs ran."""
    sqs = stage.client("sqs")
    url = stage.outputs["JobsQueueUrl"]
    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                   AttributeNames=["All"], MessageAttributeNames=["All"]).get("Messages", [])
    if not messages:
        return 0
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    result = stage.functions.invoke("app.on_job", sqs_event(arn, messages))
    failed = {f["itemIdentifier"] for f in (result or {}).get("batchItemFailures", [])}
    for message in messages:
        if message["MessageId"] not in failed:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return len(messages)


def rest(stage: Stage, method: str, path: str, body: Any = None, token: str | None = None,
         query: dict[str, str] | None = None) -> tuple[int, Any]:
    answer = stage.functions.invoke("app.app", rest_event(method, path, body, token, query))
    return int(answer["statusCode"]), json.loads(answer["body"]) if answer.get("body") else None


def visitor(stage: Stage) -> dict[str, Any]:
    status, body = rest(stage, "POST", "/identity/visitor")
    assert status == 201, body
    return dict(body)


# --- the tests -------------------------------------------------------------------------------


@pytest.mark.timeout(600)  # the first run builds the deploy venv and the package
def test_the_package_is_the_deploys_and_runs_isolated(deployed: Stage) -> None:
    sam = json.loads((lambda_package.deployment_package() / "sam.json").read_text())
    runtimes = {r["Properties"]["Runtime"] for r in sam["Resources"].values()
                if r["Type"] == "AWS::Serverless::Function"}
    assert runtimes == {runtime.RUNTIME}
    path = deployed.functions.sys_path("app.app")
    # the task root first, then the runtime's standard library, and the empty venv's site-packages
    assert path[0] == str(deployed.task_root)
    venv = deployed.functions.python.parent.parent
    stdlib = Path(path[1]).parent  # .../lib of the Python 3.13 install
    assert all(p.startswith(str(stdlib)) for p in path[1:-1]), path
    assert Path(path[-1]) == venv / "lib" / f"python{runtime.TARGET_VERSION}" / "site-packages"
    assert list(Path(path[-1]).iterdir()) == []
    assert not [p for p in path if p.startswith((str(ROOT), sys.prefix))], path
    if deployed.twins:  # only the native distributions were exchanged for this machine's build
        assert {t.split("==")[0].lower() for t in deployed.twins} <= {"cffi", "cryptography", "wrapt", "pyyaml"}


@pytest.mark.timeout(300)
def test_health_and_the_six_packets_over_websocket(deployed: Stage) -> None:
    status, health = rest(deployed, "GET", "/health")
    assert status == 200, health
    alice, bob = visitor(deployed), visitor(deployed)
    a, b = Socket(deployed, alice["token"], "alice"), Socket(deployed, bob["token"], "bob")
    a.send({"action": "ping", "id": "a-1"})
    assert a.frame("pong", ref="a-1")["identity"] == alice["identity"]

    # bob, a visitor, writes first: a visitor's `delivered` is told only where it wrote (presence.md)
    b.send({"action": "send", "id": "b-0", "to": alice["identity"], "text": "hello"})
    assert a.frame("message", client_id="b-0")["seq"] == 1

    a.send({"action": "send", "id": "a-2", "to": bob["identity"], "text": "Hi Bob!"})      # msg:R
    message = b.frame("message", client_id="a-2")                                          # msg:N
    sent = a.frame("sent", ref="a-2")                                                      # msg:A
    assert (message["text"], message["seq"], sent["seq"]) == ("Hi Bob!", 2, 2)
    b.send({"action": "ack", "id": "b-1", "conversation_id": sent["conversation_id"], "seq": 2})  # ack:R
    assert a.frame("delivered", conversation_id=sent["conversation_id"])["seq"] == 2        # ack:N
    assert b.frame("acked", ref="b-1")["seq"] == 2                                          # ack:A
    assert deployed.functions.errors_logged() == []


def _long_poll_open(stage: Stage, token: str) -> dict[str, Any]:
    status, opened = rest(stage, "POST", "/lp/open", token=token)
    assert status == 201, opened
    assert opened["wait_url"] == WAIT_URL
    return dict(opened)


def _authorize(stage: Stage, wait_token: str) -> dict[str, Any]:
    """The wait API's authorizer, invoked as API Gateway invokes it (2.0 REQUEST, simple response)."""
    headers = {"authorization": f"Bearer {wait_token}"}
    event = {"version": "2.0", "type": "REQUEST", "routeKey": "POST /lp/wait", "rawPath": "/lp/wait",
             "identitySource": [headers["authorization"]], "headers": headers,
             "requestContext": {"http": {"method": "POST", "path": "/lp/wait", "sourceIp": "198.51.100.9"}}}
    return dict(stage.functions.invoke("app.lp_wait_authorizer", event))


@pytest.mark.timeout(300)
def test_a_long_poll_a_group_message_and_a_photo(deployed: Stage) -> None:
    alice, bob, carol = visitor(deployed), visitor(deployed), visitor(deployed)
    a, b = Socket(deployed, alice["token"], "alice2"), Socket(deployed, bob["token"], "bob2")

    # carol on long poll: open, the wait's authorizer, a ring on her queue, poll, send
    opened = _long_poll_open(deployed, carol["token"])
    assert _authorize(deployed, "not-a-token") == {"isAuthorized": False}
    allowed = _authorize(deployed, opened["wait_token"])
    assert allowed["isAuthorized"] is True
    queue_url = allowed["context"]["queueUrl"]
    status, answered = rest(deployed, "POST", "/lp/send", {"action": "send", "id": "c-0", "to": alice["identity"],
                                                            "text": "hi"},
                            token=carol["token"], query={"connection_id": opened["connection_id"]})
    assert status == 200 and [f["type"] for f in answered["frames"]] == ["sent"], answered
    a.send({"action": "send", "id": "a-1", "to": carol["identity"], "text": "Carol?"})
    to_carol = a.frame("sent", ref="a-1")
    # the wait: API Gateway's SQS ReceiveMessage on the queue the authorizer named
    rings = deployed.client("sqs").receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10,
                                                   WaitTimeSeconds=5).get("Messages", [])
    ring = json.loads(rings[0]["Body"])
    assert ring["n"] == 1 and json.loads(ring["f"])["text"] == "Carol?"
    status, polled = rest(deployed, "POST", "/lp/poll", {"connection_id": opened["connection_id"],
                                                          "cursor": 0, "base": 1}, token=carol["token"])
    assert status == 200, polled
    assert [f["text"] for f in polled["frames"] if f["type"] == "message"] == ["Carol?"]
    status, answered = rest(deployed, "POST", "/lp/send", {
        "action": "ack", "id": "c-1", "conversation_id": to_carol["conversation_id"], "seq": to_carol["seq"]},
        token=carol["token"], query={"connection_id": opened["connection_id"], "cursor": "1", "base": "1"})
    assert status == 200, answered
    assert [f["type"] for f in answered["frames"]] == ["acked"]
    assert a.frame("delivered", conversation_id=to_carol["conversation_id"])["seq"] == to_carol["seq"]

    # bob writes to alice too (only who wrote to her may be put in her group), then a group message
    b.send({"action": "send", "id": "b-1", "to": alice["identity"], "text": "hi"})
    a.send({"action": "group_create", "id": "a-2", "title": "Team", "members": [bob["identity"], carol["identity"]]})
    group = a.frame("group", ref="a-2")
    a.send({"action": "send", "id": "a-3", "conversation_id": group["conversation_id"], "text": "hello team"})
    assert a.frame("sent", ref="a-3")["conversation_id"] == group["conversation_id"]
    assert b.frame("message", client_id="a-3")["text"] == "hello team"  # through the jobs queue and on_job

    # a photo: the upload slot, the file POSTed to S3 (moto), the message, its signed URL
    a.send({"action": "upload", "id": "a-4", "content_type": "image/png", "size": len(PNG)})
    slot = a.frame("upload", ref="a-4")
    posted = httpx.post(slot["url"], data=slot["fields"], files={"file": ("p.png", PNG, "image/png")})
    assert posted.status_code in (200, 204), posted.text
    a.send({"action": "send", "id": "a-5", "to": bob["identity"], "text": "look",
            "image": {"upload_id": slot["upload_id"], "content_type": "image/png", "size": len(PNG),
                      "width": 1, "height": 1}})
    photo = b.frame("message", client_id="a-5")
    b.send({"action": "media_url", "id": "b-2", "conversation_id": photo["conversation_id"], "seq": photo["seq"]})
    url = b.frame("media_url", ref="b-2")["url"]
    assert httpx.get(url).content == PNG
    assert deployed.functions.errors_logged() == []


@pytest.mark.timeout(300)
def test_a_dependency_missing_from_the_package_fails_the_function(deployed: Stage, tmp_path: Path) -> None:
    """The isolation is real: with PyJWT taken out of the unpacked package, the REST function
    cannot start, although the development venv running this test has PyJWT."""
    import jwt  # noqa: F401  (here, in the test's own interpreter, it is installed)

    task_root = tmp_path / "task"
    shutil.copytree(deployed.task_root, task_root, symlinks=True)
    for path in [task_root / "jwt", *task_root.glob("PyJWT-*.dist-info"), *task_root.glob("pyjwt-*.dist-info")]:
        shutil.rmtree(path)
    broken = Functions(deployed.functions.python, task_root, deployed.functions.configs, deployed.functions.aws_env)
    try:
        with pytest.raises(FunctionError, match=re.escape("No module named 'jwt'")):
            broken.invoke("app.app", rest_event("GET", "/health"))
    finally:
        broken.stop()
