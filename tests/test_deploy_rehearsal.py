"""Rehearsal of `make deploy` / `make destroy` (infra/deploy.py) against moto's server mode.

No AWS account: every AWS call of infra/deploy.py and of `chalice deploy` goes to a
ThreadedMotoServer (AWS_ENDPOINT_URL), with the five moto shims of tests/deploy_rehearsal.py.
The rehearsal runs in throwaway clones of the project, in eu-west-1 (so the wired values differ
from the committed us-east-1 placeholders), the CloudFront distribution and the secrets left out
(WithCdn=false, WithSecrets=false: moto's CloudFormation creates neither) and `--skip-smoke`:
moto creates the Lambdas but never runs them, so there is no stage to smoke-test
(test_deploy.py runs the smoke test against the local stack instead). Each clone gets an empty
requirements.txt: the functions are never invoked, and vendoring the Linux wheels would need
PyPI and upload 23 MB per function.

Sequence (one module fixture): deploy from clone A, deploy again from A, deploy from a fresh
clone B (no .chalice/deployed: state restored from the bucket), deploy the same stage from B
into a second region of the same account (REGION_2), destroy it there, destroy from B.
"""
from __future__ import annotations

import fnmatch
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from infra import stage_settings
from tests.deploy_rehearsal import ServerProcess

# moto's server in a process of its own, and chalice deploys in child processes: a subprocess stack
pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
REGION = "eu-west-1"
REGION_2 = "us-west-2"  # the same stage, the same account: IAM's names are account-wide
REGION_3 = "eu-central-1"  # a stage deployed while chalice made the roles, moved to the deploy's
STAGE = "dev"
ACCOUNT = "123456789012"  # moto's
# What a clone needs to deploy: the app, its config, the infra and the frontend.
PROJECT_FILES = ("app.py", "pyproject.toml", "requirements.txt")
PROJECT_DIRS = ("chalicelib", "infra", "frontend", "webim_client")
FUNCTIONS = {f"webim-{STAGE}", *(f"webim-{STAGE}-{name}" for name in (
    "websocket_connect", "websocket_message", "websocket_disconnect", "on_job", "lp_wait_authorizer",
    "sweep_long_poll_doorbells"))}


def make_clone(dest: Path) -> Path:
    """The project as a fresh clone has it: no .chalice/deployed, no deployment packages."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "node_modules")
    for name in PROJECT_FILES:
        shutil.copy2(ROOT / name, dest / name)
    for name in PROJECT_DIRS:
        shutil.copytree(ROOT / name, dest / name, ignore=ignore)
    (dest / ".chalice").mkdir()
    for path in (ROOT / ".chalice").glob("*.json"):
        shutil.copy2(path, dest / ".chalice" / path.name)
    (dest / "requirements.txt").write_text("# rehearsal: Lambdas are never invoked, no wheels to vendor\n")
    return dest


class Rehearsal:
    def __init__(self, server: ServerProcess, tmp: Path) -> None:
        self.server = server
        self.clone_a = make_clone(_mkdir(tmp / "clone-a"))
        self.clone_b = make_clone(_mkdir(tmp / "clone-b"))
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        self.env.pop("JOBS_QUEUE_NAME", None)
        self.env.update(
            AWS_ENDPOINT_URL=server.endpoint, AWS_DEFAULT_REGION=REGION, AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing", AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull,
            WEBIM_DEPLOY_VENV=str(ROOT / ".venv-deploy"),  # chalice's Python 3.13 (infra/runtime.py), made once
        )
        self.session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing",
                                             region_name=REGION)
        self.snapshots: dict[str, dict[str, Any]] = {}
        self.outputs: dict[str, str] = {}

    def client(self, service: str, region: str = REGION) -> Any:
        return self.session.client(service, endpoint_url=self.server.endpoint, region_name=region)

    def run(self, clone: Path, *args: str, fault: str = "", fails: bool = False,
            region: str = REGION) -> subprocess.CompletedProcess[str]:
        """deploy.py in `clone`; with `fault` (WEBIM_REHEARSAL_FAULT) or `fails`, it must fail."""
        env = {**self.env, "AWS_DEFAULT_REGION": region}
        if fault:
            env["WEBIM_REHEARSAL_FAULT"] = fault
        result = subprocess.run(
            [sys.executable, "infra/deploy.py", *args, "--stage", STAGE],
            cwd=clone, env=env, capture_output=True, text=True, timeout=150,
        )
        failed = fails or bool(fault)
        assert (result.returncode == 0) != failed, f"deploy.py {args}:\n{result.stdout}\n{result.stderr}"
        return result

    def deploy(self, clone: Path, fault: str = "", fails: bool = False,
               region: str = REGION) -> subprocess.CompletedProcess[str]:
        # moto's CloudFormation has no CloudFront distribution, Secrets Manager secret nor HTTP API; and
        # its UpdateStack with a changed parameter evaluates the !Sub of resources whose condition
        # is false (the alarms dashboard), so the API ids are given empty here, which keeps
        # deploy.py's link_api_ids from updating the stack (test_deploy.py tests that step)
        return self.run(clone, "deploy", "--skip-smoke", "--parameter", "WithCdn=false",
                        "--parameter", "WithSecrets=false", "--parameter", "WithAlarms=false",
                        "--parameter", "WithWaitApi=false",  # moto's CloudFormation: no ApiGatewayV2
                        "--parameter", "WebSocketApiId=", "--parameter", "RestApiId=", fault=fault, fails=fails,
                        region=region)

    def snapshot(self, name: str, clone: Path, region: str = REGION) -> None:
        cfn, lambda_ = self.client("cloudformation", region), self.client("lambda", region)
        (stack,) = cfn.describe_stacks(StackName=f"webim-{STAGE}")["Stacks"]
        outputs = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}
        if region == REGION:
            self.outputs = outputs
        listed = lambda_.list_functions()["Functions"]
        functions = {f["FunctionName"]: f.get("Environment", {}).get("Variables", {}) for f in listed}
        config_object = self.client("s3", region).get_object(Bucket=outputs["FrontendBucket"], Key="config.json")
        (rest_id,) = [api["id"] for api in self.client("apigateway", region).get_rest_apis()["items"]]
        (websocket_id,) = [api["ApiId"] for api in self.client("apigatewayv2", region).get_apis()["Items"]]
        self.snapshots[name] = {
            "role_policies": self.role_policies(region),
            "roles": self.roles(region),
            "function_roles": {f["FunctionName"]: f["Role"] for f in listed},
            "boundary": next(r["PhysicalResourceId"] for r in cfn.list_stack_resources(StackName=f"webim-{STAGE}")[
                "StackResourceSummaries"] if r["LogicalResourceId"] == "RolesBoundary"),
            "rest_stage": self.client("apigateway", region).get_stage(restApiId=rest_id, stageName="api"),
            "websocket_stage": self.client("apigatewayv2", region).get_stage(ApiId=websocket_id, StageName="api"),
            "websocket_routes": self.websocket_routes(websocket_id, region),
            "stack_status": stack["StackStatus"],
            "rest_apis": [rest_id],
            "websocket_apis": [websocket_id],
            "functions": functions,
            "mappings": lambda_.list_event_source_mappings()["EventSourceMappings"],
            "queue_arn": self.client("sqs", region).get_queue_attributes(
                QueueUrl=outputs["JobsQueueUrl"], AttributeNames=["QueueArn"])["Attributes"]["QueueArn"],
            "frontend_keys": sorted(o["Key"] for o in self.client("s3", region).list_objects_v2(
                Bucket=outputs["FrontendBucket"]).get("Contents", [])),
            "config_json": json.loads(config_object["Body"].read()),
            "config_cache": config_object.get("CacheControl"),
            "state": json.loads((clone / ".chalice" / "deployed" / f"{STAGE}.json").read_text()),
            "stage_env": json.loads((clone / ".chalice" / "config.json").read_text())["stages"][STAGE][
                "environment_variables"],
        }


    def leftovers(self, region: str = REGION) -> dict[str, Any]:
        """What the stage has in the region besides the app: stacks, tables, queues, buckets."""
        s3 = self.client("s3", region)
        return {
            "stacks": [(s["StackName"], s["StackStatus"]) for s in self.client("cloudformation", region).list_stacks()[
                "StackSummaries"] if s["StackStatus"] != "DELETE_COMPLETE"],
            "tables": sorted(self.client("dynamodb", region).list_tables()["TableNames"]),
            "queues": sorted(self.client("sqs", region).list_queues().get("QueueUrls", [])),
            "buckets": sorted(b["Name"] for b in s3.list_buckets()["Buckets"]  # S3 lists every region's
                              if (s3.get_bucket_location(Bucket=b["Name"])["LocationConstraint"] or "us-east-1")
                              == region),
        }

    def plant_leftovers(self) -> None:
        """What a failed create of the earlier template (`Retain`, deletion protection on) left:
        an empty protected table and an empty media bucket; the next deploy removes both."""
        self.client("dynamodb").create_table(
            TableName=f"webim-{STAGE}-members", BillingMode="PAY_PER_REQUEST", DeletionProtectionEnabled=True,
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}])
        self.client("s3").create_bucket(Bucket=f"webim-{STAGE}-mediabucket-earlier1",
                                        CreateBucketConfiguration={"LocationConstraint": REGION})

    def locks(self) -> list[str]:
        listed = self.client("s3").list_objects_v2(Bucket=self.outputs["DeployStateBucket"], Prefix="chalice/lock/")
        return [o["Key"] for o in listed.get("Contents", [])]

    def hold_lock(self, expires_in: int) -> None:
        """The stage's lock as another deployer's deploy holds it."""
        now = int(time.time())
        self.client("s3").put_object(Bucket=self.outputs["DeployStateBucket"], Key=f"chalice/lock/{STAGE}.json",
                                     Body=json.dumps({"owner": "arn:aws:iam::123456789012:user/alice on laptop",
                                                      "token": "alice", "since": now - 60,
                                                      "expires": now + expires_in}).encode())

    def websocket_routes(self, api_id: str, region: str = REGION) -> dict[str, str]:
        """Route key -> its integration's type, on the deployed WebSocket API."""
        client = self.client("apigatewayv2", region)
        return {route["RouteKey"]: client.get_integration(
                    ApiId=api_id, IntegrationId=route["Target"].removeprefix("integrations/"))["IntegrationType"]
                for route in client.get_routes(ApiId=api_id)["Items"]}

    def roles(self, region: str = REGION) -> dict[str, str]:
        """The stage's roles of the region (IAM's names are account-wide: the region is in them)
        -> their permissions boundary."""
        iam = self.client("iam")
        return {role["RoleName"]: iam.get_role(RoleName=role["RoleName"])["Role"].get(  # ListRoles has no boundary
                    "PermissionsBoundary", {}).get("PermissionsBoundaryArn", "")
                for role in iam.list_roles()["Roles"] if role["RoleName"].startswith(f"webim-{STAGE}-{region}-")}

    def role_policies(self, region: str = REGION) -> dict[str, dict[str, Any]]:
        """"role/policy" -> the policy document the deploy put on each of the stage's roles."""
        iam = self.client("iam")
        documents = {}
        for role in iam.list_roles()["Roles"]:
            if role["RoleName"].startswith(f"webim-{STAGE}-{region}-"):
                for policy in iam.list_role_policies(RoleName=role["RoleName"])["PolicyNames"]:
                    documents[f"{role['RoleName']}/{policy}"] = iam.get_role_policy(
                        RoleName=role["RoleName"], PolicyName=policy)["PolicyDocument"]
        return documents


def with_chalices_roles(run: Rehearsal, clone: Path, region: str) -> dict[str, Any]:
    """A stage as a deploy before infra/roles.py left it: the functions on the roles chalice made
    and named (`webim-<stage>-<function>`), its deploy state listing them; then a plain deploy.
    Returns the roles and the functions' roles before and after, and that deploy's log."""
    run.deploy(clone, region=region)
    path = clone / ".chalice" / "config.json"
    config = json.loads(path.read_text())
    stage = config["stages"][STAGE]
    del stage["manage_iam_role"], stage["iam_role_arn"]
    for settings in stage["lambda_functions"].values():
        settings.pop("iam_role_arn", None)
    path.write_text(json.dumps(config, indent=2))
    subprocess.run([str(ROOT / ".venv-deploy" / "bin" / "python"), "infra/deploy.py", "_chalice", "deploy",
                    "--stage", STAGE, "--project-dir", str(clone)], cwd=clone, check=True, capture_output=True,
                   env={**run.env, "AWS_DEFAULT_REGION": region}, timeout=150)
    (stack,) = run.client("cloudformation", region).describe_stacks(StackName=f"webim-{STAGE}")["Stacks"]
    bucket = next(o["OutputValue"] for o in stack["Outputs"] if o["OutputKey"] == "DeployStateBucket")
    run.client("s3", region).put_object(Bucket=bucket, Key=f"chalice/deployed/{STAGE}.json",
                                        Body=(clone / ".chalice" / "deployed" / f"{STAGE}.json").read_bytes())

    def roles() -> dict[str, Any]:
        return {"chalices": sorted(r["RoleName"] for r in run.client("iam").list_roles()["Roles"]
                                   if r["RoleName"].startswith(f"webim-{STAGE}-")
                                   and not r["RoleName"].startswith((f"webim-{STAGE}-{REGION}-",
                                                                     f"webim-{STAGE}-{REGION_2}-",
                                                                     f"webim-{STAGE}-{REGION_3}-"))),
                "deploys": sorted(run.roles(region)),
                "functions": sorted({f["Role"].split("/")[-1] for f in run.client("lambda", region).list_functions()[
                    "Functions"]})}

    before = roles()
    log = run.deploy(clone, region=region).stdout
    after = roles()
    run.run(clone, "destroy", region=region)
    return {"before": before, "after": after, "log": log}


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rehearsal]:
    server = ServerProcess()
    server.start()
    try:
        tmp = tmp_path_factory.mktemp("rehearsal")
        run = Rehearsal(server, tmp)
        run.env["WEBIM_DEPLOY_ACTION_LOG"] = str(tmp / "actions.log")  # every AWS call of every run below
        # a first create that fails (a bad resource injected), then a plain deploy
        failed = run.deploy(run.clone_a, fault="create")
        run.failed_create = {"stderr": failed.stderr, **run.leftovers()}  # type: ignore[attr-defined]
        run.plant_leftovers()
        run.logs = [run.deploy(run.clone_a).stdout]  # type: ignore[attr-defined]
        run.snapshot("first", run.clone_a)
        run.logs.append(run.deploy(run.clone_a).stdout)  # type: ignore[attr-defined]
        run.snapshot("second", run.clone_a)
        # a deploy that dies half-way: after `chalice deploy`, before the steps after it
        halfway = run.deploy(run.clone_a, fault="after-chalice")
        run.halfway = {"stderr": halfway.stderr, "locks": run.locks(),  # type: ignore[attr-defined]
                       "routes": run.websocket_routes(run.snapshots["first"]["websocket_apis"][0])}
        # a deploy while another holds the stage's lock is refused; an expired lock is taken over
        run.hold_lock(expires_in=600)
        run.refused = run.deploy(run.clone_b, fails=True).stderr  # type: ignore[attr-defined]
        run.hold_lock(expires_in=-1)
        assert not (run.clone_b / ".chalice" / "deployed").exists()
        run.logs.append(run.deploy(run.clone_b).stdout)  # type: ignore[attr-defined]  (the re-run completes)
        run.snapshot("clone", run.clone_b)
        run.locks_after = run.locks()  # type: ignore[attr-defined]
        # the same stage in a second region of the account, from the same clone; destroyed there,
        # the first region's stage is as it was
        run.logs.append(run.deploy(run.clone_b, region=REGION_2).stdout)  # type: ignore[attr-defined]
        run.snapshot("region_2", run.clone_b, REGION_2)
        run.logs.append(run.run(run.clone_b, "destroy", region=REGION_2).stdout)  # type: ignore[attr-defined]
        run.after_region_2 = run.leftovers(REGION_2)  # type: ignore[attr-defined]
        run.region_1_roles = {  # type: ignore[attr-defined]  (before anything deploys the first region again)
            **run.roles(), **{f["FunctionName"]: f["Role"] for f in run.client("lambda").list_functions()["Functions"]}}
        run.logs.append(run.deploy(run.clone_b).stdout)  # type: ignore[attr-defined]
        run.snapshot("after_region_2", run.clone_b)
        run.logs.append(run.run(run.clone_b, "destroy").stdout)  # type: ignore[attr-defined]
        run.after_destroy = {  # type: ignore[attr-defined]
            "functions": [f["FunctionName"] for f in run.client("lambda").list_functions()["Functions"]],
            "roles": run.roles(),
            "rest_apis": run.client("apigateway").get_rest_apis()["items"],
            "websocket_apis": run.client("apigatewayv2").get_apis()["Items"],
            **run.leftovers(),
        }
        # a stage deployed before the roles were the deploy's, in a region of its own
        run.migration = with_chalices_roles(run, make_clone(_mkdir(tmp / "clone-c")), REGION_3)  # type: ignore[attr-defined]
        run.actions = (tmp / "actions.log").read_text().splitlines()  # type: ignore[attr-defined]
        yield run
    finally:
        server.stop()


@pytest.mark.timeout(1200)  # the fixture's fifteen runs of deploy.py
def test_first_deploy_creates_the_stack_and_functions_with_the_wired_environment(rehearsal: Rehearsal) -> None:
    first = rehearsal.snapshots["first"]
    outputs = rehearsal.outputs
    assert first["stack_status"] == "UPDATE_COMPLETE"  # created, then deletion protection switched on
    assert {"DeployStateBucket", "FrontendBucket", "JobsQueueUrl"} <= set(outputs)
    # wired from the stack (eu-west-1), not the committed us-east-1 placeholders
    env = first["stage_env"]
    assert env["JOBS_QUEUE_URL"] == outputs["JobsQueueUrl"]
    assert f"sqs.{REGION}." in env["JOBS_QUEUE_URL"]
    assert env["FRONTEND_BUCKET"] == outputs["FrontendBucket"]
    assert "DEPLOY_STATE_BUCKET" not in env
    assert set(first["functions"]) == FUNCTIONS
    for name, variables in first["functions"].items():
        assert variables == env, name
    assert len(first["rest_apis"]) == len(first["websocket_apis"]) == 1


def test_the_event_source_is_the_stages_queue_with_partial_batch_responses(rehearsal: Rehearsal) -> None:
    first = rehearsal.snapshots["first"]
    (mapping,) = first["mappings"]
    assert mapping["EventSourceArn"] == first["queue_arn"]
    assert first["queue_arn"].endswith(f":{REGION}:123456789012:webim-{STAGE}-ack-timeout")
    assert mapping["FunctionArn"].endswith(f":function:webim-{STAGE}-on_job")
    # set by deploy.py after chalice (chalice has no option), kept by later deploys
    for name in ("first", "second", "clone"):
        (mapping,) = rehearsal.snapshots[name]["mappings"]
        assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"], name


def test_the_uploaded_config_json_holds_the_deployed_urls(rehearsal: Rehearsal) -> None:
    first = rehearsal.snapshots["first"]
    (rest_id,) = first["rest_apis"]
    (ws_id,) = first["websocket_apis"]
    assert first["config_json"] == {
        "apiUrl": f"https://{rest_id}.execute-api.{REGION}.amazonaws.com/api/",
        "websocketUrl": f"wss://{ws_id}.execute-api.{REGION}.amazonaws.com/api/",
    }
    assert first["config_cache"] == "no-cache"
    keys = first["frontend_keys"]
    assert {"index.html", "widget.js", "config.json"} <= set(keys)
    assert not [k for k in keys if k.startswith(("tests/", "demo/"))]  # no tests; demo only with --demo


def test_a_second_run_creates_no_new_api(rehearsal: Rehearsal) -> None:
    first, second = rehearsal.snapshots["first"], rehearsal.snapshots["second"]
    assert (second["rest_apis"], second["websocket_apis"]) == (first["rest_apis"], first["websocket_apis"])
    assert second["config_json"] == first["config_json"]
    assert "stack webim-dev is up to date" in rehearsal.logs[1]  # type: ignore[attr-defined]
    assert "0 object(s) changed" in rehearsal.logs[1]  # type: ignore[attr-defined]


def test_a_fresh_clone_restores_the_state_and_updates_the_same_apis(rehearsal: Rehearsal) -> None:
    first, clone = rehearsal.snapshots["first"], rehearsal.snapshots["clone"]
    assert "deploy state: bucket" in rehearsal.logs[2]  # type: ignore[attr-defined]
    assert (clone["rest_apis"], clone["websocket_apis"]) == (first["rest_apis"], first["websocket_apis"])
    assert set(clone["functions"]) == FUNCTIONS
    assert clone["config_json"] == first["config_json"]


def test_destroy_removes_the_app_and_the_stack(rehearsal: Rehearsal) -> None:
    """All but what docs/deploy.md says a destroy keeps: the tables and the media bucket (and the
    secrets, which the rehearsal's stack has not: WithSecrets=false)."""
    after = dict(rehearsal.after_destroy)  # type: ignore[attr-defined]
    (media,) = after.pop("buckets")
    assert media.startswith(f"webim-{STAGE}-mediabucket-")
    assert after == {"functions": [], "roles": {}, "rest_apis": [], "websocket_apis": [], "stacks": [], "queues": [],
                     "tables": [f"webim-{STAGE}-{name}" for name in ("connections", "members", "messages")]}


def test_a_failed_first_create_keeps_nothing_and_a_plain_deploy_retries_it(rehearsal: Rehearsal) -> None:
    """RetainExceptOnCreate: the rolled-back create leaves no table or bucket behind (with
    `Retain` its tables would block the next CreateStack); the next `make deploy` deletes the
    ROLLBACK_COMPLETE stack itself and creates it, deletion protection switched on after."""
    failed = rehearsal.failed_create  # type: ignore[attr-defined]
    assert "stack webim-dev failed to create: RehearsalFault (AWS::DynamoDB::Table)" in failed["stderr"]
    assert "run `make deploy` again" in failed["stderr"]
    assert failed["stacks"] == [(f"webim-{STAGE}", "ROLLBACK_COMPLETE")]
    assert (failed["tables"], failed["queues"], failed["buckets"]) == ([], [], [])
    first = rehearsal.logs[0]  # type: ignore[attr-defined]
    assert "failed to create earlier (RehearsalFault (AWS::DynamoDB::Table)" in first
    assert "deleting it to create it anew" in first
    # what the earlier template's failed create would have left, empty: removed before CreateStack
    assert f"[orphans] removed table webim-{STAGE}-members (empty), left by an earlier attempt" in first
    assert f"[orphans] removed bucket webim-{STAGE}-mediabucket-earlier1 (empty)" in first
    assert "switching the tables' deletion protection on" in first
    assert rehearsal.snapshots["first"]["stack_status"] == "UPDATE_COMPLETE"  # the protection's update


def test_a_deploy_that_fails_half_way_is_completed_by_the_next(rehearsal: Rehearsal) -> None:
    """A failure after `chalice deploy`, before the steps after it: the lock is released on the
    way out, the keepalive route chalice deleted is missing until the next run, which completes
    (from another clone: the state is in the bucket)."""
    halfway = rehearsal.halfway  # type: ignore[attr-defined]
    assert "a failure injected after chalice deploy" in halfway["stderr"]
    assert halfway["locks"] == []
    assert "keepalive" not in halfway["routes"]
    assert "[keepalive] keepalive route (a mock: no Lambda) installed" in rehearsal.logs[2]  # type: ignore[attr-defined]


def test_one_deploy_of_a_stage_at_a_time(rehearsal: Rehearsal) -> None:
    """Another deployer's lock refuses the deploy before it changes anything, naming the holder;
    once expired it is taken over; the lock is released at the end."""
    refused = rehearsal.refused  # type: ignore[attr-defined]
    assert "stage dev is being deployed by arn:aws:iam::123456789012:user/alice on laptop since" in refused
    assert "[lock] took over the expired lock of arn:aws:iam::123456789012:user/alice on laptop" in \
        rehearsal.logs[2]  # type: ignore[attr-defined]
    assert rehearsal.locks_after == []  # type: ignore[attr-defined]


ROLES = {None: f"webim-{STAGE}-{REGION}-functions", "on_job": f"webim-{STAGE}-{REGION}-on_job"}


def test_a_stage_on_chalices_roles_moves_to_the_deploys(rehearsal: Rehearsal) -> None:
    """A stage deployed while chalice made the roles: the next `make deploy` makes the region's
    roles, chalice moves the functions to them and deletes its own (no longer in the app)."""
    migration = rehearsal.migration  # type: ignore[attr-defined]
    chalices = sorted(name.replace(f"webim-{STAGE}", f"webim-{STAGE}-api_handler")
                      if name == f"webim-{STAGE}" else name for name in FUNCTIONS)
    assert migration["before"]["chalices"] == migration["before"]["functions"] == chalices
    ours = sorted(role.replace(REGION, REGION_3) for role in ROLES.values())
    assert migration["after"] == {"chalices": [], "deploys": ours, "functions": ours}
    assert migration["log"].count("[state] saved to") == 1


def test_the_functions_run_with_the_deploys_roles_carrying_the_stacks_boundary(rehearsal: Rehearsal) -> None:
    """chalice manages no role (its names are account-wide): the deploy makes one per policy file,
    named for the region, created with the stack's RolesBoundary, before `chalice deploy`; a
    second run changes nothing."""
    logs = rehearsal.logs  # type: ignore[attr-defined]
    assert f"[roles] {ROLES[None]} (policy-dev.json): created, policy-dev.json" in logs[0]
    assert f"[roles] {ROLES['on_job']} (policy-dev-jobs.json): created, policy-dev-jobs.json" in logs[0]
    assert f"[roles] {ROLES[None]} (policy-dev.json): as it is" in logs[1]
    for name in ("first", "second", "clone", "after_region_2"):
        snapshot = rehearsal.snapshots[name]
        assert snapshot["roles"] == {role: snapshot["boundary"] for role in ROLES.values()}, name
        assert snapshot["boundary"].startswith(f"arn:aws:iam::{ACCOUNT}:policy/webim-{STAGE}-"), name
        assert snapshot["function_roles"] == {
            function: f"arn:aws:iam::{ACCOUNT}:role/{ROLES['on_job' if function.endswith('-on_job') else None]}"
            for function in FUNCTIONS}, name
    # and chalice made none of its own
    assert not [r for r in rehearsal.client("iam").list_roles()["Roles"]
                if r["RoleName"].startswith(f"webim-{STAGE}-") and not r["RoleName"].startswith(
                    (f"webim-{STAGE}-{REGION}-", f"webim-{STAGE}-{REGION_2}-"))]


def test_one_stage_deploys_in_two_regions_of_one_account(rehearsal: Rehearsal) -> None:
    """The same stage, deployed from the same clone into a second region: its own stack, APIs,
    functions and roles (named for that region); destroyed there, the first region's stage is
    untouched and deploys again without a change to its roles."""
    first, second = rehearsal.snapshots["clone"], rehearsal.snapshots["region_2"]
    logs = rehearsal.logs  # type: ignore[attr-defined]
    deployed, destroyed, again = logs[3], logs[4], logs[5]
    assert "deploy state: none (the local state is of eu-west-1: set aside as dev.eu-west-1.json)" in deployed
    assert set(second["functions"]) == FUNCTIONS
    assert second["queue_arn"].endswith(f":{REGION_2}:{ACCOUNT}:webim-{STAGE}-ack-timeout")
    assert f"execute-api.{REGION_2}." in second["config_json"]["apiUrl"]
    roles_2 = {role.replace(REGION, REGION_2) for role in ROLES.values()}
    assert second["roles"] == dict.fromkeys(roles_2, second["boundary"])
    assert second["boundary"] != first["boundary"]
    for key, document in second["role_policies"].items():
        assert _callbacks(document) == stage_settings.callback_resources(
            second["websocket_apis"][0], "api", REGION_2, ACCOUNT), key
    assert set(second["function_roles"].values()) == {f"arn:aws:iam::{ACCOUNT}:role/{r}" for r in roles_2}
    # the second region destroyed: nothing of it but what a destroy keeps; the first as it was
    assert f"[roles] deleted {', '.join(sorted(roles_2))}" in destroyed
    after_2 = dict(rehearsal.after_region_2)  # type: ignore[attr-defined]
    assert [b.split("-")[2] for b in after_2.pop("buckets")] == ["mediabucket"]
    assert after_2 == {"stacks": [], "queues": [], "tables": [
        f"webim-{STAGE}-{name}" for name in ("connections", "members", "messages")]}
    # chalice's account-wide names shared the roles: this destroy deleted every role of the first
    # region's functions (checked on the code before, docs/deploy.md: Two regions)
    assert rehearsal.region_1_roles == {**first["roles"], **first["function_roles"]}  # type: ignore[attr-defined]
    after = rehearsal.snapshots["after_region_2"]
    for key in ("roles", "role_policies", "function_roles", "functions", "rest_apis", "websocket_apis"):
        assert after[key] == first[key], key
    for role in ROLES.values():
        assert f"[roles] {role} (" in again and f"[roles] {role} (policy-dev" in again
    assert again.count("): as it is") == len(ROLES)


def _callbacks(document: dict[str, Any]) -> list[str]:
    (statement,) = [s for s in document["Statement"] if s.get("Sid") == stage_settings.CALLBACKS_SID]
    return list(statement["Resource"])


def test_the_roles_may_push_to_the_deployed_websocket_api_only(rehearsal: Rehearsal) -> None:
    first = rehearsal.snapshots["first"]
    (websocket_id,) = first["websocket_apis"]
    ours = stage_settings.callback_resources(websocket_id, "api", REGION, ACCOUNT)
    logs = rehearsal.logs  # type: ignore[attr-defined]
    # the first deploy creates the API, scopes the policy files to it, and deploys again
    assert f"scoped to WebSocket API {websocket_id}: policy-dev.json, policy-dev-jobs.json" in logs[0]
    # ... and puts them on the roles it made, in place: one `chalice deploy`
    assert f"[roles] {ROLES[None]} (policy-dev.json): policy-dev.json" in logs[0]
    assert logs[0].count("[state] saved to") == 1
    # the second run finds them scoped: one `chalice deploy`, the same role policies
    assert f"scoped to WebSocket API {websocket_id}: no change" in logs[1]
    assert logs[1].count("[state] saved to") == 1
    # a fresh clone has the committed placeholder: scoped from the restored state before its
    # only deploy, or chalice would put the placeholder back on the roles
    assert f"scoped to WebSocket API {websocket_id}: policy-dev.json, policy-dev-jobs.json" in logs[2]
    assert logs[2].count("[state] saved to") == 1
    for name in ("first", "second", "clone"):
        policies = rehearsal.snapshots[name]["role_policies"]
        # a role per policy file: the stage's, and on_job's own
        assert set(policies) == {f"{role}/{role}" for role in ROLES.values()}, name
        for key, document in policies.items():
            assert _callbacks(document) == ours, (name, key)
        assert policies == first["role_policies"], name


def test_both_api_stages_are_throttled(rehearsal: Rehearsal) -> None:
    limits = stage_settings.throttling_for(STAGE)
    for name in ("first", "second", "clone"):
        every_method = rehearsal.snapshots[name]["rest_stage"]["methodSettings"]["*/*"]
        assert (every_method["throttlingRateLimit"], every_method["throttlingBurstLimit"]) == (
            limits.rest_rate, limits.rest_burst), name
        routes = rehearsal.snapshots[name]["websocket_stage"]["DefaultRouteSettings"]
        assert (routes["ThrottlingRateLimit"], routes["ThrottlingBurstLimit"]) == (
            limits.websocket_rate, limits.websocket_burst), name


def test_the_keepalive_route_is_a_mock_after_every_deploy(rehearsal: Rehearsal) -> None:
    """chalice deletes the WebSocket API's routes on every update: the step after it makes the
    keepalive route (infra/keepalive_route.json) again, exactly one, beside chalice's three."""
    for name in ("first", "second", "clone"):
        assert rehearsal.snapshots[name]["websocket_routes"] == {
            "$connect": "AWS_PROXY", "$default": "AWS_PROXY", "$disconnect": "AWS_PROXY", "keepalive": "MOCK"}, name
    for log in rehearsal.logs[:3]:  # type: ignore[attr-defined]  (the three deploys)
        assert "[keepalive] keepalive route (a mock: no Lambda) installed" in log


# --- the deployer policy, held to what a deploy and a destroy call -------------------------------

POLICY = ROOT / "infra" / "deployer-policy.json"
# A botocore operation -> the IAM actions it needs, where they differ from "<service>:<operation>".
S3_ACTIONS = {"ListObjectsV2": ["s3:ListBucket"], "ListObjectVersions": ["s3:ListBucketVersions"],
              "ListBuckets": ["s3:ListAllMyBuckets"], "HeadObject": ["s3:GetObject"], "HeadBucket": ["s3:ListBucket"],
              "DeleteObjects": ["s3:DeleteObject", "s3:DeleteObjectVersion"]}  # _empty_bucket: versions too
# What CloudFormation's handlers call (resource provider schemas, handlers' permissions, as
# cfn-lint ships them) but not for the properties this template sets: left out of the policy.
NOT_CALLED = {
    "kms:*": "no table, log group, secret or bucket names a customer KMS key",
    "kinesis:*": "no table streams to Kinesis",
    "dynamodb:*kinesisstreamingdestination": "no table streams to Kinesis (the Describe is read, and allowed)",
    "dynamodb:*item": "item reads and writes: ImportSourceSpecification only (no table is imported from S3)",
    "dynamodb:query": "ImportSourceSpecification only",
    "dynamodb:batchwriteitem": "ImportSourceSpecification only",
    "dynamodb:importtable": "ImportSourceSpecification only",
    "dynamodb:describeimport": "ImportSourceSpecification only",
    "s3:getobjectmetadata": "ImportSourceSpecification only",
    "logs:createlogstream": "ImportSourceSpecification's error log only",
    "logs:putlogevents": "ImportSourceSpecification's error log only",
    "logs:describelogstreams": "ImportSourceSpecification's error log only",
    "dynamodb:*tablereplica": "no global table",
    "iam:createservicelinkedrole": "global tables' replication role only",
    "dynamodb:putresourcepolicy": "no ResourcePolicy (the Get is read, and allowed)",
    "dynamodb:deleteresourcepolicy": "no ResourcePolicy",
    "iam:attach*policy": "no role, user or group names a managed policy (RolesBoundary is a boundary, not attached)",
    "iam:detach*policy": "as attach",
    "iam:deleterolepermissionsboundary": "denied: a deployer must not lift the roles' boundary",
    "logs:associatekmskey": "no KmsKeyId", "logs:disassociatekmskey": "no KmsKeyId",
    "logs:createlogdelivery": "no log delivery", "firehose:*": "no log delivery",
    "s3:rest.put.object": "no log delivery",
    "logs:putdataprotectionpolicy": "no data protection policy (its read is allowed)",
    "logs:deletedataprotectionpolicy": "as put", "logs:putindexpolicy": "no index policy (its read is allowed)",
    "logs:deleteindexpolicy": "as put", "logs:putresourcepolicy": "no resource policy (its read is allowed)",
    "logs:deleteresourcepolicy": "as put",
    "logs:putbearertokenauthentication": "not used", "logs:putloggroupdeletionprotection": "not used",
    "s3:putaccelerateconfiguration": "not set", "s3:putanalyticsconfiguration": "not set",
    "s3:putinventoryconfiguration": "not set", "s3:putintelligenttieringconfiguration": "not set",
    "s3:putmetricsconfiguration": "not set", "s3:putreplicationconfiguration": "not set",
    "s3:putbucketobjectlockconfiguration": "no object lock", "s3:putobjectlockconfiguration": "no object lock",
    "s3:putbucketacl": "BucketOwnerEnforced: no ACLs", "s3:putobjectacl": "BucketOwnerEnforced: no ACLs",
    "s3:putbucketlogging": "no access logging", "s3:putbucketnotification": "no notifications",
    "s3:putbucketwebsite": "no website hosting (CloudFront serves the private bucket)",
    "s3:putbucketreplication": "no replication", "s3:putbucketabac": "not used",
    "s3:deletebucket*configuration": "settings never set", "s3:deletebucketreplication": "no replication",
    "s3:deletebucketwebsite": "no website", "s3:*bucketmetadata*": "no S3 metadata tables",
    "s3tables:*": "no S3 metadata tables",
    "secretsmanager:*regions*": "no replica regions",
    "sns:putdataprotectionpolicy": "no data protection policy",
    "cloudfront:*connectiongroup": "no multi-tenant distribution", "cloudfront:getvpcorigin": "no VPC origin",
    "cloudfront:updatedistributionwithstagingconfig": "no continuous deployment",
    "payments:*": "WAF's paid protections only",
    "wafv2:*permissionpolicy": "no Firewall Manager sharing",
    "amplify:*": "the web ACL is associated with an API Gateway stage only", "apprunner:*": "as amplify",
    "appsync:*": "as amplify", "bedrock-agentcore:*": "as amplify", "cognito-idp:*": "as amplify",
    "ec2:*": "as amplify", "elasticloadbalancing:*": "as amplify",
}
# Needed, though neither recorded nor in a handler's list.
ALSO_NEEDED = {
    "iam:passrole": "chalice's CreateFunction passes the role; the stack passes WaitApiRole to API Gateway",
}
# Allowed, though the rehearsal does not call them: the paths it cannot take.
EXTRAS = {
    "cloudfront:createinvalidation": "after a frontend change with CloudFront (the rehearsal: WithCdn=false)",
    "secretsmanager:deletesecret": "clear_orphans force-deletes a secret scheduled for deletion (no secrets in the "
                                   "rehearsal), and the handler's delete",
    "lambda:putfunctionconcurrency": "chalice, for prod's reserved concurrency (the rehearsal deploys dev)",
    "lambda:removepermission": "chalice, when a function loses a trigger",
    "lambda:tagresource": "chalice, when the stage's tags change", "lambda:untagresource": "as tagresource",
    "iam:updateassumerolepolicy": "infra/roles.py, when a function role's trust policy was changed by hand",
    "iam:tagrole": "chalice and the role handler, with tags",
    "dynamodb:untagresource": "the table handler, when tags change",
    "sqs:untagqueue": "the queue handler, when tags change",
}


def _allowed(policy: dict[str, Any]) -> list[str]:
    return [action.lower() for statement in policy["Statement"] if statement["Effect"] == "Allow"
            for action in ([statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"])]


def recorded_iam_actions(lines: list[str]) -> set[str]:
    needed = set()
    for line in lines:
        service, operation, method = line.split()
        if service == "apigateway":  # v1 and v2: API Gateway's IAM actions are the HTTP verbs
            needed.add(f"apigateway:{method}")
        elif service == "s3":
            needed.update(S3_ACTIONS.get(operation, [f"s3:{operation}"]))
        else:
            needed.add(f"{service}:{operation}")
    return {action.lower() for action in needed}


def handler_permissions(template_text: str) -> set[str]:
    """What CloudFormation's handlers (create, read, update, delete) of the template's resource
    types call, less NOT_CALLED."""
    import re

    import cfnlint

    schemas = Path(cfnlint.__file__).parent / "data" / "schemas"
    index = json.loads((schemas / "providers" / "us-east-1.json").read_text())
    needed = set()
    for kind in sorted(set(re.findall(r"Type: (AWS::[A-Za-z0-9:]+)", template_text))):
        handlers = json.loads((schemas / "resources" / f"{index[kind]}.json").read_text()).get("handlers", {})
        for name in ("create", "read", "update", "delete"):
            needed.update(p.lower() for p in handlers.get(name, {}).get("permissions", []))
    return {action for action in needed if not any(fnmatch.fnmatchcase(action, p) for p in NOT_CALLED)}


def policy_gaps(lines: list[str]) -> tuple[list[str], list[str]]:
    """(needed but not allowed, allowed but neither needed nor explained)."""
    allowed = _allowed(json.loads(POLICY.read_text()))
    needed = recorded_iam_actions(lines) | handler_permissions((ROOT / "infra" / "template.yaml").read_text()) | \
        set(ALSO_NEEDED)
    missing = sorted(a for a in needed if not any(fnmatch.fnmatchcase(a, pattern) for pattern in allowed))
    unexplained = sorted(p for p in allowed if p not in EXTRAS and not any(fnmatch.fnmatchcase(a, p) for a in needed))
    return missing, unexplained


def test_the_deployer_policy_is_what_deploy_and_destroy_call(rehearsal: Rehearsal) -> None:
    """Every AWS call of the rehearsal's deploys and destroy (botocore hooks in deploy.py and its
    chalice child), and what CloudFormation's handlers call for the template's resources, is
    allowed; everything allowed is one of them or explained in EXTRAS."""
    missing, unexplained = policy_gaps(rehearsal.actions)  # type: ignore[attr-defined]
    assert (missing, unexplained) == ([], [])
    assert {"cloudformation:createstack", "lambda:createfunction", "iam:createrole", "iam:putrolepolicy",
            "iam:deleterole", "s3:putobject", "lambda:getaccountsettings"} <= recorded_iam_actions(rehearsal.actions)  # type: ignore[attr-defined]


def test_the_deployer_policy_fits_one_managed_policy() -> None:
    """IAM takes 6,144 characters per managed policy, whitespace not counted."""
    assert len(json.dumps(json.loads(POLICY.read_text()), separators=(",", ":"))) <= 6144
