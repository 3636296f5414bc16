"""Per-function IAM (only the SQS consumer reads the ack-timeout queue), the WebSocket callback
permission scoped to the stage's own API, and stage throttling: infra/stage_settings.py and the
.chalice/ policy files. Nothing here talks to real AWS."""
from __future__ import annotations

import fnmatch
import importlib.util
import json
import shutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest

ROOT = Path(__file__).resolve().parent.parent
CHALICE_DIR = ROOT / ".chalice"
STAGES = ("dev", "prod")
CONSUMER_ACTIONS = {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility", "sqs:GetQueueAttributes"}


def _load_stage_settings() -> ModuleType:
    spec = importlib.util.spec_from_file_location("stage_settings", ROOT / "infra" / "stage_settings.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


stage_settings = _load_stage_settings()


def policy(name: str) -> dict[str, Any]:
    return dict(json.loads((CHALICE_DIR / name).read_text()))


def as_list(value: str | list[str]) -> list[str]:
    return value if isinstance(value, list) else [value]


def grants(document: dict[str, Any], action: str, resource: str) -> bool:
    """Whether an Allow statement names the action on this resource (exactly or by a wildcard)."""
    return any(statement["Effect"] == "Allow" and action in as_list(statement["Action"])
               and any(fnmatch.fnmatchcase(resource, pattern) for pattern in as_list(statement["Resource"]))
               for statement in document["Statement"])


@pytest.mark.parametrize("stage", STAGES)
def test_only_the_sqs_consumer_reads_or_deletes_the_ack_timeout_queue(stage: str) -> None:
    queue = f"arn:aws:sqs:us-east-1:111122223333:webim-{stage}-ack-timeout"
    shared, consumer = policy(f"policy-{stage}.json"), policy(f"policy-{stage}-jobs.json")
    for action in CONSUMER_ACTIONS:
        assert not grants(shared, action, queue), action
        assert grants(consumer, action, queue), action
    assert grants(shared, "sqs:SendMessage", queue)  # everyone may schedule a check
    # the consumer's policy is the shared one plus that one statement: no drift between them
    (extra,) = [s for s in consumer["Statement"] if s not in shared["Statement"]]
    assert set(extra["Action"]) == CONSUMER_ACTIONS
    assert extra["Resource"] == f"arn:aws:sqs:*:*:webim-{stage}-ack-timeout"
    assert [s for s in consumer["Statement"] if s != extra] == shared["Statement"]
    # and the doorbells keep everything a long poll does to its own queue
    doorbell = f"arn:aws:sqs:us-east-1:111122223333:webim-{stage}-lp-abc"
    for action in ("sqs:CreateQueue", "sqs:SendMessage", "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:DeleteQueue"):
        assert grants(shared, action, doorbell), action


@pytest.mark.parametrize("stage", STAGES)
def test_the_consumer_alone_has_the_consumer_policy(stage: str) -> None:
    config = json.loads((CHALICE_DIR / "config.json").read_text())["stages"][stage]
    assert config["iam_policy_file"] == f"policy-{stage}.json"
    with_own_policy = {name: f["iam_policy_file"] for name, f in config["lambda_functions"].items()
                       if "iam_policy_file" in f}
    assert with_own_policy == {"on_job": f"policy-{stage}-jobs.json"}
    assert stage_settings.policy_files(CHALICE_DIR, stage) == [
        CHALICE_DIR / f"policy-{stage}.json", CHALICE_DIR / f"policy-{stage}-jobs.json"]


@pytest.mark.parametrize("name", [f"policy-{s}{k}.json" for s in STAGES for k in ("", "-jobs")])
def test_committed_policies_push_to_no_api_until_scoped(name: str) -> None:
    """The placeholder matches no API id (ids are 10 lowercase letters and digits): before
    `make deploy` scopes it, pushes are refused, never allowed to every API in the account."""
    (callbacks,) = [s for s in policy(name)["Statement"] if s["Sid"] == "WebSocketCallbacks"]
    assert callbacks["Resource"] == stage_settings.callback_resources("WEBSOCKET_API_ID", "api")
    assert not grants(policy(name), "execute-api:ManageConnections",
                      "arn:aws:execute-api:us-east-1:111122223333:abcde12345/api/POST/@connections/x")


def test_scoping_names_the_stages_websocket_api_in_every_policy_file(tmp_path: Path) -> None:
    chalice_dir = tmp_path / ".chalice"
    shutil.copytree(CHALICE_DIR, chalice_dir, ignore=shutil.ignore_patterns("deployed", "deployments"))
    changed = stage_settings.write_scoped_policies(chalice_dir, "dev", "abcde12345", "api", "eu-west-1", "111122223333")
    assert changed == [chalice_dir / "policy-dev.json", chalice_dir / "policy-dev-jobs.json"]
    ours = "arn:aws:execute-api:eu-west-1:111122223333:abcde12345/api/{}/@connections/conn1"
    other_api = "arn:aws:execute-api:eu-west-1:111122223333:zzzzz99999/api/POST/@connections/conn1"
    for path in changed:
        scoped = json.loads(path.read_text())
        assert all(grants(scoped, "execute-api:ManageConnections", ours.format(m)) for m in ("POST", "GET", "DELETE"))
        assert not grants(scoped, "execute-api:ManageConnections", other_api)
        assert not grants(scoped, "execute-api:ManageConnections", ours.format("PUT"))
        # nothing else changed
        original = policy(path.name)
        assert [s for s in scoped["Statement"] if s["Sid"] != "WebSocketCallbacks"] == [
            s for s in original["Statement"] if s["Sid"] != "WebSocketCallbacks"]
    assert json.loads((chalice_dir / "policy-prod.json").read_text()) == policy("policy-prod.json")
    # a second run changes nothing (make deploy is idempotent)
    assert stage_settings.write_scoped_policies(chalice_dir, "dev", "abcde12345", "api", "eu-west-1",
                                                "111122223333") == []


def test_scope_policies_reads_the_api_from_the_deploy_state(tmp_path: Path) -> None:
    chalice_dir = tmp_path / ".chalice"
    shutil.copytree(CHALICE_DIR, chalice_dir, ignore=shutil.ignore_patterns("deployed", "deployments"))
    argv = ["scope-policies", "--stage", "dev", "--chalice-dir", str(chalice_dir)]
    assert stage_settings.main(argv) == 1  # nothing deployed yet: the placeholder stays
    (chalice_dir / "deployed").mkdir()
    (chalice_dir / "deployed" / "dev.json").write_text(json.dumps({"resources": [
        {"name": "websocket_api", "resource_type": "websocket_api", "websocket_api_id": "abcde12345"},
        {"name": "rest_api", "resource_type": "rest_api", "rest_api_id": "restapi123"}]}))
    assert stage_settings.main(argv) == 0
    (callbacks,) = [s for s in json.loads((chalice_dir / "policy-dev.json").read_text())["Statement"]
                    if s["Sid"] == "WebSocketCallbacks"]
    assert callbacks["Resource"] == stage_settings.callback_resources("abcde12345", "api")


class RecordingApiGatewayV2:
    """moto has no apigatewayv2 UpdateStage: record the call instead."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def update_stage(self, **params: Any) -> None:
        self.calls.append(params)


def test_both_stages_are_throttled(aws: None) -> None:
    rest = boto3.client("apigateway")
    api_id = rest.create_rest_api(name="webim-dev")["id"]
    root = rest.get_resources(restApiId=api_id)["items"][0]["id"]
    rest.put_method(restApiId=api_id, resourceId=root, httpMethod="GET", authorizationType="NONE")
    rest.put_integration(restApiId=api_id, resourceId=root, httpMethod="GET", type="MOCK")
    rest.create_deployment(restApiId=api_id, stageName="api")
    websocket = RecordingApiGatewayV2()
    limits = stage_settings.throttling_for("prod")

    for _ in range(2):  # idempotent
        stage_settings.throttle(rest, websocket, api_id, "wsapi12345", "api", limits)

    every_method = rest.get_stage(restApiId=api_id, stageName="api")["methodSettings"]["*/*"]
    assert (every_method["throttlingRateLimit"], every_method["throttlingBurstLimit"]) == (limits.rest_rate,
                                                                                            limits.rest_burst)
    assert websocket.calls == [{"ApiId": "wsapi12345", "StageName": "api", "DefaultRouteSettings": {
        "ThrottlingRateLimit": limits.websocket_rate, "ThrottlingBurstLimit": limits.websocket_burst}}] * 2


def test_every_stage_has_caps_and_prod_the_larger() -> None:
    dev, prod = stage_settings.throttling_for("dev"), stage_settings.throttling_for("prod")
    assert stage_settings.throttling_for("qa") == dev
    for limits in (dev, prod):
        assert 0 < limits.rest_rate <= limits.rest_burst and 0 < limits.websocket_rate <= limits.websocket_burst
    assert prod.rest_rate > dev.rest_rate and prod.websocket_rate > dev.websocket_rate
