"""infra/deploy.py's steps on their own; the whole deploy is rehearsed in test_deploy_rehearsal.py."""
from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from infra import deploy
from tests.conftest import LocalStackProcess

ROOT = Path(__file__).resolve().parent.parent


def test_the_lambda_runtime_must_be_the_projects_python() -> None:
    assert deploy.check_python(ROOT, "python3.13") == "python3.13"
    # chalice would deploy a 3.11 runtime (Amazon Linux 2) from the development venv: refused
    with pytest.raises(deploy.DeployError, match="python3.11 runtime; the project deploys python3.13"):
        deploy.check_python(ROOT, deploy.lambda_runtime((3, 11)))
    assert deploy.lambda_runtime((3, 9)) == "python3.10"
    # the deploy venv's chalice (infra/runtime.py) picks the runtime itself
    assert deploy.check_python(ROOT) == "python3.13"


def test_an_update_keeps_the_stacks_other_parameters() -> None:
    params = deploy.stack_parameters({"Stage": "dev"}, ["Stage", "WafRateLimit"])
    assert params == [{"ParameterKey": "Stage", "ParameterValue": "dev"},
                      {"ParameterKey": "WafRateLimit", "UsePreviousValue": True}]


def test_a_failed_deploy_keeps_what_it_created_and_the_rest_of_the_old_state() -> None:
    previous = {"resources": [
        {"name": "api_handler", "resource_type": "lambda_function", "lambda_arn": "old"},
        {"name": "websocket_api", "resource_type": "websocket_api", "websocket_api_id": "w1"},
    ]}
    created = [{"name": "api_handler", "resource_type": "lambda_function", "lambda_arn": "new"},
               {"name": "rest_api", "resource_type": "rest_api", "rest_api_id": "r1"}]
    merged = deploy.merge_partial_state(previous, created)
    assert merged["resources"] == [previous["resources"][1], *created]
    assert deploy.merge_partial_state(None, created)["resources"] == created


def test_the_frontend_upload_leaves_out_tests_and_local_config(tmp_path: Path) -> None:
    for name in ("index.html", "config.json", "tests/a.test.mjs", "demo/index.html", "lib/x.mjs"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    assert set(deploy.frontend_files(tmp_path, demo=False)) == {"index.html", "lib/x.mjs"}
    assert set(deploy.frontend_files(tmp_path, demo=True)) == {"index.html", "lib/x.mjs", "demo/index.html"}
    assert deploy.content_type("lib/x.mjs") == "text/javascript; charset=utf-8"


@pytest.mark.e2e
def test_the_smoke_test_passes_against_a_running_stack(local_stack: LocalStackProcess) -> None:
    """The step the rehearsal skips (moto runs no Lambda), against the local stack's same API."""
    result = asyncio.run(deploy.smoke_test(f"{local_stack.base_url}/api/", local_stack.ws_url))
    assert result["seq"] == 2  # after the receiver's hello: a visitor is told `delivered` only where it wrote
    assert result["received"] == "make deploy smoke test"


@pytest.mark.e2e
def test_the_smoke_test_fails_on_a_broken_stage(local_stack: LocalStackProcess) -> None:
    with pytest.raises(deploy.DeployError, match="GET /health answered 404"):
        asyncio.run(deploy.smoke_test(f"{local_stack.base_url}/nothing/", local_stack.ws_url))


def test_the_deployer_policy_covers_secrets_and_scopes_roles_to_the_app() -> None:
    """docs/deploy.md's prerequisite: the policy a deployer attaches (infra/deployer-policy.json)."""
    import json

    policy = json.loads((ROOT / "infra" / "deployer-policy.json").read_text())
    allowed = {action: statement["Resource"] for statement in policy["Statement"]
               for action in ([statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"])}
    assert {"secretsmanager:CreateSecret", "secretsmanager:GetRandomPassword", "sts:GetCallerIdentity",
            "cloudformation:CreateStack", "lambda:UpdateEventSourceMapping", "cloudfront:CreateInvalidation",
            "s3:PutObject", "s3:DeleteObjectVersion"} <= set(allowed)
    assert allowed["iam:PassRole"] == "arn:aws:iam::*:role/webim-*"
    assert allowed["cloudformation:UpdateStack"] == "arn:aws:cloudformation:*:*:stack/webim-*/*"


def test_the_deployer_policy_covers_the_steps_around_chalice_and_the_templates_resources() -> None:
    """What make deploy calls besides chalice (partial batch responses, stage throttling,
    reserved concurrency) and what CloudFormation needs for the template's CloudFront Function,
    cache policy and table deletion protection, each on the resource it is called on."""
    import fnmatch
    import json

    policy = json.loads((ROOT / "infra" / "deployer-policy.json").read_text())

    def as_list(value: str | list[str]) -> list[str]:
        return [value] if isinstance(value, str) else value

    def allows(action: str, resource: str) -> bool:
        return any(statement["Effect"] == "Allow"
                   and any(fnmatch.fnmatchcase(action, pattern) for pattern in as_list(statement["Action"]))
                   and any(fnmatch.fnmatchcase(resource, pattern) for pattern in as_list(statement["Resource"]))
                   for statement in policy["Statement"])

    function = "arn:aws:lambda:eu-west-1:111122223333:function:webim-dev"
    for action in ("lambda:PutFunctionConcurrency", "lambda:DeleteFunctionConcurrency"):
        assert allows(action, function), action
    assert allows("lambda:UpdateEventSourceMapping",
                  "arn:aws:lambda:eu-west-1:111122223333:event-source-mapping:0b1c")
    # stage throttling: UpdateStage is a PATCH on the stage, v1 (REST) and v2 (WebSocket)
    assert allows("apigateway:PATCH", "arn:aws:apigateway:eu-west-1::/restapis/abcde12345/stages/api")
    assert allows("apigateway:PATCH", "arn:aws:apigateway:eu-west-1::/apis/fghij67890/stages/api")
    assert allows("dynamodb:UpdateTable", "arn:aws:dynamodb:eu-west-1:111122223333:table/webim-dev-messages")
    for kind, verbs in (("Function", ("Create", "Describe", "Update", "Publish", "Delete")),
                        ("CachePolicy", ("Create", "Get", "Update", "Delete"))):
        for verb in verbs:
            assert allows(f"cloudfront:{verb}{kind}", "arn:aws:cloudfront::111122223333:function/x"), (verb, kind)


class _FakeCloudFormation:
    """describe_stacks / update_stack / waiters of one stack, recording each update's parameters."""

    def __init__(self, parameters: dict[str, str]) -> None:
        self.parameters = dict(parameters)
        self.updates: list[dict[str, str]] = []

    def describe_stacks(self, StackName: str) -> dict[str, Any]:  # noqa: N803 - boto3's names
        parameters = [{"ParameterKey": k, "ParameterValue": v} for k, v in self.parameters.items()]
        return {"Stacks": [{"StackName": StackName, "StackStatus": "UPDATE_COMPLETE", "Outputs": [],
                            "Parameters": parameters}]}

    def update_stack(self, StackName: str, TemplateBody: str, Parameters: list[dict[str, Any]]) -> None:  # noqa: N803
        given = {p["ParameterKey"]: p["ParameterValue"] for p in Parameters if "ParameterValue" in p}
        self.updates.append(given)
        self.parameters.update(given)

    def get_waiter(self, name: str) -> Any:
        return SimpleNamespace(wait=lambda **_: None)


def _deployed(project: Path, rest: str, websocket: str) -> None:
    (project / "infra").mkdir(parents=True)
    (project / "infra" / "template.yaml").write_text("Resources: {}\n")
    (project / ".chalice" / "deployed").mkdir(parents=True)
    (project / ".chalice" / "deployed" / "dev.json").write_text(json.dumps({"resources": [
        {"resource_type": "rest_api", "name": "rest_api", "rest_api_id": rest},
        {"resource_type": "websocket_api", "name": "websocket_api", "websocket_api_id": websocket}]}))


def test_the_stack_is_told_the_deployed_api_ids_once(tmp_path: Path) -> None:
    """The WebSocket alarms, dashboard graph and WAF association name the APIs chalice made: the
    first deploy passes their ids to the stack (every other parameter kept), later ones do not
    update it, and an id given with PARAMS wins."""
    _deployed(tmp_path, "rest123", "ws456")
    cfn = _FakeCloudFormation({"AppName": "webim", "Stage": "dev", "AlarmEmail": "", "RestApiId": "",
                               "WebSocketApiId": "", "LogRetentionDays": "30"})
    target = deploy.Target("dev", project_dir=tmp_path)
    assert deploy.link_api_ids(cfn, target) is True
    (update,) = cfn.updates
    assert update["RestApiId"] == "rest123" and update["WebSocketApiId"] == "ws456"
    assert update["LogRetentionDays"] == "30" and update["AlarmEmail"] == ""  # the rest as it was
    assert deploy.link_api_ids(cfn, target) is False  # a second run: nothing to tell
    assert len(cfn.updates) == 1
    given = deploy.Target("dev", project_dir=tmp_path, parameters={"RestApiId": "", "WebSocketApiId": ""})
    cfn.parameters.update({"RestApiId": "", "WebSocketApiId": ""})
    assert deploy.link_api_ids(cfn, given) is False  # the operator's values win


def test_the_smoke_test_waits_a_bounded_time_for_a_new_api() -> None:
    """A just-created API's hostname may not resolve yet, or its stage answer 5xx for a while:
    the smoke test retries its first call with growing waits, then gives up in one line."""
    import httpx

    waited: list[float] = []

    async def sleep(seconds: float) -> None:
        waited.append(seconds)

    def attempts(failures: list[Any]) -> Any:
        async def call() -> Any:
            failure = failures.pop(0) if failures else None
            if isinstance(failure, Exception):
                raise failure
            return httpx.Response(failure or 200)
        return call

    dns = httpx.ConnectError("[Errno -2] Name or service not known")
    answer = asyncio.run(deploy.until_reachable(attempts([dns, dns, 503]), waits=(1, 2, 4, 8), sleep=sleep))
    assert answer.status_code == 200 and waited == [1, 2, 4]
    waited.clear()
    assert asyncio.run(deploy.until_reachable(attempts([404]), sleep=sleep)).status_code == 404  # an answer
    with pytest.raises(deploy.DeployError, match=r"not reachable after 15 s \(ConnectError"):
        asyncio.run(deploy.until_reachable(attempts([dns] * 10), waits=(1, 2, 4, 8), sleep=sleep))
    assert waited == [1, 2, 4, 8]


def test_the_smoke_test_gives_up_on_an_unreachable_websocket_api_in_one_line() -> None:
    from tests.conftest import free_port

    url = f"ws://127.0.0.1:{free_port()}/ws?token=x"  # nothing listens: refused, as an unresolved host is
    with pytest.raises(deploy.DeployError, match=r"^smoke: the WebSocket API was not reachable \("):
        asyncio.run(deploy._open_when_resolvable(url, timeout=5, waits=(0.01, 0.01)))


# --- issue 25: a deploy that survives its own failures -----------------------------------------


@pytest.fixture
def plain_aws() -> Iterator[None]:
    """A fresh moto account without the local stack's patches: moto's own models, whose S3 keys
    its reset disposes (the patches' untracked ones warn when an overwritten key is collected)."""
    import os

    from moto import mock_aws

    from devstack import moto_speedups, moto_transactions
    from devstack.embedded_aws import fake_credentials

    saved = dict(os.environ)
    fake_credentials()
    undo = [patch for patch in (moto_speedups, moto_transactions) if patch.installed()]
    for patch in undo:
        patch.uninstall()
    try:
        with mock_aws():
            yield
    finally:
        for patch in undo:
            patch.install()
        os.environ.clear()
        os.environ.update(saved)


def _table(dynamodb: Any, name: str, protected: bool) -> None:
    dynamodb.create_table(TableName=name, BillingMode="PAY_PER_REQUEST", DeletionProtectionEnabled=protected,
                          AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                          KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}])


def test_leftovers_are_cleared_when_they_hold_nothing_and_named_in_one_message_when_they_do(plain_aws: None) -> None:
    """Before CreateStack: tables and secrets of the stage's fixed names would fail it (an
    earlier stack's, kept by `make destroy`, or an earlier template's failed create). An empty
    table (even protected), a secret scheduled for deletion and an empty bucket of the stack go;
    data is named, all of it in one line; another stage's resources are not touched."""
    import boto3

    session = boto3.session.Session(region_name="us-east-1")
    dynamodb, secrets, s3 = session.client("dynamodb"), session.client("secretsmanager"), session.client("s3")
    _table(dynamodb, "webim-dev-connections", protected=True)  # empty: a failed create's
    _table(dynamodb, "webim-dev-messages", protected=True)
    dynamodb.put_item(TableName="webim-dev-messages", Item={"pk": {"S": "c1"}})
    _table(dynamodb, "webim-dev2-members", protected=False)  # another stage's
    secrets.create_secret(Name="webim-dev-signing", SecretString="k")
    secrets.delete_secret(SecretId="webim-dev-signing", RecoveryWindowInDays=7)  # holds the name 7 days
    secrets.create_secret(Name="webim-dev-host-auth", SecretString='{"issuers": []}')
    s3.create_bucket(Bucket="webim-dev-mediabucket-abc1")
    s3.create_bucket(Bucket="webim-dev-frontendbucket-def2")
    s3.put_object(Bucket="webim-dev-frontendbucket-def2", Key="index.html", Body=b"x")

    with pytest.raises(deploy.DeployError) as raised:
        deploy.clear_orphans(session, deploy.Target("dev", region="us-east-1"))
    message = str(raised.value)
    assert "\n" not in message
    assert ("CreateStack would fail on them: table webim-dev-messages (holds items), secret webim-dev-host-auth. "
            in message)
    assert sorted(dynamodb.list_tables()["TableNames"]) == ["webim-dev-messages", "webim-dev2-members"]
    with pytest.raises(secrets.exceptions.ResourceNotFoundException):
        secrets.describe_secret(SecretId="webim-dev-signing")
    assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == ["webim-dev-frontendbucket-def2"]
    # the data gone (by hand, as the message says): the next run clears the rest and passes
    dynamodb.update_table(TableName="webim-dev-messages", DeletionProtectionEnabled=False)
    dynamodb.delete_table(TableName="webim-dev-messages")
    secrets.delete_secret(SecretId="webim-dev-host-auth", ForceDeleteWithoutRecovery=True)
    assert deploy.clear_orphans(session, deploy.Target("dev", region="us-east-1")) == []


def test_one_deploy_of_a_stage_at_a_time(plain_aws: None) -> None:
    """The lock: a second taker is refused with the holder's name; once expired it is taken over;
    a release deletes only its own lock."""
    import boto3

    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="webim-dev-deploystatebucket-x")
    alice = deploy.DeployLock(s3, "webim-dev-deploystatebucket-x", "dev", "alice on laptop").acquire(now=1000)
    with pytest.raises(deploy.DeployError, match=r"^stage dev is being deployed by alice on laptop since "
                                                 r".* expires in 3600 s\): wait for it to end"):
        deploy.DeployLock(s3, "webim-dev-deploystatebucket-x", "dev", "bob").acquire(now=1000)
    alice.refresh(now=2000)  # still hers: expires at 5600 now
    with pytest.raises(deploy.DeployError, match="expires in 600 s"):
        deploy.DeployLock(s3, "webim-dev-deploystatebucket-x", "dev", "bob").acquire(now=5000)
    bob = deploy.DeployLock(s3, "webim-dev-deploystatebucket-x", "dev", "bob").acquire(now=5601)  # alice died
    alice.release()  # not hers any more: bob's lock stays
    held = json.loads(s3.get_object(Bucket="webim-dev-deploystatebucket-x", Key=bob.key)["Body"].read())
    assert held["owner"] == "bob"
    bob.release()
    assert s3.list_objects_v2(Bucket="webim-dev-deploystatebucket-x").get("KeyCount") == 0


class _FakeLambda:
    def __init__(self, limit: int) -> None:
        self.limit = limit

    def get_account_settings(self) -> dict[str, Any]:
        return {"AccountLimit": {"ConcurrentExecutions": self.limit, "UnreservedConcurrentExecutions": self.limit}}


def test_the_accounts_lambda_concurrency_is_checked_before_anything_is_made() -> None:
    """A new account's limit is 10: chalice's PutFunctionConcurrency would fail half-way."""
    reserved = deploy.reserved_concurrency(ROOT, "prod")
    assert reserved == 66 and deploy.reserved_concurrency(ROOT, "dev") == 0
    with pytest.raises(deploy.DeployError, match=r"limit in eu-west-1 is 10; the stage reserves 66 .* request "
                                                 r"'Concurrent executions' \(L-B99A9384\) of at least 166"):
        deploy.check_lambda_quota(_FakeLambda(10), reserved, "eu-west-1")
    assert deploy.check_lambda_quota(_FakeLambda(1000), reserved, "eu-west-1") == 1000
    assert deploy.check_lambda_quota(_FakeLambda(100), 0, "eu-west-1") == 100  # dev reserves nothing


class _FailedStackEvents:
    def __init__(self, reason: str) -> None:
        self.reason = reason

    def describe_stack_events(self, StackName: str) -> dict[str, Any]:  # noqa: N803 - boto3's names
        return {"StackEvents": [  # newest first, as CloudFormation lists them
            {"LogicalResourceId": StackName, "ResourceStatus": "ROLLBACK_COMPLETE"},
            {"LogicalResourceId": "MessagesTable", "ResourceType": "AWS::DynamoDB::Table",
             "ResourceStatus": "CREATE_FAILED", "ResourceStatusReason": "Resource creation cancelled"},
            {"LogicalResourceId": "FrontendDistribution", "ResourceType": "AWS::CloudFront::Distribution",
             "ResourceStatus": "CREATE_FAILED", "ResourceStatusReason": self.reason},
            {"LogicalResourceId": StackName, "ResourceStatus": "CREATE_IN_PROGRESS"}]}


def test_a_failed_create_names_its_cause_and_what_to_request() -> None:
    cloudfront = ("Resource handler returned message: \"Access denied for operation 'AWS::CloudFront::Distribution'"
                  ": Your account must be verified before you can add new CloudFront resources.\"")
    reason = deploy.stack_failure(_FailedStackEvents(cloudfront), "webim-dev")
    assert reason.startswith("FrontendDistribution (AWS::CloudFront::Distribution): Resource handler")
    assert "ask AWS Support (Support Center, Account and billing) to verify the account for CloudFront" in reason
    denied = deploy.stack_failure(_FailedStackEvents("User: x is not authorized to perform: iam:CreatePolicy"), "s")
    assert denied.endswith("attach infra/deployer-policy.json (docs/deploy.md)")


# Resource types whose names are account-wide (not per region), and where their name is given.
ACCOUNT_WIDE_NAMES = {
    "AWS::CloudFront::OriginAccessControl": ("OriginAccessControlConfig", "Name"),
    "AWS::CloudFront::CachePolicy": ("CachePolicyConfig", "Name"),
    "AWS::CloudFront::ResponseHeadersPolicy": ("ResponseHeadersPolicyConfig", "Name"),
    "AWS::CloudFront::Function": ("Name",),
    "AWS::CloudWatch::Dashboard": ("DashboardName",),
    "AWS::IAM::Role": ("RoleName",),
    "AWS::IAM::ManagedPolicy": ("ManagedPolicyName",),
    "AWS::S3::Bucket": ("BucketName",),
    "AWS::WAFv2::WebACL": ("Name",),  # regional, but its metrics' names are not
}


def _rendered_names(region: str) -> dict[str, str]:
    """Logical id -> the account-wide name the template gives it in `region` (stage dev)."""
    from cfnlint.decode import decode

    template, _ = decode(str(ROOT / "infra" / "template.yaml"))
    assert template is not None
    names = {}
    for logical, resource in template["Resources"].items():
        path = ACCOUNT_WIDE_NAMES.get(resource["Type"])
        if path is None:
            continue
        value: Any = resource.get("Properties", {})
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if value is None:
            names[logical] = f"<generated: {logical}>"  # CloudFormation adds the stack and a random suffix
            continue
        text = value["Fn::Sub"] if isinstance(value, dict) else value
        for key, replacement in (("AppName", "webim"), ("Stage", "dev"), ("AWS::Region", region)):
            text = text.replace("${" + key + "}", replacement)
        names[logical] = text
    return names


def test_one_stage_fits_in_two_regions_of_one_account() -> None:
    """No account-wide name of the template is the same in two regions (the functions' roles:
    below)."""
    east, west = _rendered_names("us-east-1"), _rendered_names("eu-west-1")
    named = {logical: name for logical, name in east.items() if not name.startswith("<generated")}
    assert {"FrontendOriginAccessControl", "FrontendCachePolicy", "FrontendHeadersPolicy", "FolderIndexFunction",
            "Dashboard", "ApiWebAcl"} <= set(named)
    assert not set(named.values()) & set(west.values())
    assert east["Dashboard"] == "webim-dev-us-east-1"


# --- the functions' roles (infra/roles.py) ----------------------------------------------------


def test_the_function_roles_of_one_stage_differ_between_two_regions() -> None:
    """chalice's own role names (`webim-<stage>-<function>`) are account-wide: the deploy makes
    the roles, named for the region, one per policy file; the longest name fits IAM's 64."""
    from infra import roles

    chalice = ROOT / ".chalice"
    east = roles.stage_roles(chalice, "dev", "us-east-1")
    west = roles.stage_roles(chalice, "dev", "eu-west-1")
    assert [(r.name, r.policy_file.name, r.function) for r in east] == [
        ("webim-dev-us-east-1-functions", "policy-dev.json", None),
        ("webim-dev-us-east-1-on_job", "policy-dev-jobs.json", "on_job")]
    assert not {r.name for r in east} & {r.name for r in west}
    assert not {r.name for r in east} & {r.name for r in roles.stage_roles(chalice, "prod", "us-east-1")}
    assert len(roles.role_name("webim", "a" * 16, "ap-southeast-3", "sweep_long_poll_doorbells")) <= 64
    # the committed config.json: chalice manages no role, its placeholders name these (us-east-1)
    config = json.loads((chalice / "config.json").read_text())
    for stage in ("dev", "prod"):
        merged = roles.merge_role_arns(config, stage, {
            r.function: roles.role_arn("123456789012", r.name) for r in roles.stage_roles(chalice, stage, "us-east-1")})
        assert merged == config, stage


def test_a_function_role_is_its_policy_file_and_the_boundary(plain_aws: None, tmp_path: Path) -> None:
    """Created with the boundary (never without), the policy file as its one inline policy; a
    second run changes nothing; a changed file is put again, a foreign inline policy removed, a
    lifted boundary put back; destroy's delete takes the policies and the role."""
    import boto3

    from infra import roles

    iam = boto3.client("iam", region_name="us-east-1")
    boundary = iam.create_policy(PolicyName="webim-dev-RolesBoundary-x", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sqs:*", "Resource": "*"}]}))[
        "Policy"]["Arn"]
    policy_file = tmp_path / "policy-dev.json"
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sqs:SendMessage",
                                                      "Resource": "arn:aws:sqs:*:*:webim-dev-ack-timeout"}]}
    policy_file.write_text(json.dumps(policy))
    role = roles.StageRole("webim-dev-eu-west-1-functions", policy_file)

    arn, changed = roles.ensure_role(iam, role, boundary)
    assert arn == "arn:aws:iam::123456789012:role/webim-dev-eu-west-1-functions"
    assert changed == ["created", "policy-dev.json"]
    made = iam.get_role(RoleName=role.name)["Role"]
    assert made["PermissionsBoundary"]["PermissionsBoundaryArn"] == boundary
    assert made["AssumeRolePolicyDocument"] == roles.TRUST_POLICY
    assert iam.list_role_policies(RoleName=role.name)["PolicyNames"] == [role.name]
    assert iam.get_role_policy(RoleName=role.name, PolicyName=role.name)["PolicyDocument"] == policy
    assert roles.ensure_role(iam, role, boundary) == (arn, [])

    policy["Statement"][0]["Resource"] = "arn:aws:sqs:*:*:webim-dev-other"
    policy_file.write_text(json.dumps(policy))
    iam.put_role_policy(RoleName=role.name, PolicyName="by-hand", PolicyDocument=json.dumps(policy))
    iam.delete_role_permissions_boundary(RoleName=role.name)
    assert roles.ensure_role(iam, role, boundary) == (arn, ["boundary", "policy-dev.json", "-by-hand"])
    assert iam.get_role_policy(RoleName=role.name, PolicyName=role.name)["PolicyDocument"] == policy
    assert iam.list_role_policies(RoleName=role.name)["PolicyNames"] == [role.name]

    assert roles.delete_role(iam, role.name) is True
    assert roles.delete_role(iam, role.name) is False
    assert [r["RoleName"] for r in iam.list_roles()["Roles"]] == []


def test_a_local_deploy_state_of_another_region_is_not_used(plain_aws: None, tmp_path: Path) -> None:
    """The same stage deployed to a second region from one clone: the bucket (this region's)
    has no state yet, and the local file names the first region's APIs and functions, which
    chalice would update or delete from here. It is dropped; this region's own is kept."""
    import boto3

    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="webim-dev-deploystatebucket-y")
    target = deploy.Target("dev", project_dir=tmp_path)
    target.state_path.parent.mkdir(parents=True)
    state = {"resources": [{"name": "api_handler", "resource_type": "lambda_function",
                            "lambda_arn": "arn:aws:lambda:eu-west-1:123456789012:function:webim-dev"}]}
    target.state_path.write_text(json.dumps(state))
    assert deploy.restore_state(s3, "webim-dev-deploystatebucket-y", target, "eu-west-1") == "local"
    assert deploy.restore_state(s3, "webim-dev-deploystatebucket-y", target, "us-west-2") == \
        "none (the local state is of eu-west-1: set aside as dev.eu-west-1.json)"
    assert not target.state_path.exists()
    assert json.loads(target.state_path.with_name("dev.eu-west-1.json").read_text()) == state
