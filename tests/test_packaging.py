"""Deployment artefacts: `chalice package` output, cfn-lint, `.chalice/` config and policies, and
`infra/wire_config.py`. Nothing here talks to real AWS."""
from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from cfnlint.decode import decode
from chalice.config import Config

from chalicelib.settings import output_to_env_name
from infra import roles, runtime
from tests import lambda_package

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "infra" / "template.yaml"
CHALICE_DIR = ROOT / ".chalice"
STAGES = ("dev", "prod")
ENV_NAMES = {
    "CONNECTIONS_TABLE", "MESSAGES_TABLE", "MEMBERS_TABLE", "JOBS_QUEUE_URL",
    "JOBS_QUEUE_NAME", "DEAD_LETTER_QUEUE_URL", "FRONTEND_BUCKET", "MEDIA_BUCKET",
    "SIGNING_SECRET_ID", "HOST_AUTH_SECRET_ID", "LONG_POLL_QUEUE_PREFIX", "POWERTOOLS_METRICS_NAMESPACE",
    "LONG_POLL_WAIT_URL", "MESSAGE_RETENTION_DAYS", "REPORT_RETENTION_DAYS",
}
# Neither `python -m chalice` nor `python -m cfnlint` works (no __main__), so use the console
# scripts installed next to the interpreter.
BIN_DIR = Path(sys.executable).parent


def _executable(name: str) -> str:
    candidate = BIN_DIR / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed next to {sys.executable} nor on PATH")
    return found


def _offline_env() -> dict[str, str]:
    """Fake credentials, a fixed region and no developer AWS configuration."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.pop("JOBS_QUEUE_NAME", None)  # app.py must import without it
    env.update(
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
    )
    return env


def _load_wire_config() -> ModuleType:
    spec = importlib.util.spec_from_file_location("wire_config", ROOT / "infra" / "wire_config.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


wire_config = _load_wire_config()


def _chalice_config() -> dict[str, Any]:
    return dict(json.loads((CHALICE_DIR / "config.json").read_text()))


# --- chalice package -------------------------------------------------------------------------


# Whichever test first needs it runs `chalice package` with the deploy venv's chalice (the zip
# `make deploy` uploads: Python 3.13, tests/lambda_package.py), once per test process; building the
# deploy venv first (infra/runtime.py) takes a minute at most, hence these tests' budget.
@pytest.fixture(scope="module")
def packaged() -> Path:
    """`chalice package --stage dev` by the deploy's chalice (the first run downloads the
    requirements.txt wheels with pip; later runs reuse .chalice/deployments/)."""
    return lambda_package.needed(lambda_package.deployment_package)


@pytest.fixture(scope="module")
def sam(packaged: Path) -> dict[str, Any]:
    return dict(json.loads((packaged / "sam.json").read_text()))


def _of_type(sam: dict[str, Any], resource_type: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in sam["Resources"].items() if r["Type"] == resource_type}


@pytest.mark.timeout(300)
def test_package_has_the_websocket_api(sam: dict[str, Any]) -> None:
    apis = _of_type(sam, "AWS::ApiGatewayV2::Api")
    assert [api["Properties"]["ProtocolType"] for api in apis.values()] == ["WEBSOCKET"]
    stages = _of_type(sam, "AWS::ApiGatewayV2::Stage")
    assert [stage["Properties"]["StageName"] for stage in stages.values()] == ["api"]

    functions = _of_type(sam, "AWS::Serverless::Function")
    handler_of = {name: f["Properties"]["Handler"] for name, f in functions.items()}
    integration_target = {
        name: integration["Properties"]["IntegrationUri"]["Fn::Sub"][1]["WebsocketHandler"]["Ref"]
        for name, integration in _of_type(sam, "AWS::ApiGatewayV2::Integration").items()
    }
    routes = {
        route["Properties"]["RouteKey"]: handler_of[
            integration_target[route["Properties"]["Target"]["Fn::Join"][1][1]["Ref"]]
        ]
        for route in _of_type(sam, "AWS::ApiGatewayV2::Route").values()
    }
    assert routes == {
        "$connect": "app.ws_connect",
        "$default": "app.ws_message",
        "$disconnect": "app.ws_disconnect",
    }


@pytest.mark.timeout(300)
def test_package_has_the_rest_api(sam: dict[str, Any]) -> None:
    (rest_api,) = _of_type(sam, "AWS::Serverless::Api").values()
    assert rest_api["Properties"]["StageName"] == "api"
    assert "get" in rest_api["Properties"]["DefinitionBody"]["paths"]["/health"]


@pytest.mark.timeout(300)
def test_package_subscribes_to_the_ack_timeout_queue(sam: dict[str, Any]) -> None:
    functions = _of_type(sam, "AWS::Serverless::Function")
    (on_job,) = [f for f in functions.values() if f["Properties"]["Handler"] == "app.on_job"]
    (event,) = on_job["Properties"]["Events"].values()
    assert event["Type"] == "SQS"
    assert event["Properties"]["Queue"]["Fn::Sub"].endswith(":webim-dev-ack-timeout")
    assert event["Properties"]["BatchSize"] == 10


@pytest.mark.timeout(300)
def test_package_applies_the_stage_config(sam: dict[str, Any]) -> None:
    expected_env = _chalice_config()["stages"]["dev"]["environment_variables"]
    policy = json.loads((CHALICE_DIR / "policy-dev.json").read_text())
    consumer_policy = json.loads((CHALICE_DIR / "policy-dev-jobs.json").read_text())  # it alone reads the queue
    functions = _of_type(sam, "AWS::Serverless::Function")
    # REST handler, three WebSocket handlers, SQS handler, the long-poll doorbell sweeper, the
    # wait API's authorizer
    assert len(functions) == 7
    for name, function in functions.items():
        props = function["Properties"]
        assert props["Runtime"] == runtime.RUNTIME == "python3.13", name  # Amazon Linux 2023
        assert props["Tracing"] == "Active", name
        assert props["Architectures"] == ["arm64"], name
        # the REST function answers at once (no poll is held in it): the smallest size
        # (docs/performance.md), and a timeout under API Gateway's 29 s
        rest = props["Handler"] == "app.app"
        # the wait API's authorizer: one signature check, the smallest size, seconds at most
        authorizer = props["Handler"] == "app.lp_wait_authorizer"
        # the job consumer: 20 s, under the queue's 30 s visibility, so a dead batch is back
        # within the retransmission schedule's first step (infra/template.yaml)
        jobs = props["Handler"] == "app.on_job"
        # the WebSocket routes' functions: under API Gateway's 29 s integration timeout, so a
        # slow frame ends in the function (logged, counted), never as the gateway's timeout
        websocket = props["Handler"] in ("app.ws_connect", "app.ws_message", "app.ws_disconnect")
        expected = ((28, 128) if rest else (5, 128) if authorizer else (20, 256) if jobs
                    else (28, 256) if websocket else (60, 256))  # the doorbell sweeper (a schedule, no integration)
        assert (props["Timeout"], props["MemorySize"]) == expected, name
        assert props["Environment"]["Variables"] == expected_env, name
        # the role the deploy makes for the region (infra/roles.py; chalice manages none), whose
        # one inline policy is the policy file
        role_policy = roles.function_policy_files(CHALICE_DIR, "dev")[props["Role"]]
        expected_policy = consumer_policy if props["Handler"] == "app.on_job" else policy
        assert json.loads(role_policy.read_text()) == expected_policy, name
    assert not _of_type(sam, "AWS::IAM::Role")


@pytest.mark.timeout(300)
def test_package_bundles_the_xray_sdk(packaged: Path) -> None:
    """chalicelib/tracing.py imports aws_xray_sdk on Lambda, which the runtime does not provide."""
    with zipfile.ZipFile(packaged / "deployment.zip") as archive:
        names = set(archive.namelist())
    assert {"app.py", "chalicelib/settings.py", "aws_xray_sdk/core/__init__.py",
            "aws_lambda_powertools/logging/logger.py", "aws_lambda_powertools/metrics/metrics.py"} <= names


@pytest.mark.timeout(300)
def test_package_native_code_is_for_the_runtime(packaged: Path) -> None:
    """Every extension module in the zip is arm64 machine code for CPython 3.13 (or the stable
    ABI): the manylinux aarch64 cp313 wheels of requirements.txt's binary packages."""
    with zipfile.ZipFile(packaged / "deployment.zip") as archive:
        extensions = [name for name in archive.namelist() if name.endswith(".so")]
        assert extensions
        for name in extensions:
            header = archive.open(name).read(20)
            assert header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") == 183, name  # EM_AARCH64
            assert re.search(r"\.(cpython-313-aarch64-linux-gnu|abi3)\.so$", name), name
        wheel_tags = [archive.read(name).decode() for name in archive.namelist() if name.endswith(".dist-info/WHEEL")]
    native = [text for text in wheel_tags if "Root-Is-Purelib: false" in text]
    assert native and all("aarch64" in text for text in native)


# --- cfn-lint --------------------------------------------------------------------------------


def _cfn_lint(path: Path) -> None:
    result = subprocess.run(
        # with the informational checks: I3011 (deletion policies on stateful resources) included
        [_executable("cfn-lint"), "--include-checks", "I", "--", str(path)],
        cwd=ROOT, env=_offline_env(), capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, f"cfn-lint {path.name}:\n{result.stdout}\n{result.stderr}"


@pytest.mark.timeout(300)
def test_cfn_lint_passes_on_the_packaged_template(packaged: Path) -> None:
    _cfn_lint(packaged / "sam.json")


def test_cfn_lint_passes_on_the_infra_template() -> None:
    _cfn_lint(TEMPLATE)


# --- .chalice/config.json and policies -------------------------------------------------------


@pytest.mark.parametrize("stage", STAGES)
def test_chalice_reads_the_stage_config(stage: str) -> None:
    config = Config(chalice_stage=stage, config_from_disk=_chalice_config())
    assert config.app_name == "webim"
    assert config.automatic_layer is False
    assert config.api_gateway_stage == "api"
    assert config.xray_enabled is True
    assert config.autogen_policy is False
    assert config.iam_policy_file == f"policy-{stage}.json"
    assert config.manage_iam_role is False  # the deploy's roles, named for the region (infra/roles.py)
    assert config.lambda_architecture == "arm64"
    # chalice's Config speaks for the REST function (api_handler) unless told another
    assert (config.lambda_timeout, config.lambda_memory_size) == (28, 128)  # it holds the long polls
    other = Config(chalice_stage=stage, function_name="on_job", config_from_disk=_chalice_config())
    assert other.lambda_memory_size == 256
    env = config.environment_variables
    assert set(env) == ENV_NAMES
    assert env["CONNECTIONS_TABLE"] == f"webim-{stage}-connections"
    assert env["SIGNING_SECRET_ID"] == f"webim-{stage}-signing"
    assert "WEBIM_DEV_LOGIN" not in env  # development login is never configured when deployed
    assert env["JOBS_QUEUE_NAME"] == f"webim-{stage}-ack-timeout"
    assert env["JOBS_QUEUE_URL"].endswith(f"/webim-{stage}-ack-timeout")


def test_config_variables_are_exactly_the_wired_stack_outputs() -> None:
    template, matches = decode(str(TEMPLATE))
    assert template is not None, matches
    wired = {output_to_env_name(key) for key in template["Outputs"] if key not in wire_config.EXCLUDED_OUTPUTS}
    assert wired == ENV_NAMES


@pytest.mark.parametrize("stage", STAGES)
def test_policy_is_scoped_to_its_stage(stage: str) -> None:
    policy = json.loads((CHALICE_DIR / f"policy-{stage}.json").read_text())
    other = next(s for s in STAGES if s != stage)
    for statement in policy["Statement"]:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        assert all("*" not in action for action in actions), statement
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        for resource in resources:
            assert f"webim-{other}-" not in resource and f"/webim/{other}/" not in resource
            if statement["Sid"] in {"DynamoDBTables", "SQSQueues", "Secrets", "MediaObjects"}:  # Logs: below
                assert f"webim-{stage}-" in resource, resource
    assert "dynamodb:ConditionCheckItem" in policy["Statement"][2]["Action"]


def _chalice_functions(stage: str) -> dict[str, Path]:
    """Each Lambda function chalice deploys for the stage, by the name chalice gives it (its own
    naming code: the deploy's application graph), with the policy file its role gets (the role
    whose ARN config.json gives it, infra/roles.py)."""
    from chalice.cli.factory import CLIFactory  # noqa: PLC0415  (imports app.py)
    from chalice.deploy import models  # noqa: PLC0415
    from chalice.deploy.appgraph import ApplicationGraphBuilder  # noqa: PLC0415

    config = CLIFactory(str(ROOT)).create_config_obj(chalice_stage_name=stage)
    found: dict[str, Path] = {}
    pending: list[models.Model] = [ApplicationGraphBuilder().build(config, stage)]
    while pending:
        resource = pending.pop()
        if isinstance(resource, models.LambdaFunction):
            role = resource.role
            assert isinstance(role, models.PreCreatedIAMRole)
            found[resource.function_name] = roles.function_policy_files(CHALICE_DIR, stage)[role.role_arn]
        pending.extend(resource.dependencies())
    return found


def _allows(policy: dict[str, Any], action: str, arn: str) -> bool:
    """IAM's matching of an Allow statement's Resource patterns (`*` any run, `?` one char)."""
    for statement in policy["Statement"]:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        if statement["Effect"] == "Allow" and action in actions:
            if any(re.fullmatch(re.escape(r).replace(r"\*", ".*").replace(r"\?", "."), arn) for r in resources):
                return True
    return False


@pytest.mark.parametrize("stage", STAGES)
def test_every_function_chalice_deploys_may_write_its_own_logs_and_no_other_stages(stage: str) -> None:
    """The REST function is `webim-<stage>` (no suffix): a `webim-<stage>-*` pattern alone left it
    without logs (issue 14). Names from chalice itself, not from a pattern we assume."""
    functions = _chalice_functions(stage)
    other = next(s for s in STAGES if s != stage)
    others = _chalice_functions(other)
    assert f"webim-{stage}" in functions and len(functions) == 7  # REST, 3 WebSocket, SQS, schedule, authorizer
    for name, policy_file in functions.items():
        policy = json.loads(policy_file.read_text())
        group = f"arn:aws:logs:us-east-1:123456789012:log-group:/aws/lambda/{name}"
        stream = f"{group}:log-stream:2026/01/01/[$LATEST]0123456789abcdef"
        assert _allows(policy, "logs:CreateLogGroup", group), name
        assert _allows(policy, "logs:CreateLogStream", stream), name
        assert _allows(policy, "logs:PutLogEvents", stream), name
        for foreign in others:
            assert not _allows(policy, "logs:PutLogEvents",
                               f"arn:aws:logs:us-east-1:123456789012:log-group:/aws/lambda/{foreign}:log-stream:s")


def test_the_infra_stack_keeps_logs_and_alarms_on_exactly_the_functions_chalice_deploys() -> None:
    """Log groups (with retention) and Lambda error/throttle alarms by the names chalice gives."""
    template, matches = decode(str(TEMPLATE))
    assert template is not None, matches
    resources = template["Resources"]

    def named(value: Any) -> str:
        return str(value["Fn::Sub"]).replace("${AppName}", "webim").replace("${Stage}", "dev")

    groups = {named(r["Properties"]["LogGroupName"]) for r in resources.values() if r["Type"] == "AWS::Logs::LogGroup"}
    assert all(r["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}
               for r in resources.values() if r["Type"] == "AWS::Logs::LogGroup")
    alarmed: dict[str, set[str]] = {}
    for alarm in (r["Properties"] for r in resources.values() if r["Type"] == "AWS::CloudWatch::Alarm"):
        if alarm.get("Namespace") == "AWS/Lambda":
            (dimension,) = alarm["Dimensions"]
            alarmed.setdefault(alarm["MetricName"], set()).add(named(dimension["Value"]))
            assert alarm["AlarmActions"] == [{"Ref": "AlarmTopic"}]
    functions = set(_chalice_functions("dev"))
    assert groups == {f"/aws/lambda/{name}" for name in functions}
    assert alarmed == {"Errors": functions, "Throttles": functions}


# --- infra/wire_config.py --------------------------------------------------------------------

STACK_OUTPUTS = [
    {"OutputKey": "ConnectionsTable", "OutputValue": "webim-dev-connections"},
    {"OutputKey": "JobsQueueUrl",
     "OutputValue": "https://sqs.eu-west-1.amazonaws.com/111122223333/webim-dev-ack-timeout"},
    {"OutputKey": "JobsQueueName", "OutputValue": "webim-dev-ack-timeout"},
    {"OutputKey": "FrontendBucket", "OutputValue": "webim-dev-frontendbucket-abc123"},
    {"OutputKey": "FrontendUrl", "OutputValue": "https://d111111abcdef8.cloudfront.net"},
]


def test_outputs_become_environment_variables_without_frontend_url() -> None:
    assert wire_config.outputs_to_env(STACK_OUTPUTS) == {
        "CONNECTIONS_TABLE": "webim-dev-connections",
        "JOBS_QUEUE_URL": "https://sqs.eu-west-1.amazonaws.com/111122223333/webim-dev-ack-timeout",
        "JOBS_QUEUE_NAME": "webim-dev-ack-timeout",
        "FRONTEND_BUCKET": "webim-dev-frontendbucket-abc123",
    }


def test_merge_keeps_other_stages_and_keys() -> None:
    config = {
        "version": "2.0",
        "app_name": "webim",
        "stages": {
            "dev": {"xray": True, "environment_variables": {"FRONTEND_BUCKET": "", "EXTRA": "kept"}},
            "prod": {"environment_variables": {"FRONTEND_BUCKET": "prod-bucket"}},
        },
    }
    before = json.loads(json.dumps(config))
    merged = wire_config.merge_env(config, "dev", {"FRONTEND_BUCKET": "dev-bucket", "MEMBERS_TABLE": "m"})
    assert config == before  # the input is not modified
    assert merged["version"] == "2.0" and merged["app_name"] == "webim"
    assert merged["stages"]["prod"] == before["stages"]["prod"]
    assert merged["stages"]["dev"] == {
        "xray": True,
        "environment_variables": {"FRONTEND_BUCKET": "dev-bucket", "EXTRA": "kept", "MEMBERS_TABLE": "m"},
    }


def test_merge_creates_a_missing_stage() -> None:
    merged = wire_config.merge_env({"version": "2.0"}, "qa", {"MEMBERS_TABLE": "webim-qa-members"})
    assert merged == {
        "version": "2.0",
        "stages": {"qa": {"environment_variables": {"MEMBERS_TABLE": "webim-qa-members"}}},
    }


def test_wire_config_writes_a_moto_stacks_outputs(provisioned: dict[str, str], tmp_path: Path) -> None:
    config_path = tmp_path / "config.json"
    shutil.copy(CHALICE_DIR / "config.json", config_path)
    original = json.loads(config_path.read_text())

    code = wire_config.main(
        ["--stage", "dev", "--stack-name", "webim-test", "--region", "us-east-1", "--config", str(config_path)]
    )

    assert code == 0
    text = config_path.read_text()
    assert text.endswith("}\n") and text.startswith('{\n  "version"')
    written = json.loads(text)
    # moto's stack has no secrets (WithSecrets=false), so their committed ids stay as they were;
    # the deploy state bucket is infra/deploy.py's, not a function setting
    from_stack = {k: v for k, v in provisioned.items()
                  if k not in ("SIGNING_SECRET_ID", "HOST_AUTH_SECRET_ID", "DEPLOY_STATE_BUCKET")}
    assert written["stages"]["dev"]["environment_variables"] == {
        **original["stages"]["dev"]["environment_variables"], **from_stack
    }
    written["stages"]["dev"]["environment_variables"] = original["stages"]["dev"]["environment_variables"]
    assert written == original


def test_wire_config_reports_a_missing_stack(aws: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config_path = tmp_path / "config.json"
    assert wire_config.main(["--stage", "dev", "--region", "us-east-1", "--config", str(config_path)]) == 1
    assert "webim-dev" in capsys.readouterr().err
    assert not config_path.exists()
